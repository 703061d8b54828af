"""A complete governed release with named demo people (used by ``clinical-mlops demo``).

Creates (or reuses) four demo people — a compliance officer who grants the roles,
the engineer who builds the bundle (its author), a second engineer, and a
clinician — then: bundle -> register -> gates 1-3 -> validated -> clinically
reviewed -> three approvals by three other people -> approved for limited
rollout with a pilot site -> approved. Every step is a ledger event naming the
person and role.
"""

from __future__ import annotations

from typing import Any

from clinical_mlops.clock import Clock
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import run_gates
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.vocabulary import Role
from clinical_mlops.workspace import Workspace

__all__ = ["DEMO_PEOPLE", "govern_demo_release"]

#: person -> (role, what they do in the demo)
DEMO_PEOPLE: dict[str, tuple[Role, str]] = {
    "demo.sam.okafor": (Role.COMPLIANCE, "grants roles, approves as compliance, promotes"),
    "demo.alex.kim": (
        Role.ENGINEERING,
        "builds and registers the bundle (its author), runs the gates",
    ),
    "demo.priya.nair": (Role.ENGINEERING, "approves as engineering"),
    "demo.dr.lena.ortiz": (Role.CLINICAL, "clinical review, approves as clinical, pilots"),
}
PILOT_SITE = "demo-icu-north"


def govern_demo_release(
    workspace: Workspace, *, model_version: str, clock: Clock | None = None
) -> dict[str, Any]:
    """Return the ``registry show`` view of a release taken from model to ``approved``."""
    comp, author, eng, clin = DEMO_PEOPLE
    with Registry.open(workspace, clock=clock) as reg, Governance(reg) as gov:
        for person, (role, _) in DEMO_PEOPLE.items():
            if role not in gov.roles_of(person):
                gov.grant_roles(person, roles=[role], actor=comp, why="demo team")
        bundle = build_bundle(workspace, model_version=model_version, author=author, clock=clock)
        rel = gov.register(bundle, actor=author, why="demo release")
        v = rel.version
        run_gates(gov, v, actor=author)
        gov.promote(v, actor=author, why="gates 1-3 passed")
        gov.promote(v, actor=clin, why="clinical review of report and model card")
        for person, role in (
            (eng, Role.ENGINEERING),
            (clin, Role.CLINICAL),
            (comp, Role.COMPLIANCE),
        ):
            gov.decide(v, person=person, role=role, decision="approve", why="demo approval")
        gov.promote(v, actor=comp, why="approved for a limited pilot")
        gov.set_rollout(v, site=PILOT_SITE, mode="pilot", actor=clin, why="demo pilot")
        gov.promote(v, actor=comp, why="pilot reviewed; approved")
        return gov.show(v)
