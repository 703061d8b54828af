"""Privacy fixtures: ledgers on both backends, as in tests/ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence_helpers import BACKENDS, Stores, make_stores


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return make_stores(str(request.param), tmp_path / "ws", request)
