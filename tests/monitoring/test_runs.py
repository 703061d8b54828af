"""Monitor runs over a real workspace: ledger records in, alerts, actions and gauges out."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from monitoring_world import requests_for

from clinical_mlops.application.governance import decide_case
from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.oversight import record_outcome
from clinical_mlops.governance.reviews import record_review
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore, get_alert, list_alerts
from clinical_mlops.monitoring.escalation import (
    MONITOR_ACTOR,
    review_items,
    take_action,
)
from clinical_mlops.monitoring.gauges import PREFIX, MonitoringCollector
from clinical_mlops.monitoring.runs import run_monitor, stored_windows
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace
from identities import console

# After every entry the session's served workspace holds: the ledger refuses a clock behind it.
T0 = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def monitored(governed: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the governed workspace, so suspensions here touch no other test."""
    root = tmp_path / "ws"
    shutil.copytree(governed["ws"].root, root)
    return {"ws": Workspace.open(root), "release": governed["release"], "rows": governed["rows"]}


def _entries(ws: Workspace, kind: str) -> list[tuple[Any, dict[str, Any]]]:
    import sqlalchemy as sa

    from clinical_mlops.ledger.store import entries

    with Ledger.open(ws) as led:
        with led.store.engine.connect() as conn:
            seqs = conn.execute(
                sa.select(entries.c.seq).where(entries.c.type == kind).order_by(entries.c.seq)
            ).scalars()
            wanted = [int(s) for s in seqs]
        return [(v.entry, v.payload) for v in map(led.read, wanted)]


def _serve(ws: Workspace, rows: list[dict[str, Any]], *, shift_after: int) -> list[Any]:
    """Score 20 batches of 25 stays, one batch every 15 minutes; later ones ventilated."""
    clock = FixedClock(T0)
    results = []
    with Predictor.open(ws, clock=clock, status_ttl=0) as p:
        for b in range(20):
            batch = requests_for(
                rows, range(b * 25, b * 25 + 25), ventilated=b >= shift_after, prefix="mon"
            )
            results += p.predict_many(batch, requester="system:ehr")
            clock.advance(timedelta(minutes=15))
    return results


def test_a_run_over_the_ledger_alerts_escalates_and_is_idempotent(
    monitored: dict[str, Any],
) -> None:
    ws, release = monitored["ws"], monitored["release"]
    results = _serve(ws, monitored["rows"], shift_after=10)
    scored = [r for r in results if r.status == "scored"]
    assert len(scored) == 500
    end = T0 + timedelta(hours=5, minutes=15)
    with Ledger.open(ws, clock=FixedClock(end)) as led:
        record_outcome(led, prediction_seqs=[scored[0].audit_seq], outcome=1, actor="system:lab")
        decide_case(led, scored[1].audit_seq, action="override", actor="user:dr.kim")
    summary = run_monitor(ws, until=end, clock=FixedClock(end))
    (rel,) = summary["releases"]
    assert rel["release"] == release and rel["records"] == 500
    alerts = list_alerts(ws)
    by_rule = {(a.rule, a.subgroup) for a in alerts}
    assert ("input_psi", "ventilation") in by_rule
    assert all(a.kind == "data" for a in alerts if a.subgroup == "ventilation")
    assert set(rel["alerts_opened"]) == {a.id for a in alerts}
    # Windows are stored and hold what the monitor saw.
    windows = stored_windows(ws, release)
    assert len(windows) == rel["windows_stored"] > 0
    assert windows[-1].quantities["psi:ventilation"] > 0.2
    # The escalation routed the shown cases of the look-back to human review, once.
    esc = _entries(ws, "escalation")
    monitor_esc = [(e, p) for e, p in esc if e.actor == MONITOR_ACTOR]
    scopes = [p["scope"] for _, p in monitor_esc]
    assert scopes.count("release") == sum(1 for a in alerts if a.action == "escalate")
    cases = [p["prediction_seq"] for _, p in monitor_esc if p["scope"] == "case"]
    assert len(cases) == len(set(cases)) > 0
    assert all(
        e.subject and e.subject.startswith("psn_") for e, p in monitor_esc if p["scope"] == "case"
    )
    assert set(cases) <= {r.audit_seq for r in scored}
    # Every opened alert is an alert ledger event.
    opened = [p for _, p in _entries(ws, "alert") if p.get("event") == "opened"]
    assert {p["alert_id"] for p in opened} == {a.id for a in alerts}
    # Again over the same period: nothing new, nothing counted twice.
    before = {a.id: a.occurrences for a in list_alerts(ws)}
    again = run_monitor(ws, until=end, clock=FixedClock(end))
    assert again["releases"][0]["alerts_opened"] == []
    assert {a.id: a.occurrences for a in list_alerts(ws)} == before
    assert len(_entries(ws, "escalation")) == len(esc)
    # While the escalate-alerts stay open, the next run routes the newer cases, and only those.
    later = end + timedelta(minutes=1)
    with Predictor.open(ws, clock=FixedClock(later), status_ttl=0) as p:
        fresh = p.predict_many(
            requests_for(monitored["rows"], range(500, 510), ventilated=True, prefix="mon"),
            requester="system:ehr",
        )
    third = run_monitor(ws, until=end + timedelta(minutes=15), clock=FixedClock(later))
    routed = [
        p["prediction_seq"]
        for e, p in _entries(ws, "escalation")[len(esc) :]
        if e.actor == MONITOR_ACTOR and p["scope"] == "case"
    ]
    assert sorted(routed) == sorted(r.audit_seq for r in fresh)
    assert third["releases"][0]["actions"][-1]["detail"]["cases"] == 10
    # The gauges show the newest stored window.
    windows = stored_windows(ws, release)
    samples = MonitoringCollector(ws).samples()
    psi = [
        v
        for name, labels, v in samples
        if name == PREFIX + "psi" and labels == {"release": release, "input": "ventilation"}
    ]
    assert psi == [pytest.approx(windows[-1].quantities["psi:ventilation"])]
    assert any(
        name == PREFIX + "alerts" and labels["status"] == "open" for name, labels, _ in samples
    )


def _signal(release: str, rule: str, action: str, at: datetime) -> AlertSignal:
    return AlertSignal(
        rule=rule,
        kind="concept",
        severity="critical",
        owner_role="reviewer",
        action=action,
        at=utc_iso(at),
        summary="live AUROC 0.79 is 6.4 % below the validated 0.847",
        quantity="auroc_degradation",
        value=0.064,
        threshold=0.05,
        release=release,
        model_version="m",
    )


def test_a_critical_alert_suspends_by_default_under_the_monitors_provisioned_identity(
    monitored: dict[str, Any],
) -> None:
    ws, release = monitored["ws"], monitored["release"]
    clock = FixedClock(T0)
    with AlertStore(ws, clock=clock) as store:
        alert, created = store.raise_alert(
            _signal(release, "auroc_degradation", "suspend", T0), actor=MONITOR_ACTOR
        )
        assert created and alert is not None
        done = take_action(store, alert)
    assert done.done and done.detail["status"] == "suspended"
    with Registry.open(ws) as reg, Governance(reg) as gov:
        assert reg.get(release).status == "suspended"
        assert gov.roles_of(MONITOR_ACTOR) == {"engineering"}
    (grant,) = [(e, p) for e, p in _entries(ws, "role_granted") if p["person"] == MONITOR_ACTOR]
    assert grant[0].actor == MONITOR_ACTOR and alert.id in grant[1]["why"]
    assert grant[1]["identity"] == {
        "person": MONITOR_ACTOR,
        "method": "service",
        "subject": "clinical-mlops-monitor",
    }
    events = [h["event"] for h in get_alert(ws, alert.id).history]
    assert events.index("monitor_provisioned") < events.index("suspended")


def test_suspension_needs_a_role_then_the_service_falls_back(monitored: dict[str, Any]) -> None:
    ws, release = monitored["ws"], monitored["release"]
    clock = FixedClock(T0)
    # A board that turned automatic suspension off grants the monitor its role itself.
    ws.path("alerting").write_text("auto_suspend: false\n", encoding="utf-8")
    with AlertStore(ws, clock=clock) as store:
        alert, created = store.raise_alert(
            _signal(release, "auroc_degradation", "suspend", T0), actor=MONITOR_ACTOR
        )
        assert created and alert is not None
        refused = take_action(store, alert)
    assert not refused.done and "system:monitor" in refused.detail["reason"]
    assert get_alert(ws, alert.id).history[-1]["event"] == "suspension_refused"
    assert any(
        p["action"].startswith("transition to suspended")
        for _, p in _entries(ws, "governance_refused")
    )
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        assert reg.get(release).status == "approved"
        gov.grant_roles(
            MONITOR_ACTOR,
            roles=["engineering"],
            actor="demo.sam.okafor",
            why="automatic suspension",
        )
    with AlertStore(ws, clock=clock) as store:
        done = take_action(store, store.get(alert.id))
    assert done.done
    with Registry.open(ws) as reg, Governance(reg) as gov:
        assert reg.get(release).status == "suspended"
        (last,) = [h for h in reg.history(release) if h["to"] == "suspended"]
        assert alert.id in last["why"]
    with Predictor.open(ws, clock=FixedClock(T0 + timedelta(minutes=1)), status_ttl=0) as p:
        res = p.predict(
            PredictionRequest(
                subject_id="MRN-1",
                purpose="direct_care",
                setting="icu",
                features=monitored["rows"][0],
            ),
            requester="system:ehr",
        )
    assert res.status == "fallback" and res.flags == ["suspended"]


def test_open_review_creates_a_pending_item_until_a_review_is_recorded(
    monitored: dict[str, Any],
) -> None:
    ws, release = monitored["ws"], monitored["release"]
    clock = FixedClock(T0)
    with AlertStore(ws, clock=clock) as store:
        alert, _ = store.raise_alert(
            _signal(release, "calibration", "open_review", T0), actor=MONITOR_ACTOR
        )
        assert alert is not None
        result = take_action(store, alert)
    assert result.done
    (item,) = review_items(ws, release=release, pending_only=True)
    assert item["alert_id"] == alert.id and item["id"] == result.detail["review_item"]
    requested = [p for _, p in _entries(ws, "alert") if p["kind"] == "review_requested"]
    assert [p["review_item"] for p in requested] == [item["id"]]
    with (
        Registry.open(ws, clock=FixedClock(T0 + timedelta(hours=1))) as reg,
        Governance(reg) as gov,
    ):
        record_review(
            gov,
            release,
            reviewer="demo.dr.lena.ortiz",
            checklist={k: "ok" for k in ("calibration", "fairness", "incidents", "documentation")},
            outcome="continue",
            identity=console("demo.dr.lena.ortiz"),
        )
    assert review_items(ws, release=release, pending_only=True) == []
    assert review_items(ws, release=release)[0]["pending"] is False
