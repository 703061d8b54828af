"""A live release and a candidate approved for limited rollout, for the trial tests."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.application.governance import acknowledge_risk, release_risks
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import run_gates
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import EscalationPolicy
from clinical_mlops.vocabulary import Role
from clinical_mlops.workspace import Workspace
from identities import console
from registry_helpers import REVIEW_UNSURE

ENG, CLIN, COMP, AUTHOR = (
    "demo.priya.nair",
    "demo.dr.lena.ortiz",
    "demo.sam.okafor",
    "demo.alex.kim",
)
SITE = "demo-icu-south"
N_STAYS = 400
#: the candidate: the same model at a lower threshold, reviewing only out-of-scope cases
CANDIDATE_POLICY = EscalationPolicy(
    review_on=("out_of_scope",), max_reviews_per_100=20, beyond_budget="defer"
)


def limited_release(ws: Workspace, model_version: str, *, threshold: float) -> str:
    """Return a release of the model at ``threshold`` taken to approved_limited."""
    with Registry.open(ws) as reg, Governance(reg) as gov:
        for person, role in (
            (COMP, Role.COMPLIANCE),
            (AUTHOR, Role.ENGINEERING),
            (ENG, Role.ENGINEERING),
            (CLIN, Role.CLINICAL),
        ):
            if role not in gov.roles_of(person):
                gov.grant_roles(person, roles=[role], actor=COMP, why="team")
        bundle = build_bundle(
            ws,
            model_version=model_version,
            author=AUTHOR,
            threshold=threshold,
            escalation=CANDIDATE_POLICY,
        )
        v = gov.register(bundle, actor=AUTHOR, why="candidate").version
        for risk in release_risks(gov, v):
            if risk["acknowledgement"] is None:
                acknowledge_risk(
                    gov,
                    v,
                    risk=risk["id"],
                    actor=CLIN,
                    reason="trial evidence",
                    identity=console(CLIN),
                )
        run_gates(gov, v, actor=AUTHOR)
        gov.promote(v, actor=AUTHOR, why="gates passed", identity=console(AUTHOR))
        gov.promote(v, actor=CLIN, why="clinical review", identity=console(CLIN))
        for person, role in (
            (ENG, Role.ENGINEERING),
            (CLIN, Role.CLINICAL),
            (COMP, Role.COMPLIANCE),
        ):
            gov.decide(
                v,
                person=person,
                role=role,
                decision="approve",
                why="for a trial",
                identity=console(person),
            )
        gov.promote(v, actor=COMP, why="approved for a limited trial", identity=console(COMP))
        return v


def consent(ws: Workspace, n: int = 120) -> None:
    with Ledger.open(ws) as led:
        for i in range(n):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(f"MRN-{i}"),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )


def stays(ws: Workspace, snapshot_id: str) -> tuple[list[dict[str, Any]], list[int]]:
    spec = load_task("icu_mortality_48h")
    test = locked_test_stays(open_snapshot(ws, snapshot_id))
    rows = [
        {k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in test[list(spec.feature_names)].to_dict(orient="records")
    ]
    return rows, [int(v) for v in test[spec.label.name]]


@pytest.fixture(scope="module")
def world(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two copies of one workspace: a live release, and in one of them a candidate in trial.

    ``plain`` holds only the live release (approved, full everywhere); ``trial`` holds
    the same live release and a candidate (the same model at threshold 0.30 under its
    own policy), approved for limited rollout, with no trial started yet.
    """
    root = tmp_path_factory.mktemp("trial-world")
    plain = Workspace.open(root / "plain")
    shutil.copytree(trained[0] / "artifacts", plain.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(plain, model_version=trained[1], escalation=REVIEW_UNSURE)
    consent(plain)
    shutil.copytree(plain.root, root / "trial")
    tw = Workspace.open(root / "trial")
    candidate = limited_release(tw, trained[1], threshold=0.30)
    rows, labels = stays(plain, shown["lineage"]["snapshot"]["id"])
    return {
        "plain": plain.root,
        "trial": tw.root,
        "live": shown["version"],
        "candidate": candidate,
        "rows": rows,
        "labels": labels,
        "model_version": trained[1],
    }


def copy_of(world: dict[str, Any], which: str, tmp_path: Path) -> Workspace:
    shutil.copytree(world[which], tmp_path / which)
    return Workspace.open(tmp_path / which)


def requests(
    world: dict[str, Any], n: int, *, prefix: str, site: str = SITE
) -> list[PredictionRequest]:
    return [
        PredictionRequest(
            subject_id=f"MRN-{i % 120}",
            purpose="direct_care",
            setting="icu",
            features=world["rows"][i % len(world["rows"])],
            request_id=f"{prefix}-{i}",
            site=site,
            hours_since_admission=30.0,
        )
        for i in range(n)
    ]
