"""Replay a model's validation from stored artifacts alone (SPEC R-A2).

Loads the model folder (JSON artifacts only), checks every artifact against the
hashes in its lineage, re-opens the snapshot named in the lineage (verifying its
files), re-scores the test stays and recomputes the validation report. The
replay is *identical* when the recomputed report equals the stored one byte for
byte — the evidence that a past result can be reproduced from what was kept.
"""

from __future__ import annotations

import json
from typing import Any

from clinical_mlops.data.snapshot import open_snapshot
from clinical_mlops.errors import WorkspaceError
from clinical_mlops.hashing import canonical_json
from clinical_mlops.modeling.train import evaluation_input, locked_test_stays
from clinical_mlops.modeling.trained import TrainedModel, model_folder
from clinical_mlops.workspace import Workspace

__all__ = ["replay_evaluation"]


def replay_evaluation(workspace: Workspace, version: str) -> dict[str, Any]:
    """Return {model_version, identical, artifacts_verified, test} after replaying the validation."""
    from clinical_mlops.evaluation.report import evaluate

    folder = model_folder(workspace, version)
    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    model = TrainedModel.load(folder)
    hashes = model.artifact_hashes()
    bad = sorted(k for k, v in lineage["artifacts"].items() if hashes.get(k) != v)
    if bad:
        raise WorkspaceError(
            f"model {folder.name}: artifact(s) {', '.join(bad)} do not match their lineage hashes"
        )
    snapshot = open_snapshot(workspace, lineage["snapshot"]["id"])
    selection = lineage["selection"]
    inp = evaluation_input(
        model=model,
        snapshot=snapshot,
        test=locked_test_stays(snapshot),
        selected_model=selection["selected_model"],
        hyperparameters=selection["hyperparameters"],
        cv=selection["cv"],
        lineage=lineage,
        seed=int(lineage["seed"]),
    )
    report = evaluate(inp, n_boot=int(lineage["training"]["config"]["n_boot"]))
    stored = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return {
        "model_version": folder.name,
        "identical": canonical_json(report.to_json()) == canonical_json(stored),
        "artifacts_verified": True,
        "test": report.test.to_json(),
    }
