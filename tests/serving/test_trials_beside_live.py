"""Silent and shadow beside the live release, through the surfaces that existed before trials."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trial_world import CLIN, SITE, consent, copy_of, limited_release, requests, world  # noqa: F401

from clinical_mlops.governance.board import Governance
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import Predictor
from clinical_mlops.workspace import Workspace
from identities import console


def test_silent_rollout_of_a_candidate_keeps_the_live_release_answering(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    tw = copy_of(world, "trial", tmp_path)
    with Registry.open(tw) as reg, Governance(reg) as gov:
        gov.set_rollout(
            world["candidate"],
            site=SITE,
            mode="silent",
            actor=CLIN,
            identity=console(CLIN),
            why="trial",
        )
        assert (
            reg.deployment_manifest("icu_mortality_48h")["sites"]["*"]["release"] == world["live"]
        )
    with Predictor.open(tw, site=SITE) as p:
        res = p.predict(requests(world, 1, prefix="beside")[0], requester="ehr")
        kinds = [v.entry.type for v in p.ledger.read_from(res.audit_seq)]
    assert res.status == "scored" and res.release == world["live"] and res.probability is not None
    assert kinds[0] == "inference" and kinds[-1] == "trial_inference"


def test_a_first_release_runs_silent_before_any_approval(
    trained: tuple[Path, str],
    tmp_path: Path,
    world: dict[str, Any],  # noqa: F811
) -> None:
    ws = Workspace.open(tmp_path / "first")
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    consent(ws, 10)
    first = limited_release(ws, trained[1], threshold=0.30)
    with Registry.open(ws) as reg, Governance(reg) as gov:
        gov.set_rollout(
            first, site=SITE, mode="silent", actor=CLIN, identity=console(CLIN), why="first silent"
        )
    with Predictor.open(ws, site=SITE) as p:
        res = p.predict(requests(world, 1, prefix="first")[0], requester="ehr")
        payload = p.ledger.read(res.audit_seq).payload
    assert res.status == "shadow" and res.mode == "silent" and res.probability is None
    assert payload["release"] == first and payload["shown_to_clinician"] is False
