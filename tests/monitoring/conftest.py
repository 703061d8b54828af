"""Monitoring fixtures: the small trained model's test stays scored once per session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from monitoring_world import score_now

from clinical_mlops.monitoring.scenarios import ScoredStays, scored_test_stays
from clinical_mlops.workspace import Workspace
from registry_helpers import REVIEW_UNSURE, meta_backend, trained  # noqa: F401


@pytest.fixture(scope="session")
def scored(trained: tuple[Path, str]) -> ScoredStays:  # noqa: F811
    """The locked test stays of the session's small model, scored once."""
    return scored_test_stays(Workspace.open(trained[0]), model_version=trained[1])


@pytest.fixture(scope="session")
def governed(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """A workspace with an approved release and 120 consenting patients (copied per test)."""
    from datetime import UTC, datetime

    from clinical_mlops.application.walkthrough import govern_demo_release
    from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.privacy.consent import record_consent
    from clinical_mlops.tasks import load_task

    ws = Workspace.open(tmp_path_factory.mktemp("governed"))
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    # Queue every unsure case, so the small test model gives the monitor a review workload.
    shown = govern_demo_release(ws, model_version=trained[1], escalation=REVIEW_UNSURE)
    with Ledger.open(ws) as led:
        for i in range(120):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(f"MRN-{i}"),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
    names = list(load_task("icu_mortality_48h").feature_names)
    test = locked_test_stays(open_snapshot(ws, shown["lineage"]["snapshot"]["id"]))
    rows = [
        {k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in test[names].to_dict(orient="records")
    ]
    return {"ws": ws, "release": shown["version"], "rows": rows}


@pytest.fixture
def live(governed: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the governed workspace with 300 stays scored now (half ventilated)."""
    root = tmp_path / "live"
    shutil.copytree(governed["ws"].root, root)
    ws = Workspace.open(root)
    results = score_now(ws, governed["rows"])
    return {"ws": ws, "release": governed["release"], "results": results}
