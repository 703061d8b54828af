"""Serving fixtures: one governed, approved release per session with consented patients."""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.workspace import Workspace
from registry_helpers import REVIEW_UNSURE, trained  # noqa: F401

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient  # noqa: F401

N_PATIENTS = 120


def rows_of(ws: Workspace, snapshot_id: str) -> list[dict[str, Any]]:
    """Return the locked test stays as request feature dicts (None where missing)."""
    from clinical_mlops.tasks import load_task

    names = list(load_task("icu_mortality_48h").feature_names)
    test = locked_test_stays(open_snapshot(ws, snapshot_id))
    out = []
    for rec in test[names].to_dict(orient="records"):
        out.append(
            {
                k: (None if v != v else (v.item() if hasattr(v, "item") else v))
                for k, v in rec.items()
            }
        )
    return out


@pytest.fixture(scope="session")
def served(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """Workspace with an approved release (full at every site, pilot at demo-icu-north).

    The release queues every unsure prediction for review (``REVIEW_UNSURE``), so the
    queue's tests have cases to work with.
    """
    root = tmp_path_factory.mktemp("served")
    ws = Workspace.open(root)
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(ws, model_version=trained[1], escalation=REVIEW_UNSURE)
    with Ledger.open(ws) as led:
        for i in range(N_PATIENTS):
            psn = led.vault.pseudonym_for(f"MRN-{i}")
            record_consent(
                led.vault,
                pseudonym=psn,
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
        psn = led.vault.pseudonym_for("MRN-NOCONSENT")
        record_consent(
            led.vault,
            pseudonym=psn,
            purposes=["quality_improvement"],
            valid_from=datetime(2020, 1, 1, tzinfo=UTC),
            valid_until=None,
            recorded_by="test",
        )
    snapshot_id = shown["lineage"]["snapshot"]["id"]
    return {"ws": ws, "release": shown["version"], "rows": rows_of(ws, snapshot_id)}
