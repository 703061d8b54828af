"""Ledger fixtures: every backend runs the same tests (SQLite always, PostgreSQL too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clinical_mlops.ledger import Ledger
from evidence_helpers import BACKENDS, Stores, make_stores


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Stores:
    return make_stores(backend, tmp_path / "ws", request)


@pytest.fixture
def ledger(stores: Stores) -> Iterator[Ledger]:
    with stores.open(checkpoint_every=100) as opened:
        yield opened


@pytest.fixture
def pseudonym(ledger: Ledger) -> Callable[[str], str]:
    return lambda identifier: ledger.vault.pseudonym_for(identifier)
