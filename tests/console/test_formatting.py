"""Console number formatting: an estimate never reads as certain."""

from __future__ import annotations

import pytest

from clinical_mlops.console.formatting import pct


@pytest.mark.parametrize(
    ("p", "digits", "shown"),
    [
        (0.333, 1, "33.3 %"),
        (0.99949, 1, "99.9 %"),
        (0.99996, 1, ">99.9 %"),
        (0.00004, 1, "<0.1 %"),
        (0.996, 0, ">99 %"),
        (0.004, 0, "<1 %"),
        (1.0, 1, "100.0 %"),
        (0.0, 0, "0 %"),
        (None, 1, "—"),
        ("insufficient data", 1, "insufficient data"),
    ],
)
def test_pct_shows_bounds_instead_of_certainty(p: object, digits: int, shown: str) -> None:
    assert pct(p, digits) == shown
