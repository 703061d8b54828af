"""Monitoring alerts: one record per condition, de-duplicated, acknowledged and resolved by people.

An alert is raised by a monitoring rule (see :mod:`clinical_mlops.monitoring.rules`)
when a monitored quantity crosses the task's threshold in an evaluated window.
Each alert carries its **kind** (``data``, ``concept``, ``workflow`` or
``fairness`` drift, kept apart as R-O3 asks), a **severity**, the **owner role**
expected to act on it and the **action** the rule prescribes (``open_review``,
``escalate`` or ``suspend``; never retraining).

De-duplication rule: while an alert is ``open`` or ``acknowledged``, further
firings of the same rule for the same release and subgroup do not create new
rows; they add one to ``occurrences`` (once per evaluated window), move
``last_seen_at`` and append to the alert's time series. A window at or before
``last_seen_at`` is not counted again, so re-running the monitor over the same
period changes nothing. After an alert is resolved, a later firing opens a new
alert.

Alerts live in the workspace metadata database (SQLAlchemy Core, SQLite or
PostgreSQL); opening, acknowledging, resolving and every action taken are
``alert`` ledger events naming the actor. This module is the stable API the
console's alerts inbox reads::

    list_alerts(workspace, status="open", kind="data")
    get_alert(workspace, alert_id)
    acknowledge_alert(workspace, alert_id, actor="user:dr.ortiz", identity=who, comment="looking")
    resolve_alert(workspace, alert_id, actor="user:dr.ortiz", comment="assay recalibrated")
    alert_series(workspace, alert_id)   # the quantity over time, for a drill-down plot
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clinical_mlops import ledger
from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.database import ensure_tables, open_metadata_engine
from clinical_mlops.errors import AlertNotFound, AlertTransitionInvalid, ValueInvalid
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.hashing import canonical_json, sha256_text
from clinical_mlops.monitoring import schema as t
from clinical_mlops.monitoring.routing import AlertingConfig, Recipient, load_alerting
from clinical_mlops.workspace import Workspace

__all__ = [
    "ACTIONS",
    "KINDS",
    "SEVERITIES",
    "STATUSES",
    "Alert",
    "AlertSignal",
    "AlertStore",
    "acknowledge_alert",
    "alert_counts",
    "alert_series",
    "enqueue",
    "get_alert",
    "list_alerts",
    "merge_signal",
    "resolve_alert",
]

Kind = Literal["data", "concept", "workflow", "fairness"]
Severity = Literal["info", "warning", "critical"]
Action = Literal["open_review", "escalate", "suspend"]
Status = Literal["open", "acknowledged", "resolved"]
KINDS: tuple[Kind, ...] = ("data", "concept", "workflow", "fairness")
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
ACTIONS: tuple[Action, ...] = ("open_review", "escalate", "suspend")
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "resolved")
_ACTIVE = ("open", "acknowledged")


@dataclass(frozen=True)
class AlertSignal:
    """One firing of a rule in one evaluated window: what a monitor hands to an alert store.

    ``at`` is the end of the window (monitored time, real or simulated);
    ``series`` is the rule's quantity over the windows leading up to it as
    ``(ISO time, value)`` pairs, kept for the drill-down plot.
    """

    rule: str
    kind: str
    severity: str
    owner_role: str
    action: str
    at: str
    summary: str
    quantity: str
    value: float | None
    threshold: float | None
    release: str | None = None
    model_version: str | None = None
    subgroup: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    series: tuple[tuple[str, float | None], ...] = ()

    @property
    def dedup_key(self) -> str:
        return f"{self.rule}|{self.release or ''}|{self.subgroup or ''}"


@dataclass(frozen=True)
class Alert:
    """One alert as stored; ``to_json`` is the shape the CLI and the console show."""

    id: str
    rule: str
    kind: str
    severity: str
    owner_role: str
    action: str
    status: str
    opened_at: str
    last_seen_at: str
    occurrences: int
    release: str | None
    model_version: str | None
    subgroup: str | None
    summary: str
    detail: dict[str, Any]
    history: tuple[dict[str, Any], ...] = ()
    ledger_seq: int | None = None

    @property
    def dedup_key(self) -> str:
        return f"{self.rule}|{self.release or ''}|{self.subgroup or ''}"

    @property
    def active(self) -> bool:
        """True while the alert is open or acknowledged (further firings count here)."""
        return self.status in _ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "owner_role": self.owner_role,
            "action": self.action,
            "status": self.status,
            "opened_at": self.opened_at,
            "last_seen_at": self.last_seen_at,
            "occurrences": self.occurrences,
            "release": self.release,
            "model_version": self.model_version,
            "subgroup": self.subgroup,
            "summary": self.summary,
            "detail": self.detail,
            "history": list(self.history),
            "ledger_seq": self.ledger_seq,
        }


def _alert_id(key: str, opened_at: str) -> str:
    # Deterministic: the same firing re-evaluated gives the same id.
    return "alt-" + sha256_text(f"{key}|{opened_at}")[:12]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def merge_signal(
    active: Alert | None, signal: AlertSignal, *, last_resolved_at: str | None = None
) -> Alert | None:
    """Return the alert after ``signal`` under the de-duplication rule, or None for no change.

    ``active`` is the open or acknowledged alert with the signal's key, if any;
    ``last_resolved_at`` the resolution time of the newest resolved one. A signal
    at or before what is already counted (a re-run) changes nothing.
    """
    detail = signal.detail | {
        "quantity": signal.quantity,
        "value": _finite(signal.value),
        "threshold": _finite(signal.threshold),
    }
    if active is not None:
        if signal.at <= active.last_seen_at:
            return None
        severity = max(active.severity, signal.severity, key=SEVERITIES.index)
        return replace(
            active,
            occurrences=active.occurrences + 1,
            last_seen_at=signal.at,
            severity=severity,
            summary=signal.summary,
            detail=detail,
        )
    if last_resolved_at is not None and signal.at <= last_resolved_at:
        return None
    return Alert(
        id=_alert_id(signal.dedup_key, signal.at),
        rule=signal.rule,
        kind=signal.kind,
        severity=signal.severity,
        owner_role=signal.owner_role,
        action=signal.action,
        status="open",
        opened_at=signal.at,
        last_seen_at=signal.at,
        occurrences=1,
        release=signal.release,
        model_version=signal.model_version,
        subgroup=signal.subgroup,
        summary=signal.summary,
        detail=detail,
    )


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueInvalid(f"{what}: expected one of {', '.join(allowed)}, got {value!r}")


def _row_alert(row: Any) -> Alert:
    m = dict(row._mapping)
    return Alert(
        id=m["id"],
        rule=m["rule"],
        kind=m["kind"],
        severity=m["severity"],
        owner_role=m["owner_role"],
        action=m["action"],
        status=m["status"],
        opened_at=m["opened_at"],
        last_seen_at=m["last_seen_at"],
        occurrences=int(m["occurrences"]),
        release=m["release"],
        model_version=m["model_version"],
        subgroup=m["subgroup"],
        summary=m["summary"],
        detail=json.loads(m["detail"]),
        history=tuple(json.loads(m["history"])),
        ledger_seq=m["ledger_seq"],
    )


def _j(obj: Any) -> str:
    return canonical_json(obj).decode("utf-8")


def _iso(value: datetime | str) -> str:
    return utc_iso(value) if isinstance(value, datetime) else str(value)


class AlertStore:
    """The alerts of one workspace (metadata database + ledger); see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        clock: Clock | None = None,
        url: str | None = None,
        record_ledger: bool = True,
        engine: Engine | None = None,
    ):
        self.workspace = workspace
        self.clock: Clock = clock or SystemClock()
        # an engine passed in (one per workspace, from Services) stays its owner's
        self._owns_engine = engine is None
        if engine is None:
            engine = open_metadata_engine(url or workspace.database_url("meta"), t.metadata)
        else:
            ensure_tables(engine, t.metadata)
        self.engine = engine
        self.record_ledger = record_ledger
        self._routing: AlertingConfig | None = None
        self._routing_read = False

    @classmethod
    def open(cls, workspace: Workspace, *, clock: Clock | None = None) -> AlertStore:
        """Return the alert store of ``workspace`` (tables created on first use)."""
        return cls(workspace, clock=clock)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> str:
        return utc_iso(self.clock.now())

    @property
    def routing(self) -> AlertingConfig | None:
        """Return the workspace's alert routing (``alerting.yaml``), read once per store."""
        if not self._routing_read:
            self._routing = load_alerting(self.workspace)
            self._routing_read = True
        return self._routing

    def record(self, *, actor: str, payload: dict[str, Any]) -> int | None:
        """Return the seq of one ``alert`` ledger entry (None when ledger recording is off)."""
        if not self.record_ledger:
            return None
        return ledger.record(
            self.workspace, type="alert", actor=actor, payload=payload, clock=self.clock
        ).seq

    # -- raising ---------------------------------------------------------------------------
    def raise_alert(self, signal: AlertSignal, *, actor: str) -> tuple[Alert | None, bool]:
        """Return ``(alert, created)`` after applying ``signal`` under the de-duplication rule.

        ``alert`` is None when the signal was already counted (a re-run of a window).
        A new alert is an ``alert`` ledger event; a repeat only updates the row.
        """
        _check_choice(signal.kind, KINDS, "kind")
        _check_choice(signal.severity, SEVERITIES, "severity")
        _check_choice(signal.action, ACTIONS, "action")
        key = signal.dedup_key
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(t.alerts)
                .where(t.alerts.c.dedup_key == key)
                .order_by(t.alerts.c.opened_at)
            ).all()
            found = [_row_alert(r) for r in rows]
            active = next((a for a in found if a.active), None)
            # Monitored time, not wall time: a re-run over windows a resolved alert already
            # covered must not reopen it.
            last_resolved = max(
                (a.last_seen_at for a in found if a.status == "resolved"), default=None
            )
            merged = merge_signal(active, signal, last_resolved_at=last_resolved)
            if merged is None:
                return None, False
            now = self.now()
            self._add_points(conn, merged.id, [*signal.series, (signal.at, signal.value)])
            if active is not None:
                conn.execute(
                    sa.update(t.alerts)
                    .where(t.alerts.c.id == merged.id)
                    .values(
                        occurrences=merged.occurrences,
                        last_seen_at=merged.last_seen_at,
                        severity=merged.severity,
                        summary=merged.summary,
                        detail=_j(merged.detail),
                        updated_at=now,
                    )
                )
                return merged, False
            seq = self.record(
                actor=actor,
                payload={
                    "kind": signal.kind,
                    "message": signal.summary,
                    "event": "opened",
                    "alert_id": merged.id,
                    "rule": signal.rule,
                    "severity": signal.severity,
                    "owner_role": signal.owner_role,
                    "action": signal.action,
                    "release": signal.release,
                    "model_version": signal.model_version,
                    "subgroup": signal.subgroup,
                    "at": signal.at,
                    "quantity": signal.quantity,
                    "value": _finite(signal.value),
                    "threshold": _finite(signal.threshold),
                },
            )
            history = ({"time": now, "event": "opened", "actor": actor, "ledger_seq": seq},)
            merged = replace(merged, history=history, ledger_seq=seq)
            conn.execute(
                sa.insert(t.alerts).values(
                    id=merged.id,
                    rule=merged.rule,
                    kind=merged.kind,
                    severity=merged.severity,
                    owner_role=merged.owner_role,
                    action=merged.action,
                    status=merged.status,
                    release=merged.release,
                    model_version=merged.model_version,
                    subgroup=merged.subgroup,
                    dedup_key=key,
                    opened_at=merged.opened_at,
                    last_seen_at=merged.last_seen_at,
                    occurrences=merged.occurrences,
                    summary=merged.summary,
                    detail=_j(merged.detail),
                    history=_j(list(history)),
                    ledger_seq=seq,
                    updated_at=now,
                )
            )
            # The outbox: who must be told is written with the alert, in its transaction;
            # delivery happens after (monitoring.notify), so a receiver that is down can
            # neither lose the notification nor hold the alert back.
            if self.routing is not None:
                enqueue(
                    conn, merged.id, self.routing.recipients(merged.rule, self.clock.now()), now
                )
            return merged, True

    def _add_points(
        self, conn: sa.Connection, alert_id: str, points: Iterable[tuple[str, float | None]]
    ) -> None:
        have = set(
            conn.execute(
                sa.select(t.alert_points.c.at).where(t.alert_points.c.alert_id == alert_id)
            ).scalars()
        )
        fresh = {}
        for at, value in points:
            if at not in have:
                fresh[at] = _finite(value)
        if fresh:
            conn.execute(
                sa.insert(t.alert_points),
                [{"alert_id": alert_id, "at": at, "value": v} for at, v in sorted(fresh.items())],
            )

    # -- reading ---------------------------------------------------------------------------
    def get(self, alert_id: str) -> Alert:
        """Return alert ``alert_id``; AlertNotFound if there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()
        if row is None:
            raise AlertNotFound(
                f"no alert {alert_id!r} in workspace {self.workspace.root}; "
                "list them with `clinical-mlops monitor alerts`"
            )
        return _row_alert(row)

    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        kind: str | None = None,
        since: datetime | str | None = None,
        release: str | None = None,
    ) -> list[Alert]:
        """Return alerts, most recently seen first, filtered by status, kind, time and release."""
        query = sa.select(t.alerts)
        if status is not None:
            wanted = (status,) if isinstance(status, str) else tuple(status)
            for s in wanted:
                _check_choice(s, STATUSES, "status")
            query = query.where(t.alerts.c.status.in_(wanted))
        if kind is not None:
            _check_choice(kind, KINDS, "kind")
            query = query.where(t.alerts.c.kind == kind)
        if since is not None:
            query = query.where(t.alerts.c.last_seen_at >= _iso(since))
        if release is not None:
            query = query.where(t.alerts.c.release == release)
        query = query.order_by(t.alerts.c.last_seen_at.desc(), t.alerts.c.id)
        with self.engine.connect() as conn:
            return [_row_alert(r) for r in conn.execute(query)]

    def series(self, alert_id: str) -> dict[str, Any]:
        """Return the time series behind alert ``alert_id`` (see :func:`alert_series`)."""
        alert = self.get(alert_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.alert_points.c.at, t.alert_points.c.value)
                .where(t.alert_points.c.alert_id == alert_id)
                .order_by(t.alert_points.c.at)
            ).all()
        return {
            "alert_id": alert.id,
            "rule": alert.rule,
            "quantity": alert.detail.get("quantity"),
            "threshold": alert.detail.get("threshold"),
            "direction": alert.detail.get("direction"),
            "opened_at": alert.opened_at,
            "last_seen_at": alert.last_seen_at,
            "points": [{"at": r.at, "value": r.value} for r in rows],
        }

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Return the number of alerts per (status, kind, severity)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.alerts.c.status, t.alerts.c.kind, t.alerts.c.severity, sa.func.count()
                ).group_by(t.alerts.c.status, t.alerts.c.kind, t.alerts.c.severity)
            ).all()
        return {(r[0], r[1], r[2]): int(r[3]) for r in rows}

    # -- people acting on alerts -------------------------------------------------------------
    def note(
        self, alert_id: str, *, event: str, actor: str, comment: str | None = None, **extra: Any
    ) -> Alert:
        """Return the alert after appending ``event`` to its history (and the ledger)."""
        alert = self.get(alert_id)
        return self._change(alert, event=event, actor=actor, comment=comment, extra=extra)

    def _change(
        self,
        alert: Alert,
        *,
        event: str,
        actor: str,
        comment: str | None,
        status: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Alert:
        if not isinstance(actor, str) or not actor.strip():
            raise AlertTransitionInvalid(f"alert {alert.id}: name who acts (actor)")
        now = self.now()
        with self.engine.begin() as conn:
            seq = self.record(
                actor=actor,
                payload={
                    "kind": alert.kind,
                    "message": f"{event}: {alert.summary}",
                    "event": event,
                    "alert_id": alert.id,
                    "rule": alert.rule,
                    "release": alert.release,
                    "comment": comment,
                    **(extra or {}),
                },
            )
            entry = {"time": now, "event": event, "actor": actor, "ledger_seq": seq}
            if comment:
                entry["comment"] = comment
            if extra:
                entry |= extra
            history = [*alert.history, entry]
            conn.execute(
                sa.update(t.alerts)
                .where(t.alerts.c.id == alert.id)
                .values(
                    status=status or alert.status,
                    history=_j(history),
                    updated_at=now,
                )
            )
        return replace(alert, status=status or alert.status, history=tuple(history))

    def acknowledge(
        self,
        alert_id: str,
        *,
        actor: str,
        identity: VerifiedIdentity,
        comment: str | None = None,
    ) -> Alert:
        """Return the alert acknowledged by ``actor`` (it must be open).

        Acknowledging is a person's act: a service identity (the monitor) cannot
        acknowledge, and ``identity`` (how the person was authenticated) is stored with
        the act in the ledger. It stops the alert's escalation along the rota and starts
        its time to triage.
        """
        alert = self.get(alert_id)
        if alert.status != "open":
            raise AlertTransitionInvalid(
                f"alert {alert_id} is {alert.status}; only an open alert can be acknowledged"
            )
        if actor.startswith("system:") or identity.method == "service":
            raise AlertTransitionInvalid(
                f"alert {alert_id}: acknowledging is a person's act; {actor!r} is a service"
            )
        if actor not in (identity.person, f"user:{identity.person}"):
            raise AlertTransitionInvalid(
                f"alert {alert_id}: the identity proves {identity.person!r}, not {actor!r}"
            )
        return self._change(
            alert,
            event="acknowledged",
            actor=actor,
            comment=comment,
            status="acknowledged",
            extra={"identity": identity.to_json()},
        )

    def resolve(self, alert_id: str, *, actor: str, comment: str) -> Alert:
        """Return the alert resolved by ``actor``; ``comment`` must say why (how it was handled)."""
        alert = self.get(alert_id)
        if alert.status == "resolved":
            raise AlertTransitionInvalid(f"alert {alert_id} is already resolved")
        if not comment or not comment.strip():
            raise AlertTransitionInvalid(
                f"alert {alert_id}: resolving needs a comment saying how it was handled"
            )
        return self._change(
            alert, event="resolved", actor=actor, comment=comment, status="resolved"
        )


def enqueue(conn: sa.Connection, alert_id: str, recipients: Iterable[Recipient], now: str) -> int:
    """Return how many notifications of ``alert_id`` were added to the outbox.

    One row per alert x recipient x channel (a UNIQUE constraint): a recipient who was
    already told on a channel is not queued again.
    """
    added = 0
    for r in recipients:
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.insert(t.deliveries).values(
                        alert_id=alert_id,
                        recipient=r.person,
                        channel=r.channel,
                        target=r.target,
                        step=r.step,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            added += 1
        except sa.exc.IntegrityError:
            continue
    return added


@contextmanager
def _store(workspace: Workspace, clock: Clock | None = None) -> Iterator[AlertStore]:
    store = AlertStore(workspace, clock=clock)
    try:
        yield store
    finally:
        store.close()


def list_alerts(
    workspace: Workspace,
    *,
    status: str | Sequence[str] | None = None,
    kind: str | None = None,
    since: datetime | str | None = None,
) -> list[Alert]:
    """Return the workspace's alerts, most recently seen first.

    ``status`` is one of ``open``, ``acknowledged``, ``resolved`` (or several);
    ``kind`` one of ``data``, ``concept``, ``workflow``, ``fairness``; ``since``
    keeps alerts last seen at or after that time.
    """
    with _store(workspace) as store:
        return store.list(status=status, kind=kind, since=since)


def get_alert(workspace: Workspace, alert_id: str) -> Alert:
    """Return one alert; ``AlertNotFound`` if the workspace has none with that id."""
    with _store(workspace) as store:
        return store.get(alert_id)


def acknowledge_alert(
    workspace: Workspace,
    alert_id: str,
    *,
    actor: str,
    identity: VerifiedIdentity,
    comment: str | None = None,
    clock: Clock | None = None,
) -> Alert:
    """Return the alert after ``actor`` acknowledged it (an ``alert`` ledger event).

    ``identity`` is the verified identity of the person acknowledging, stored with the act.
    Only an open alert can be acknowledged; otherwise ``AlertTransitionInvalid``.
    An acknowledged alert keeps counting occurrences until it is resolved.
    """
    with _store(workspace, clock) as store:
        return store.acknowledge(alert_id, actor=actor, comment=comment, identity=identity)


def resolve_alert(
    workspace: Workspace, alert_id: str, *, actor: str, comment: str, clock: Clock | None = None
) -> Alert:
    """Return the alert after ``actor`` resolved it with ``comment`` (an ``alert`` ledger event).

    A resolved alert is closed for good: the next firing of its rule opens a new alert.
    """
    with _store(workspace, clock) as store:
        return store.resolve(alert_id, actor=actor, comment=comment)


def alert_series(workspace: Workspace, alert_id: str) -> dict[str, Any]:
    """Return the time series behind an alert, for a drill-down plot.

    Keys: ``alert_id``, ``rule``, ``quantity`` (e.g. ``psi:ventilation``),
    ``threshold``, ``direction`` (``above`` or ``below``: which side of the
    threshold fires), ``opened_at``, ``last_seen_at`` and ``points``, a list of
    ``{"at": ISO time, "value": float or None}`` oldest first: the windows before
    the alert opened and every window it fired in.
    """
    with _store(workspace) as store:
        return store.series(alert_id)


def alert_counts(workspace: Workspace) -> dict[tuple[str, str, str], int]:
    """Return the number of alerts per (status, kind, severity)."""
    with _store(workspace) as store:
        return store.counts()
