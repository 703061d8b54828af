"""Periodic reviews (R-H3): a schedule per task, a checklist recorded against a release.

Default interval 90 days (quarterly), counted from the release's approval or its
last review. The checklist covers calibration, fairness, incidents and documentation
completeness; each item is answered ``ok`` or with a finding. An overdue review
raises an ``alert`` ledger event (``review_overdue``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.errors import GovernanceError
from clinical_mlops.hashing import canonical_json
from clinical_mlops.vocabulary import Role

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance
from clinical_mlops.governance import schema as t

__all__ = [
    "CHECKLIST",
    "DEFAULT_INTERVAL_DAYS",
    "overdue_reviews",
    "record_review",
    "review_status",
    "set_schedule",
]

DEFAULT_INTERVAL_DAYS = 90
CHECKLIST = ("calibration", "fairness", "incidents", "documentation")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_schedule(governance: Governance, *, task: str, interval_days: int, actor: str) -> int:
    """Return the review interval (days) of ``task`` after setting it (compliance role)."""
    with governance.governed(action="set review schedule", actor=actor):
        governance.require(actor, allowed=(Role.COMPLIANCE,), action="set review schedule")
        if interval_days < 1:
            raise GovernanceError("review interval must be at least 1 day")
        with governance.engine.begin() as conn:
            conn.execute(sa.delete(t.schedules).where(t.schedules.c.task == task))
            conn.execute(sa.insert(t.schedules).values(task=task, interval_days=interval_days))
    return interval_days


def record_review(
    governance: Governance, version: str, *, reviewer: str, checklist: dict[str, str], outcome: str
) -> dict[str, Any]:
    """Return the review recorded against ``version`` (clinical or compliance role).

    ``checklist`` must answer every item of :data:`CHECKLIST`; ``outcome`` is
    ``continue``, ``continue_with_actions`` or ``suspend`` (which also suspends).
    """
    with governance.governed(action="review", actor=reviewer, version=version):
        rel = governance.registry.get(version)
        role = governance.require(
            reviewer, allowed=(Role.CLINICAL, Role.COMPLIANCE), action=f"review of {version}"
        )
        missing = [k for k in CHECKLIST if not str(checklist.get(k, "")).strip()]
        if missing:
            raise GovernanceError(
                f"review of {version}: checklist items unanswered: {missing} "
                f"(rule: a review covers {', '.join(CHECKLIST)})"
            )
        if outcome not in ("continue", "continue_with_actions", "suspend"):
            raise GovernanceError(f"review of {version}: unknown outcome {outcome!r}")
        if rel.status not in ("approved_limited", "approved", "suspended"):
            raise GovernanceError(f"review of {version}: status {rel.status} is not in service")
        now = governance.now()
        with governance.engine.begin() as conn:
            conn.execute(
                sa.insert(t.reviews).values(
                    version=version,
                    reviewer=reviewer,
                    role=role,
                    checklist=canonical_json(checklist).decode(),
                    outcome=outcome,
                    time=now,
                )
            )
            governance.record(
                type="review",
                actor=reviewer,
                payload={
                    "model_version": version,
                    "outcome": outcome,
                    "role": role,
                    "checklist": checklist,
                },
            )
    if outcome == "suspend" and rel.status in ("approved_limited", "approved"):
        governance.suspend(version, actor=reviewer, why="periodic review outcome: suspend")
    return {
        "version": version,
        "reviewer": reviewer,
        "role": role,
        "outcome": outcome,
        "checklist": checklist,
        "time": now,
    }


def review_status(governance: Governance, version: str) -> dict[str, Any]:
    """Return the last review, the interval and the due date of ``version``."""
    rel = governance.registry.get(version)
    with governance.engine.connect() as conn:
        interval = (
            conn.execute(
                sa.select(t.schedules.c.interval_days).where(t.schedules.c.task == rel.task)
            ).scalar()
            or DEFAULT_INTERVAL_DAYS
        )
        last = conn.execute(
            sa.select(t.reviews)
            .where(t.reviews.c.version == version)
            .order_by(t.reviews.c.id.desc())
        ).first()
    approved = [
        h["time"]
        for h in governance.registry.history(version)
        if h["to"] in ("approved_limited", "approved")
    ]
    start = last.time if last else (approved[0] if approved else None)
    due = _time(start) + timedelta(days=int(interval)) if start else None
    now = governance.clock.now()
    return {
        "version": version,
        "interval_days": int(interval),
        "last_review": None
        if last is None
        else {
            "reviewer": last.reviewer,
            "outcome": last.outcome,
            "time": last.time,
            "checklist": json.loads(last.checklist),
        },
        "due": due.strftime("%Y-%m-%dT%H:%M:%SZ") if due else None,
        "overdue": bool(due and now > due and rel.status in ("approved_limited", "approved")),
    }


def overdue_reviews(governance: Governance, *, actor: str = "scheduler") -> list[dict[str, Any]]:
    """Return the overdue reviews of releases in service; each raises an ``alert`` ledger event."""
    out = []
    for rel in governance.registry.list():
        if rel.status not in ("approved_limited", "approved"):
            continue
        status = review_status(governance, rel.version)
        if status["overdue"]:
            governance.record(
                type="alert",
                actor=actor,
                payload={
                    "kind": "review_overdue",
                    "message": f"periodic review of {rel.version} was due {status['due']}",
                    "release": rel.version,
                },
            )
            out.append(status)
    return out
