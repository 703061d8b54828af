"""Console number formatting: a measured fraction as it is, an estimate never as certain."""

from __future__ import annotations

import pytest

from clinical_mlops.console.formatting import pct, risk


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (0.333, "33.3 %"),
        (0.99949, "99.9 %"),
        (0.99996, ">99.9 %"),
        (1.0, ">99.9 %"),  # a calibrator may return exactly 1 at its last breakpoint
        (0.00004, "<0.1 %"),
        (0.0, "<0.1 %"),
        (None, "—"),
        ("insufficient data", "insufficient data"),
    ],
)
def test_risk_shows_bounds_instead_of_certainty(p: object, shown: str) -> None:
    assert risk(p) == shown


@pytest.mark.parametrize(
    ("p", "digits", "shown"),
    [(1.0, 1, "100.0 %"), (0.0, 0, "0 %"), (0.99996, 1, "100.0 %"), (None, 1, "—")],
)
def test_pct_shows_a_measured_fraction_as_it_is(p: object, digits: int, shown: str) -> None:
    assert pct(p, digits) == shown
