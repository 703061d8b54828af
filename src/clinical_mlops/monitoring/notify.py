"""Delivering alert notifications to people: signed webhooks and e-mail, retried, dead-lettered.

The outbox (``mon_deliveries``) is filled when an alert opens, in the alert's own
transaction (:func:`~clinical_mlops.monitoring.alerts.enqueue`); :func:`deliver_pending`
sends what is due, after. Every attempt is a row of ``mon_delivery_attempts`` with its
outcome and reason. A notification is ``delivered`` only when the webhook receiver
answered 2xx or the SMTP server accepted the message for its recipient; otherwise it
waits ``backoff_seconds * 2**(attempts-1)`` (capped at ``backoff_cap_seconds``) and is
tried again, and after ``max_attempts`` it is moved to ``mon_dead_letters`` with the
last reason. Each request has a timeout, so a receiver that hangs costs one timeout per
attempt and cannot stall monitoring.

Webhook signature (for receivers): the POST body is JSON; the request carries
``X-Clinical-MLOps-Timestamp`` (Unix seconds) and ``X-Clinical-MLOps-Signature:
sha256=<hex>``, the HMAC-SHA256 with the endpoint's shared secret over
``<timestamp>.<body bytes>``. A receiver recomputes it, compares in constant time and
refuses a timestamp more than a few minutes old (a replay). See docs/OPERATIONS.md.

:func:`escalate_overdue` tells the next person of the rota about a critical alert nobody
acknowledged within the rule's ``escalate_after_minutes`` (an ``escalated`` event on the
alert and in the ledger), and so on along the rota.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.monitoring import schema as t
from clinical_mlops.monitoring.alerts import Alert, AlertStore, enqueue
from clinical_mlops.monitoring.escalation import MONITOR_ACTOR
from clinical_mlops.monitoring.routing import AlertingConfig, webhook_secret

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "dead_letters",
    "deliver_pending",
    "deliveries",
    "escalate_overdue",
    "notify",
    "sign",
]

SIGNATURE_HEADER = "X-Clinical-MLOps-Signature"
TIMESTAMP_HEADER = "X-Clinical-MLOps-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the signature header value: ``sha256=`` and the HMAC over ``timestamp.body``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _sites(store: AlertStore, alert: Alert) -> list[str]:
    """Return the sites where the alert's release is served (from the deployment manifest)."""
    from clinical_mlops.errors import ReleaseNotFound
    from clinical_mlops.registry.registry import Registry

    if not alert.release:
        return []
    with Registry.open(store.workspace, clock=store.clock) as reg:
        try:
            manifest = reg.deployment_manifest(reg.get(alert.release).task)
        except ReleaseNotFound:
            return []
    return sorted(s for s, v in manifest["sites"].items() if v["release"] == alert.release)


def _message(alert: Alert, *, sites: list[str], step: int) -> dict[str, Any]:
    """Return what a person is told: the rule, release, sites and what to do next."""
    where = ", ".join(sites) or "no site recorded"
    head = "Escalated: " if step else ""
    subject = (
        f"{head}[{alert.severity.upper()}] {alert.rule} on {alert.release or 'no release'} "
        f"(alert {alert.id})"
    )
    body = (
        f"Monitoring alert {alert.id}\n"
        f"rule: {alert.rule} ({alert.kind}, {alert.severity})\n"
        f"release: {alert.release or '-'} (model {alert.model_version or '-'})\n"
        f"sites: {where}\n"
        f"action taken: {alert.action}\n"
        f"opened: {alert.opened_at}\n\n"
        f"{alert.summary}\n\n"
        "Acknowledge it in the console (Alerts) or with "
        f"`clinical-mlops monitor alerts --acknowledge {alert.id}`."
    )
    if step:
        body += f"\n\nNobody acknowledged it in time; you are person {step + 1} of the rota."
    return {
        "alert_id": alert.id,
        "rule": alert.rule,
        "kind": alert.kind,
        "severity": alert.severity,
        "release": alert.release,
        "model_version": alert.model_version,
        "sites": sites,
        "action": alert.action,
        "opened_at": alert.opened_at,
        "summary": alert.summary,
        "escalation_step": step,
        "subject": subject,
        "text": body,
    }


def _post(cfg: AlertingConfig, target: str, message: dict[str, Any], now: datetime) -> None:
    """Send one signed webhook; any answer but 2xx (or no answer in time) raises with why."""
    hook = cfg.webhooks[target]
    body = json.dumps(message, sort_keys=True).encode("utf-8")
    stamp = str(int(now.timestamp()))
    # The URL's scheme is http(s) by the config's validation (routing.Webhook.url).
    request = urllib.request.Request(  # noqa: S310
        hook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(webhook_secret(hook), stamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=cfg.delivery.timeout_seconds) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise _Failed(f"webhook {target}: HTTP {exc.code} {exc.reason}") from None
    except TimeoutError:
        raise _Failed(
            f"webhook {target}: no answer within {cfg.delivery.timeout_seconds:g} s (timeout)"
        ) from None
    except urllib.error.URLError as exc:
        raise _Failed(f"webhook {target}: {exc.reason}") from None
    except OSError as exc:
        raise _Failed(f"webhook {target}: {exc}") from None
    if not 200 <= status < 300:
        raise _Failed(f"webhook {target}: HTTP {status}")


def _mail(cfg: AlertingConfig, target: str, message: dict[str, Any]) -> None:
    """Send one e-mail; a refusal of the recipient or of the message raises with the reply."""
    import os

    smtp = cfg.smtp
    assert smtp is not None  # the config requires it for the email channel
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = target
    msg["Subject"] = message["subject"]
    msg.set_content(message["text"])
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=cfg.delivery.timeout_seconds) as client:
            if smtp.starttls:
                client.starttls()
            if smtp.username_env and smtp.password_env:
                client.login(
                    os.environ.get(smtp.username_env, ""), os.environ.get(smtp.password_env, "")
                )
            refused = client.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        code, why = exc.recipients.get(target, (0, b""))
        raise _Failed(f"smtp: recipient {target} refused: {code} {_text(why)}") from None
    except smtplib.SMTPResponseException as exc:
        raise _Failed(f"smtp: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except TimeoutError:
        raise _Failed(
            f"smtp: no answer within {cfg.delivery.timeout_seconds:g} s (timeout)"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise _Failed(f"smtp: {exc}") from None
    if target in refused:
        code, why = refused[target]
        raise _Failed(f"smtp: recipient {target} refused: {code} {_text(why)}")


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class _Failed(Exception):
    """One attempt that did not deliver; the message is the recorded reason."""


def deliver_pending(store: AlertStore, cfg: AlertingConfig | None = None) -> dict[str, int]:
    """Return counts of delivered, failed (to retry) and dead-lettered notifications.

    Sends every pending notification whose next attempt is due by the store's clock;
    each attempt is recorded with its outcome and reason. A failure never raises: the
    next run retries it, and the last allowed failure dead-letters it.
    """
    cfg = cfg or store.routing
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    if cfg is None:
        return counts
    now_dt = store.clock.now()
    now = utc_iso(now_dt)
    with store.engine.connect() as conn:
        due = conn.execute(
            sa.select(t.deliveries)
            .where(t.deliveries.c.status == "pending", t.deliveries.c.next_attempt_at <= now)
            .order_by(t.deliveries.c.id)
        ).all()
    messages: dict[tuple[str, int], dict[str, Any]] = {}
    for row in due:
        key = (row.alert_id, row.step)
        if key not in messages:
            alert = store.get(row.alert_id)
            messages[key] = _message(alert, sites=_sites(store, alert), step=row.step)
        attempt = row.attempts + 1
        try:
            if row.channel == "webhook":
                _post(cfg, row.target, messages[key], now_dt)
            else:
                _mail(cfg, row.target, messages[key])
        except (_Failed, ValueInvalid, KeyError) as exc:
            reason = str(exc) if not isinstance(exc, KeyError) else f"{row.target}: not declared"
            dead = attempt >= cfg.delivery.max_attempts
            wait = timedelta(seconds=cfg.delivery.backoff(attempt))
            with store.engine.begin() as conn:
                conn.execute(
                    sa.insert(t.delivery_attempts).values(
                        delivery_id=row.id, attempt=attempt, at=now, outcome="failed", reason=reason
                    )
                )
                conn.execute(
                    sa.update(t.deliveries)
                    .where(t.deliveries.c.id == row.id)
                    .values(
                        status="dead" if dead else "pending",
                        attempts=attempt,
                        last_reason=reason,
                        next_attempt_at=utc_iso(now_dt + wait),
                    )
                )
                if dead:
                    conn.execute(
                        sa.insert(t.dead_letters).values(
                            delivery_id=row.id,
                            alert_id=row.alert_id,
                            recipient=row.recipient,
                            channel=row.channel,
                            attempts=attempt,
                            reason=reason,
                            at=now,
                        )
                    )
            counts["dead" if dead else "failed"] += 1
            continue
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(t.delivery_attempts).values(
                    delivery_id=row.id, attempt=attempt, at=now, outcome="delivered", reason="ok"
                )
            )
            conn.execute(
                sa.update(t.deliveries)
                .where(t.deliveries.c.id == row.id)
                .values(status="delivered", attempts=attempt, last_reason=None, delivered_at=now)
            )
        store.note(
            row.alert_id,
            event="notified",
            actor=MONITOR_ACTOR,
            recipient=row.recipient,
            channel=row.channel,
            step=row.step,
        )
        counts["delivered"] += 1
    return counts


def escalate_overdue(store: AlertStore, cfg: AlertingConfig | None = None) -> list[dict[str, Any]]:
    """Return the escalations made: critical alerts still open past their rule's delay.

    An open (unacknowledged) critical alert whose last notification step was queued
    ``escalate_after_minutes`` ago or more is queued for the next person of its rota;
    each step is an ``escalated`` event on the alert and in the ledger. Nothing happens
    once the rota is exhausted or the alert is acknowledged.
    """
    cfg = cfg or store.routing
    if cfg is None:
        return []
    now_dt = store.clock.now()
    now = utc_iso(now_dt)
    out = []
    for alert in store.list(status="open"):
        route = cfg.rule(alert.rule)
        if alert.severity != "critical" or route is None or route.escalate_after_minutes is None:
            continue
        with store.engine.connect() as conn:
            last = conn.execute(
                sa.select(t.deliveries.c.step, sa.func.min(t.deliveries.c.created_at))
                .where(t.deliveries.c.alert_id == alert.id)
                .group_by(t.deliveries.c.step)
                .order_by(t.deliveries.c.step.desc())
            ).first()
        if last is None:
            continue
        step, since = int(last[0]), datetime.fromisoformat(last[1].replace("Z", "+00:00"))
        if now_dt - since < timedelta(minutes=route.escalate_after_minutes):
            continue
        # The rota is read at the alert's opening: the next person after whoever owned it then.
        opened = datetime.fromisoformat(alert.opened_at.replace("Z", "+00:00"))
        wanted = cfg.recipients(alert.rule, _owned_at(store, alert, opened), step=step + 1)
        if not wanted:
            continue
        with store.engine.begin() as conn:
            added = enqueue(conn, alert.id, wanted, now)
        if not added:
            continue
        store.note(
            alert.id,
            event="escalated",
            actor=MONITOR_ACTOR,
            to=wanted[0].person,
            step=step + 1,
            comment=f"not acknowledged within {route.escalate_after_minutes:g} minutes",
        )
        out.append({"alert_id": alert.id, "to": wanted[0].person, "step": step + 1})
    return out


def _owned_at(store: AlertStore, alert: Alert, opened: datetime) -> datetime:
    """Return when the alert's first notifications were queued (the rota is read then)."""
    with store.engine.connect() as conn:
        first = conn.execute(
            sa.select(sa.func.min(t.deliveries.c.created_at)).where(
                t.deliveries.c.alert_id == alert.id
            )
        ).scalar()
    return datetime.fromisoformat(first.replace("Z", "+00:00")) if first else opened


def notify(store: AlertStore) -> dict[str, Any]:
    """Return what one notification pass did: escalations queued, then deliveries made."""
    cfg = store.routing
    if cfg is None:
        return {
            "escalated": [],
            "delivered": 0,
            "failed": 0,
            "dead": 0,
            "note": f"no {store.workspace.path('alerting').name} in the workspace: "
            "alerts reach nobody",
        }
    escalated = escalate_overdue(store, cfg)
    return {"escalated": escalated} | deliver_pending(store, cfg)


def deliveries(store: AlertStore, alert_id: str | None = None) -> list[dict[str, Any]]:
    """Return notifications (oldest first) with their attempts: status, reason, when."""
    query = sa.select(t.deliveries).order_by(t.deliveries.c.id)
    if alert_id is not None:
        query = query.where(t.deliveries.c.alert_id == alert_id)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        attempts = conn.execute(
            sa.select(t.delivery_attempts).order_by(
                t.delivery_attempts.c.delivery_id, t.delivery_attempts.c.attempt
            )
        ).all()
    by_id: dict[int, list[dict[str, Any]]] = {}
    for a in attempts:
        by_id.setdefault(a.delivery_id, []).append(
            {"attempt": a.attempt, "at": a.at, "outcome": a.outcome, "reason": a.reason}
        )
    return [r | {"attempt_log": by_id.get(r["id"], [])} for r in rows]


def dead_letters(store: AlertStore) -> list[dict[str, Any]]:
    """Return the notifications given up on, newest first, each with its last reason."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.dead_letters).order_by(t.dead_letters.c.at.desc()))
        return [dict(r._mapping) for r in rows]
