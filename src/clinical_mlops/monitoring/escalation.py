"""What an alert makes happen (R-H2): a review item, cases routed to human review, or suspension.

Actions are taken once, when an alert opens (a repeat of the same condition only
counts an occurrence), by the monitor's system actor (:data:`MONITOR_ACTOR`):

* ``open_review`` — a review item for the release (``mon_review_items``) and an
  ``alert`` ledger event of kind ``review_requested``; it stays pending until a
  periodic or ad-hoc review of the release is recorded after it
  (``governance.reviews.record_review``).
* ``escalate`` — an ``escalation`` ledger event for the release (scope
  ``release``, route ``human_review``) and one per case (scope ``case``, with the
  prediction's audit seq and the patient's pseudonym) for the predictions shown
  to clinicians since the look-back before the alert; while the alert is open or
  acknowledged, every later monitor run routes the newer cases the same way (at
  most :data:`CASE_CAP` per run, the most recent first).
* ``suspend`` — first escalated to the release's owner (:func:`notify_owner`: an
  ``escalation`` ledger event, scope ``release``, route ``owner``, naming the owner
  — the release's author — and the rule's owner role, noted on the alert as
  ``owner_notified``), then ``Governance.suspend`` with the monitor as actor and the
  alert as reason: automated recommendations stop and the Predictor serves its
  clinical-baseline fallback. The registry checks roles like for anyone. Automatic
  suspension is on by default for critical rules: the first time the monitor must
  suspend, it is provisioned as a service person (:func:`provision_monitor`: the
  engineering role, a ``role_granted`` ledger event naming its service identity and
  why). A workspace whose ``alerting.yaml`` says ``auto_suspend: false`` does not
  provision it; then, unless a board granted the monitor a role that may suspend,
  the refusal is recorded (``governance_refused``) and the alert says the release
  still needs suspending by a person.

No action retrains a model.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa

from clinical_mlops.database import open_metadata_engine
from clinical_mlops.errors import GovernanceError, ReleaseNotFound
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.monitoring import schema as t
from clinical_mlops.monitoring.alerts import Alert, AlertStore
from clinical_mlops.monitoring.records import InferenceRecords, epoch
from clinical_mlops.workspace import Workspace

__all__ = [
    "CASE_CAP",
    "MONITOR_ACTOR",
    "MONITOR_IDENTITY",
    "MONITOR_ROLE",
    "ActionResult",
    "escalate_cases",
    "escalated_through",
    "notify_owner",
    "open_review_item",
    "provision_monitor",
    "review_items",
    "suspend_release",
    "take_action",
]

MONITOR_ACTOR = "system:monitor"
#: how the monitor proves who it is: a service identity of this installation
MONITOR_IDENTITY = VerifiedIdentity(
    person=MONITOR_ACTOR, method="service", subject="clinical-mlops-monitor"
)
CASE_CAP = 500
#: the role the monitor is provisioned with: one that may suspend a live release and
#: neither approves clinically nor grants roles
MONITOR_ROLE = "engineering"


@dataclass(frozen=True)
class ActionResult:
    """What an action did: ``done`` False means it was refused and the alert says why."""

    alert_id: str
    action: str
    done: bool
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "action": self.action,
            "done": self.done,
            "detail": self.detail,
        }


def open_review_item(store: AlertStore, alert: Alert, *, actor: str) -> ActionResult:
    """Return the review item opened for ``alert``'s release (a ledger event, noted on the alert)."""
    item_id = "rev-" + secrets.token_hex(6)
    now = store.now()
    reason = f"monitoring alert {alert.id} ({alert.rule}): {alert.summary}"
    with store.engine.begin() as conn:
        seq = store.record(
            actor=actor,
            payload={
                "kind": "review_requested",
                "message": reason,
                "review_item": item_id,
                "alert_id": alert.id,
                "release": alert.release,
            },
        )
        conn.execute(
            sa.insert(t.review_items).values(
                id=item_id,
                release=alert.release,
                alert_id=alert.id,
                reason=reason,
                opened_by=actor,
                opened_at=now,
                ledger_seq=seq,
            )
        )
    store.note(alert.id, event="review_opened", actor=actor, review_item=item_id)
    return ActionResult(alert.id, "open_review", True, {"review_item": item_id})


def review_items(
    workspace: Workspace, *, release: str | None = None, pending_only: bool = False
) -> list[dict[str, Any]]:
    """Return review items (newest first), each marked ``pending`` until a review is recorded after it."""
    from clinical_mlops.governance import schema as gov

    engine = open_metadata_engine(workspace.database_url("meta"), t.metadata, gov.metadata)
    try:
        query = sa.select(t.review_items).order_by(t.review_items.c.opened_at.desc())
        if release is not None:
            query = query.where(t.review_items.c.release == release)
        with engine.connect() as conn:
            items = [dict(r._mapping) for r in conn.execute(query)]
            reviewed = {
                r.version: r.last
                for r in conn.execute(
                    sa.select(
                        gov.reviews.c.version, sa.func.max(gov.reviews.c.time).label("last")
                    ).group_by(gov.reviews.c.version)
                )
            }
    finally:
        engine.dispose()
    for item in items:
        last = reviewed.get(item["release"])
        item["pending"] = not (last and last > item["opened_at"])
    return [i for i in items if i["pending"]] if pending_only else items


def escalate_cases(
    store: AlertStore,
    alert: Alert,
    records: InferenceRecords | None,
    *,
    actor: str,
    after_seq: int | None = None,
    since: float | None = None,
    first: bool = True,
) -> ActionResult:
    """Return the escalation of ``alert``'s release and of its recent shown cases to human review.

    Cases are the predictions in ``records`` shown to a clinician with a seq after
    ``after_seq`` (or made at or after epoch ``since``), at most :data:`CASE_CAP`,
    the most recent first. One ledger transaction; the alert notes the last seq
    routed so the next run continues from there.
    """
    reason = f"monitoring alert {alert.id} ({alert.rule}): {alert.summary}"
    entries: list[NewEntry] = []
    if first:
        entries.append(
            NewEntry(
                type="escalation",
                actor=actor,
                payload={
                    "reason": reason,
                    "model_version": alert.model_version or "",
                    "release": alert.release,
                    "scope": "release",
                    "route": "human_review",
                    "alert_id": alert.id,
                },
            )
        )
    rows = np.zeros(0, dtype=np.int64)
    if records is not None and len(records):
        keep = records.shown.copy()
        if after_seq is not None:
            keep &= records.seq > after_seq
        elif since is not None:
            keep &= records.time >= since
        rows = np.flatnonzero(keep)[-CASE_CAP:]
    for i in rows.tolist():
        assert records is not None
        subject = records.subjects[i] if records.subjects else None
        entries.append(
            NewEntry(
                type="escalation",
                actor=actor,
                subject=subject,
                payload={
                    "reason": reason,
                    "model_version": records.model_version,
                    "release": records.release,
                    "prediction_seq": int(records.seq[i]),
                    "scope": "case",
                    "route": "human_review",
                    "alert_id": alert.id,
                },
            )
        )
    through = int(records.seq[rows[-1]]) if len(rows) and records is not None else after_seq
    if entries:
        with Ledger.open(store.workspace, clock=store.clock) as led:
            led.append_batch(entries)
    if first or len(rows):
        store.note(
            alert.id,
            event="cases_escalated",
            actor=actor,
            cases=len(rows),
            through_seq=through,
        )
    return ActionResult(alert.id, "escalate", True, {"cases": len(rows), "through_seq": through})


def notify_owner(store: AlertStore, alert: Alert, *, actor: str) -> ActionResult:
    """Return the escalation of ``alert`` to its release's owner (one ``escalation`` ledger event).

    The owner is the release's author (who registered its bundle); the event also names
    the rule's owner role, so whoever holds that role is told too. Recorded before any
    suspension is attempted, so the owner hears of the alert even if it is refused.
    """
    from clinical_mlops.registry.registry import Registry

    owner = ""
    if alert.release:
        with Registry.open(store.workspace, clock=store.clock) as reg:
            try:
                owner = reg.get(alert.release).author
            except ReleaseNotFound:
                owner = ""
    payload = {
        "reason": f"monitoring alert {alert.id} ({alert.rule}): {alert.summary}",
        "model_version": alert.model_version or "",
        "release": alert.release,
        "scope": "release",
        "route": "owner",
        "owner": owner,
        "owner_role": alert.owner_role,
        "severity": alert.severity,
        "alert_id": alert.id,
    }
    with Ledger.open(store.workspace, clock=store.clock) as led:
        (receipt,) = led.append_batch([NewEntry(type="escalation", actor=actor, payload=payload)])
    store.note(
        alert.id,
        event="owner_notified",
        actor=actor,
        owner=owner,
        owner_role=alert.owner_role,
        ledger_seq=receipt.seq,
    )
    return ActionResult(
        alert.id,
        "notify_owner",
        True,
        {"owner": owner, "owner_role": alert.owner_role, "ledger_seq": receipt.seq},
    )


def provision_monitor(gov: Any, *, why: str) -> int | None:
    """Return the ledger seq of the monitor's provisioning, None if it already may suspend.

    The monitor becomes a person of the registry holding :data:`MONITOR_ROLE`, recorded
    as a ``role_granted`` event by the monitor itself with its service identity and
    ``why``, so an auditor sees when and why it first acted as a governed person.
    """
    from clinical_mlops.governance import schema as gs
    from clinical_mlops.hashing import canonical_json

    held = gov.roles_of(MONITOR_ACTOR)
    if held & {"clinical", "compliance", "engineering"}:
        return None
    roles = sorted(held | {MONITOR_ROLE})
    encoded = canonical_json(roles).decode("utf-8")
    with gov.engine.begin() as conn:
        conn.execute(sa.delete(gs.people).where(gs.people.c.name == MONITOR_ACTOR))
        conn.execute(
            sa.insert(gs.people).values(
                name=MONITOR_ACTOR, roles=encoded, added=gov.now(), added_by=MONITOR_ACTOR
            )
        )
        return int(
            gov.record(
                type="role_granted",
                actor=MONITOR_ACTOR,
                payload={
                    "person": MONITOR_ACTOR,
                    "roles": roles,
                    "why": why,
                    "provisioned": "service",
                    "identity": MONITOR_IDENTITY.to_json(),
                },
            )
        )


def suspend_release(
    store: AlertStore, alert: Alert, *, actor: str, auto_suspend: bool = True
) -> ActionResult:
    """Return the result of suspending ``alert``'s release through the registry (role-checked).

    For a critical alert acted on by the monitor with ``auto_suspend`` on, the monitor
    is provisioned first (:func:`provision_monitor`) when it may not suspend yet.
    """
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.governance.identity import service_identity
    from clinical_mlops.registry.registry import Registry

    if not alert.release:
        return ActionResult(alert.id, "suspend", False, {"reason": "the alert names no release"})
    why = f"monitoring alert {alert.id} ({alert.rule}): {alert.summary}"
    with Registry.open(store.workspace, clock=store.clock) as reg, Governance(reg) as gov:
        try:
            rel = reg.get(alert.release)
            if rel.status == "suspended":
                return ActionResult(alert.id, "suspend", True, {"status": "already suspended"})
            if auto_suspend and actor == MONITOR_ACTOR and alert.severity == "critical":
                seq = provision_monitor(
                    gov,
                    why="automatic suspension of releases on critical monitoring alerts "
                    f"(first needed for alert {alert.id}, rule {alert.rule})",
                )
                if seq is not None:
                    store.note(
                        alert.id,
                        event="monitor_provisioned",
                        actor=actor,
                        role=MONITOR_ROLE,
                        role_granted_seq=seq,
                    )
            # The monitor suspends on its own account, as the service it is.
            identity = MONITOR_IDENTITY if actor == MONITOR_ACTOR else service_identity(actor)
            gov.suspend(alert.release, actor=actor, why=why, identity=identity)
        except (GovernanceError, ReleaseNotFound) as exc:
            store.note(alert.id, event="suspension_refused", actor=actor, comment=str(exc))
            return ActionResult(alert.id, "suspend", False, {"reason": str(exc)})
    store.note(alert.id, event="suspended", actor=actor, comment=why)
    return ActionResult(alert.id, "suspend", True, {"status": "suspended"})


def take_action(
    store: AlertStore,
    alert: Alert,
    *,
    actor: str = MONITOR_ACTOR,
    records: InferenceRecords | None = None,
    lookback_hours: float = 6.0,
    after_seq: int | None = None,
) -> ActionResult:
    """Return the result of the action ``alert`` prescribes (taken when it opens).

    For ``escalate``, cases already routed by another active alert of the release
    (up to seq ``after_seq``) are not routed twice.
    """
    if alert.action == "open_review":
        return open_review_item(store, alert, actor=actor)
    if alert.action == "escalate":
        since = epoch(alert.opened_at) - 3600.0 * lookback_hours
        return escalate_cases(store, alert, records, actor=actor, since=since, after_seq=after_seq)
    if alert.action == "suspend":
        told = notify_owner(store, alert, actor=actor)
        routing = store.routing
        auto = routing is None or routing.auto_suspend
        result = suspend_release(store, alert, actor=actor, auto_suspend=auto)
        return replace(result, detail=result.detail | {"owner_notified": told.detail})
    raise ValueError(f"unknown action {alert.action!r}")


def escalated_through(alert: Alert) -> int | None:
    """Return the last prediction seq routed to review for ``alert`` (None if none yet)."""
    seqs = [
        int(h["through_seq"])
        for h in alert.history
        if h.get("event") == "cases_escalated" and h.get("through_seq") is not None
    ]
    return max(seqs) if seqs else None
