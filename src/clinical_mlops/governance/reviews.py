"""Periodic reviews (R-H3): a schedule per task, a checklist recorded against a release.

Default interval 90 days (quarterly), counted from the release's approval or its
last review. The checklist covers calibration, fairness, incidents and documentation
completeness; each item is answered ``ok`` or with a finding. An overdue review
raises an ``alert`` ledger event (``review_overdue``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clinical_mlops.errors import GovernanceError
from clinical_mlops.governance.approvals import require_role
from clinical_mlops.hashing import canonical_json
from clinical_mlops.registry import schema as t

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


def set_schedule(registry: Any, *, task: str, interval_days: int, actor: str) -> int:
    """Return the review interval (days) of ``task`` after setting it (compliance role)."""
    with registry.governed(action="set review schedule", actor=actor):
        require_role(
            person=actor,
            held=registry.roles_of(actor),
            allowed=("compliance",),
            action="set review schedule",
        )
        if interval_days < 1:
            raise GovernanceError("review interval must be at least 1 day")
        with registry.engine.begin() as conn:
            conn.execute(sa.delete(t.schedules).where(t.schedules.c.task == task))
            conn.execute(sa.insert(t.schedules).values(task=task, interval_days=interval_days))
    return interval_days


def record_review(
    registry: Any, version: str, *, reviewer: str, checklist: dict[str, str], outcome: str
) -> dict[str, Any]:
    """Return the review recorded against ``version`` (clinical or compliance role).

    ``checklist`` must answer every item of :data:`CHECKLIST`; ``outcome`` is
    ``continue``, ``continue_with_actions`` or ``suspend`` (which also suspends).
    """
    with registry.governed(action="review", actor=reviewer, version=version):
        rel = registry.get(version)
        role = require_role(
            person=reviewer,
            held=registry.roles_of(reviewer),
            allowed=("clinical", "compliance"),
            action=f"review of {version}",
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
        now = registry.now()
        with registry.engine.begin() as conn:
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
            registry.record(
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
        registry.suspend(version, actor=reviewer, why="periodic review outcome: suspend")
    return {
        "version": version,
        "reviewer": reviewer,
        "role": role,
        "outcome": outcome,
        "checklist": checklist,
        "time": now,
    }


def review_status(registry: Any, version: str) -> dict[str, Any]:
    """Return the last review, the interval and the due date of ``version``."""
    rel = registry.get(version)
    with registry.engine.connect() as conn:
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
        h["time"] for h in registry.history(version) if h["to"] in ("approved_limited", "approved")
    ]
    start = last.time if last else (approved[0] if approved else None)
    due = _time(start) + timedelta(days=int(interval)) if start else None
    now = registry.clock.now()
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


def overdue_reviews(registry: Any, *, actor: str = "scheduler") -> list[dict[str, Any]]:
    """Return the overdue reviews of releases in service; each raises an ``alert`` ledger event."""
    out = []
    for rel in registry.list():
        if rel.status not in ("approved_limited", "approved"):
            continue
        status = review_status(registry, rel.version)
        if status["overdue"]:
            registry.record(
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
