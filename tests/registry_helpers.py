"""Fixtures shared by the registry and governance tests: one small trained model per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinical_mlops.application.training import train_model
from clinical_mlops.clock import FixedClock
from clinical_mlops.data.raw import read_source
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.modeling.train import TrainingConfig
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import EscalationPolicy
from clinical_mlops.workspace import Workspace
from postgres_cluster import create_database

FAST = TrainingConfig(
    seed=5, search_iterations=2, n_boot=200, candidates=("logistic_regression", "xgboost")
)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: a release policy that queues every unsure prediction (the small test model is often
#: unsure): worlds that exercise the review queue need many cases to review
REVIEW_UNSURE = EscalationPolicy(
    review_on=("out_of_scope", "empty_set", "ambiguous_set"),
    max_reviews_per_100=100,
    beyond_budget="queue",
)


@pytest.fixture(scope="session")
def trained(small_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(workspace root, model version) of one small trained model, made once per session."""
    ws = Workspace.open(tmp_path_factory.mktemp("trained"))
    snap = build_snapshot(ws, load_task("icu_mortality_48h"), read_source(small_source_dir))
    result = train_model(ws, snap, config=FAST)
    return ws.root, result.model_version


@pytest.fixture
def fresh_workspace(trained: tuple[Path, str], tmp_path: Path) -> Callable[[str], Workspace]:
    """Return a factory of empty workspaces holding a copy of the trained model and snapshot."""

    def make(name: str) -> Workspace:
        ws = Workspace.open(tmp_path / name)
        shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
        return ws

    return make


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def meta_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the registry and ledger on SQLite, then on PostgreSQL."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        for store in ("META", "LEDGER", "IDENTITY"):
            monkeypatch.setenv(f"CLINICAL_MLOPS_{store}_URL", create_database(server))
    return str(request.param)
