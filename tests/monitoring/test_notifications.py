"""Alerts that reach a person: e-mail through a live SMTP server, signed webhooks to a live
receiver, retries, dead letters, escalation along the rota, acknowledgement metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from alert_receivers import smtp_server, webhook_receiver

from clinical_mlops.application import monitoring as uc
from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.errors import AlertTransitionInvalid, ValueInvalid
from clinical_mlops.governance.operations import operations_metrics
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore
from clinical_mlops.monitoring.escalation import MONITOR_IDENTITY
from clinical_mlops.workspace import Workspace
from identities import console

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "s3cret-pager-key-0123456789"


def _signal(rule: str = "auroc_degradation", *, severity: str = "critical") -> AlertSignal:
    return AlertSignal(
        rule=rule,
        kind="concept",
        severity=severity,
        owner_role="reviewer",
        action="open_review",
        at=utc_iso(T0),
        summary="live AUROC 0.79 is 6.4 % below the validated 0.847",
        quantity="auroc_degradation",
        value=0.064,
        threshold=0.05,
        release="icu-2026.03",
        model_version="m-1",
    )


def _config(
    ws: Workspace,
    *,
    smtp_port: int | None = None,
    hook_url: str | None = None,
    channels: tuple[str, ...] = ("email",),
    **delivery: Any,
) -> None:
    people = {
        "dr.ortiz": {"email": "ortiz@icu.example.org"},
        "dr.lee": {"email": "lee@icu.example.org"},
        "dr.ngata": {"email": "ngata@icu.example.org"},
    }
    cfg: dict[str, Any] = {
        "people": people,
        "rotas": {
            "icu-oncall": {
                "people": ["dr.ortiz", "dr.lee", "dr.ngata"],
                "period_hours": 168,
                "start": "2026-02-23T08:00:00Z",  # week 2 (from 2026-03-02 08:00): dr.lee
            }
        },
        "default": {"owner": "rota:icu-oncall", "channels": list(channels)},
        "rules": {
            "auroc_degradation": {
                "owner": "rota:icu-oncall",
                "channels": list(channels),
                "escalate_after_minutes": 30,
            }
        },
        "delivery": {"max_attempts": 3, "backoff_seconds": 60, "backoff_cap_seconds": 90}
        | delivery,
    }
    if smtp_port is not None:
        cfg["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "sender": "mlops@icu.example.org"}
    if hook_url is not None:
        cfg["webhooks"] = {"pager": {"url": hook_url, "secret_env": "ICU_PAGER_SECRET"}}
        for p in people.values():
            p["webhook"] = "pager"
    ws.path("alerting").write_text(yaml.safe_dump(cfg), encoding="utf-8")


def _raise(ws: Workspace, clock: FixedClock, **kw: Any) -> str:
    with AlertStore(ws, clock=clock) as store:
        alert, created = store.raise_alert(_signal(**kw), actor="system:monitor")
    assert created and alert is not None
    return alert.id


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def test_an_alert_is_mailed_to_the_person_on_call(ws: Workspace) -> None:
    clock = FixedClock(T0)
    with smtp_server() as (box, port):
        _config(ws, smtp_port=port)
        alert_id = _raise(ws, clock)
        done = uc.notify_alerts(ws, clock=clock)
        again = uc.notify_alerts(ws, clock=clock)
    assert done["delivered"] == 1 and again["delivered"] == 0  # idempotent
    ((rcpts, msg),) = box.messages
    assert rcpts == ["lee@icu.example.org"]  # the rota's second week
    assert "auroc_degradation" in msg["Subject"] and "icu-2026.03" in msg["Subject"]
    body = msg.get_payload()
    assert alert_id in body and "release: icu-2026.03" in body and "sites:" in body
    (d,) = uc.alert_deliveries(ws, alert_id=alert_id)["deliveries"]
    assert (d["recipient"], d["channel"], d["status"], d["attempts"]) == (
        "dr.lee",
        "email",
        "delivered",
        1,
    )


def test_a_webhook_is_signed_retried_after_a_500_then_delivered(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICU_PAGER_SECRET", SECRET)
    clock = FixedClock(T0)
    with webhook_receiver(SECRET.encode()) as (hooks, url):
        hooks.script = [500]
        _config(ws, hook_url=url, channels=("webhook",))
        alert_id = _raise(ws, clock)
        first = uc.notify_alerts(ws, clock=clock)
        early = uc.notify_alerts(ws, clock=clock)  # before the backoff: not retried
        clock.advance(timedelta(seconds=60))
        second = uc.notify_alerts(ws, clock=clock)
    assert (first["failed"], early["failed"] + early["delivered"], second["delivered"]) == (1, 0, 1)
    assert [r["answer"] for r in hooks.received] == [500, 200]
    assert all(r["signature_ok"] for r in hooks.received)
    payload = json.loads(hooks.received[-1]["body"])
    assert payload["alert_id"] == alert_id and payload["rule"] == "auroc_degradation"
    # A receiver holding another secret would refuse it: the signature binds the secret.
    last = hooks.received[-1]
    other = hmac.new(b"other", last["stamp"].encode() + b"." + last["body"], hashlib.sha256)
    assert (
        last["signature"]
        == "sha256="
        + hmac.new(
            SECRET.encode(), last["stamp"].encode() + b"." + last["body"], hashlib.sha256
        ).hexdigest()
        != "sha256=" + other.hexdigest()
    )
    (d,) = uc.alert_deliveries(ws, alert_id=alert_id)["deliveries"]
    assert d["status"] == "delivered" and d["attempts"] == 2
    assert [(a["outcome"], a["reason"]) for a in d["attempt_log"]] == [
        ("failed", "webhook pager: HTTP 500 Internal Server Error"),
        ("delivered", "ok"),
    ]
    # The secret is in no log and no ledger entry.
    with Ledger.open(ws) as led:
        text = json.dumps([led.read(s).payload for s in range(led.size())])
    assert SECRET not in text and SECRET not in json.dumps(d)


def test_a_hanging_receiver_times_out_and_is_dead_lettered_not_delivered(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICU_PAGER_SECRET", SECRET)
    clock = FixedClock(T0)
    with webhook_receiver(SECRET.encode()) as (hooks, url):
        hooks.script = ["hang", "hang", "hang"]
        _config(ws, hook_url=url, channels=("webhook",), timeout_seconds=0.5)
        alert_id = _raise(ws, clock)
        runs = []
        for wait in (0, 60, 90):  # 60 s backoff, then 120 s capped at 90 s
            clock.advance(timedelta(seconds=wait))
            runs.append(uc.notify_alerts(ws, clock=clock))
    assert [r["failed"] for r in runs] == [1, 1, 0] and runs[-1]["dead"] == 1
    assert len(hooks.received) == 3
    out = uc.alert_deliveries(ws, alert_id=alert_id)
    (d,) = out["deliveries"]
    assert d["status"] == "dead" and d["delivered_at"] is None
    assert all("timeout" in a["reason"] for a in d["attempt_log"])
    (dead,) = out["dead_letters"]
    assert dead["alert_id"] == alert_id and dead["attempts"] == 3 and "timeout" in dead["reason"]
    assert not [h for h in uc.show_alert(ws, alert_id)["history"] if h["event"] == "notified"]


def test_a_refused_recipient_is_recorded_as_a_failure(ws: Workspace) -> None:
    clock = FixedClock(T0)
    with smtp_server() as (box, port):
        box.refuse = {"lee@icu.example.org"}
        _config(ws, smtp_port=port)
        alert_id = _raise(ws, clock)
        done = uc.notify_alerts(ws, clock=clock)
    assert done["failed"] == 1 and done["delivered"] == 0 and box.messages == []
    (d,) = uc.alert_deliveries(ws, alert_id=alert_id)["deliveries"]
    assert d["status"] == "pending" and d["delivered_at"] is None
    assert "550" in d["last_reason"] and "lee@icu.example.org" in d["last_reason"]


def test_an_unacknowledged_critical_alert_escalates_to_the_next_person(ws: Workspace) -> None:
    clock = FixedClock(T0)
    with smtp_server() as (box, port):
        _config(ws, smtp_port=port)
        alert_id = _raise(ws, clock)
        uc.notify_alerts(ws, clock=clock)
        clock.advance(timedelta(minutes=29))
        assert uc.notify_alerts(ws, clock=clock)["escalated"] == []
        clock.advance(timedelta(minutes=1))
        up = uc.notify_alerts(ws, clock=clock)
        # A warning never escalates, and an acknowledged alert stops escalating.
        uc.acknowledge_alert(
            ws, alert_id, actor="dr.ngata", identity=console("dr.ngata"), clock=clock
        )
        clock.advance(timedelta(hours=2))
        later = uc.notify_alerts(ws, clock=clock)
    assert up["escalated"] == [{"alert_id": alert_id, "to": "dr.ngata", "step": 1}]
    assert later["escalated"] == []
    assert [m[0] for m in box.messages] == [["lee@icu.example.org"], ["ngata@icu.example.org"]]
    assert box.messages[1][1]["Subject"].startswith("Escalated: ")
    events = [h["event"] for h in uc.show_alert(ws, alert_id)["history"]]
    assert events.count("escalated") == 1 and "acknowledged" in events


def test_acknowledging_is_a_persons_act_recorded_with_its_proof(ws: Workspace) -> None:
    from clinical_mlops.governance.identity import VerifiedIdentity

    clock = FixedClock(T0)
    alert_id = _raise(ws, clock)
    with pytest.raises(AlertTransitionInvalid, match="person's act"):
        uc.acknowledge_alert(
            ws, alert_id, actor="system:monitor", identity=MONITOR_IDENTITY, clock=clock
        )
    who = VerifiedIdentity(person="dr.lee", method="console-password", subject="dr.lee")
    uc.acknowledge_alert(ws, alert_id, actor="user:dr.lee", identity=who, clock=clock)
    with Ledger.open(ws) as led:
        last = led.read(led.size() - 1)
    assert last.entry.actor == "user:dr.lee" and last.payload["event"] == "acknowledged"
    assert last.payload["identity"] == who.to_json()


def test_a_malformed_routing_names_the_field(ws: Workspace) -> None:
    ws.path("alerting").write_text(
        "people: {a: {email: a@x.org}}\nrules: {auroc_degradation: {owner: rota:nobody}}\n"
    )
    with pytest.raises(ValueInvalid, match=r"rules.auroc_degradation.owner: no rota 'nobody'"):
        _raise(ws, FixedClock(T0))
    with AlertStore(ws) as store:
        assert store.list() == []  # the alert is not half-written without its outbox


def test_time_to_acknowledge_and_to_triage_join_the_operations_metrics(ws: Workspace) -> None:
    clock = FixedClock(T0)
    ids = []
    for rule in ("auroc_degradation", "calibration", "fairness_gap"):
        ids.append(_raise(ws, clock, rule=rule, severity="critical"))
        clock.advance(timedelta(minutes=1))
    # Opened at 0, 1 and 2 minutes; acknowledged at 10, 31 and never; triaged at 40 (a
    # resolution) and 61 (a resolution without acknowledgement).
    clock.set(T0 + timedelta(minutes=10))
    uc.acknowledge_alert(ws, ids[0], actor="dr.lee", identity=console("dr.lee"), clock=clock)
    clock.set(T0 + timedelta(minutes=31))
    uc.acknowledge_alert(ws, ids[1], actor="dr.ortiz", identity=console("dr.ortiz"), clock=clock)
    clock.set(T0 + timedelta(minutes=40))
    uc.resolve_alert(ws, ids[0], actor="dr.lee", comment="assay recalibrated", clock=clock)
    clock.set(T0 + timedelta(minutes=62))
    uc.resolve_alert(ws, ids[2], actor="dr.ortiz", comment="subgroup too small", clock=clock)
    m = operations_metrics(ws)
    ack = m["time_to_acknowledge_minutes"]["critical"]
    # By hand: 10 - 0 = 10, 31 - 1 = 30; median 20, nearest-rank p90 the larger, 30.
    assert (ack["n"], ack["median"], ack["p90"], ack["waiting"]) == (2, 20.0, 30.0, 1)
    tri = m["time_to_triage_minutes"]["all"]
    # 40 - 0 = 40, 62 - 2 = 60; the second alert is acknowledged but not triaged.
    assert (tri["n"], tri["median"], tri["p90"], tri["waiting"]) == (2, 50.0, 60.0, 1)
