"""Periodic reviews (overdue alerts) and incidents (contain through the registry, resolve)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.errors import GovernanceError, IncidentStepRefused, RoleRequired
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.incidents import add_step, contain, open_incident, resolve
from clinical_mlops.governance.operations import operations_metrics
from clinical_mlops.governance.reviews import overdue_reviews, record_review, review_status
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from identities import console

CLIN, COMP, ENG = "demo.dr.lena.ortiz", "demo.sam.okafor", "demo.priya.nair"
OK = {"calibration": "ok", "fairness": "ok", "incidents": "none", "documentation": "complete"}


@pytest.fixture
def live(fresh_workspace, trained, clock):
    ws = fresh_workspace("gov")
    version = govern_demo_release(ws, model_version=trained[1], clock=clock)["version"]
    return ws, Governance(Registry.open(ws, clock=clock)), version


def _alerts(ws):
    with Ledger.open(ws) as led:
        return [led.read(s).payload for s in range(led.size()) if led.entry(s).type == "alert"]


def test_review_is_due_quarterly_and_overdue_raises_an_alert(live, clock):
    ws, gov, v = live
    assert review_status(gov, v)["interval_days"] == 90
    clock.advance(timedelta(days=89))
    assert overdue_reviews(gov) == []
    clock.advance(timedelta(days=2))
    due = overdue_reviews(gov)
    assert [d["version"] for d in due] == [v]
    assert _alerts(ws)[-1]["kind"] == "review_overdue"
    with pytest.raises(GovernanceError, match=r"unanswered: \['documentation'\]"):
        record_review(
            gov,
            v,
            reviewer=CLIN,
            checklist={**OK, "documentation": ""},
            outcome="continue",
            identity=console(CLIN),
        )
    with pytest.raises(RoleRequired):
        record_review(gov, v, reviewer=ENG, checklist=OK, outcome="continue", identity=console(ENG))
    record_review(gov, v, reviewer=CLIN, checklist=OK, outcome="continue", identity=console(CLIN))
    assert review_status(gov, v)["overdue"] is False
    assert overdue_reviews(gov) == []


def test_incident_contained_by_suspension_and_resolved_only_after_steps(live):
    ws, gov, v = live
    reg = gov.registry
    roles = {"incident_lead": COMP, "clinical_lead": CLIN, "communications_lead": ENG}
    with pytest.raises(IncidentStepRefused, match="communications_lead"):
        open_incident(
            gov,
            v,
            actor=CLIN,
            summary="x",
            severity="high",
            roles={"incident_lead": COMP},
            identity=console(CLIN),
        )
    inc = open_incident(
        gov,
        v,
        actor=CLIN,
        summary="alerts doubled overnight",
        severity="high",
        roles=roles,
        identity=console(CLIN),
    )
    assert operations_metrics(ws)["open_incidents"] == 1
    with pytest.raises(IncidentStepRefused, match="status open"):
        resolve(gov, inc["id"], actor=COMP, root_cause="?", identity=console(COMP))
    inc = contain(
        gov, inc["id"], actor=CLIN, action="suspend", why="stop alerts", identity=console(CLIN)
    )
    assert inc["status"] == "contained"
    assert reg.get(v).status == "suspended"
    add_step(
        gov,
        inc["id"],
        actor=ENG,
        kind="communication",
        detail="ICU leads emailed",
        identity=console(ENG),
    )
    with pytest.raises(IncidentStepRefused, match="patient_notification"):
        resolve(gov, inc["id"], actor=COMP, root_cause="lab unit change", identity=console(COMP))
    add_step(
        gov,
        inc["id"],
        actor=CLIN,
        kind="patient_notification",
        detail="not required: no alert acted on",
        identity=console(CLIN),
    )
    done = resolve(
        gov, inc["id"], actor=COMP, root_cause="lab unit change upstream", identity=console(COMP)
    )
    assert done["status"] == "resolved"
    assert [s["kind"] for s in done["steps"]] == [
        "opened",
        "contained:suspend",
        "communication",
        "patient_notification",
        "resolved",
    ]
    assert operations_metrics(ws)["open_incidents"] == 0
    assert gov.resume(v, actor=COMP, why="fixed", identity=console(COMP)).status == "approved"
