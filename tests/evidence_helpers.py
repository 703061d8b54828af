"""Helpers shared by the ledger tests: where a test ledger lives, on either backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.clock import FixedClock
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.privacy.keys import LocalKeyring
from postgres_cluster import create_database

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)

#: an inference payload for ledger tests: its fields are what matters, not their values
INFERENCE = {
    "model_version": "icu-1.0",
    "dataset_sha256": "ab" * 32,
    "inputs": {"hr": 92, "gcs": 14},
    "raw_score": 0.31,
    "probability": 0.27,
    "conformal_set": [0, 1],
    "explanation": {"lactate": 0.12},
    "requester": "ehr:ward-3",
    "purpose": "mortality_risk",
}

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Stores:
    """Where one test's ledger lives: URLs, keys folder, checkpoint log."""

    def __init__(self, root: Path, ledger_url: str, identity_url: str):
        self.root = root
        self.ledger_url = ledger_url
        self.identity_url = identity_url
        self.keys_dir = root / "keys"
        self.log_path = root / "ledger-checkpoints.jsonl"

    def open(self, *, clock: Any = None, **options: Any) -> Ledger:
        return Ledger(
            store=LedgerStore.open(self.ledger_url),
            provider=LocalKeyring(self.keys_dir),
            vault=self.identity_url,
            checkpoint_log=CheckpointLog(self.log_path),
            clock=clock or FixedClock(T0),
            **options,
        )

    def env(self) -> dict[str, str]:
        """Environment that points a workspace (and the CLI) at these stores."""
        return {
            "CLINICAL_MLOPS_LEDGER_URL": self.ledger_url,
            "CLINICAL_MLOPS_IDENTITY_URL": self.identity_url,
        }


def make_stores(backend: str, root: Path, request: pytest.FixtureRequest) -> Stores:
    root.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        return Stores(root, f"sqlite:///{root / 'ledger.db'}", f"sqlite:///{root / 'identity.db'}")
    server = request.getfixturevalue("postgres_server")
    # Databases are not dropped one by one (DROP DATABASE forces a checkpoint, ~2 s):
    # the whole throw-away cluster is deleted at the end of the session.
    ledger_url, identity_url = create_database(server), create_database(server)
    return Stores(root, ledger_url, identity_url)


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < ``n`` on ``n`` threads released at once; return each result.

    A call that raised returns its exception, for the test to assert on.
    """
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = work(i)
        except Exception as exc:  # handed to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
