"""Periodic reviews (R-H3): a schedule per task, a checklist recorded against a release.

Default interval 90 days (quarterly), counted from the release's approval or its
last review. The checklist covers calibration, fairness, incidents and documentation
completeness; each item is answered ``ok`` or with a finding. An overdue review
raises an ``alert`` ledger event (``review_overdue``).

A review is recorded against the live review pack of its period
(:mod:`clinical_mlops.monitoring.live_review`): the pack is stored with the review
(``gov_review_packs``) and its SHA-256 named in the ``review`` ledger entry. The pack
pre-assesses each checklist item; an item it marks *breached* cannot be answered
with a bare acknowledgement (:data:`BARE_ANSWERS`, compared ignoring case,
punctuation and spacing): the reviewer writes what was found and what follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.errors import GovernanceError
from clinical_mlops.hashing import canonical_json, sha256_json
from clinical_mlops.vocabulary import Role

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.governance import schema as t

__all__ = [
    "BARE_ANSWERS",
    "CHECKLIST",
    "DEFAULT_INTERVAL_DAYS",
    "overdue_reviews",
    "record_review",
    "review_pack_of",
    "review_period",
    "review_status",
    "set_schedule",
]

DEFAULT_INTERVAL_DAYS = 90
CHECKLIST = ("calibration", "fairness", "incidents", "documentation")
#: answers that acknowledge without saying anything: refused for an item the pack breached
BARE_ANSWERS = frozenset(
    (
        "ok",
        "okay",
        "fine",
        "good",
        "yes",
        "no",
        "none",
        "nil",
        "na",
        "complete",
        "noissues",
        "nothingfound",
        "nofinding",
        "nofindings",
        "asexpected",
        "acceptable",
        "checked",
        "done",
    )
)


def _bare(answer: str) -> bool:
    """True when ``answer`` is only an acknowledgement (``OK.``, ``n/a``, ``No issues``...)."""
    return re.sub(r"[\W_]+", "", answer.lower()) in BARE_ANSWERS


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


def review_period(governance: Governance, version: str, *, as_of: datetime) -> dict[str, str]:
    """Return the start of ``version``'s review period at ``as_of``: its last review, else approval.

    ``{"since": ISO time, "since_what": "last review" | "approval"}``; the last review
    is the newest recorded before ``as_of``. ``GovernanceError`` for a release not
    approved by ``as_of`` (it has had no period in service to review).
    """
    end = as_of.timestamp()
    with governance.engine.connect() as conn:
        times = (
            conn.execute(sa.select(t.reviews.c.time).where(t.reviews.c.version == version))
            .scalars()
            .all()
        )
    before = sorted(x for x in times if _time(x).timestamp() < end)
    if before:
        return {"since": before[-1], "since_what": "last review"}
    approved = [
        h["time"]
        for h in governance.registry.history(version)
        if h["to"] in ("approved_limited", "approved") and _time(h["time"]).timestamp() <= end
    ]
    if not approved:
        raise GovernanceError(
            f"review of {version}: not approved by {as_of.isoformat()}; a periodic review "
            "covers a release's time in service"
        )
    return {"since": approved[0], "since_what": "approval"}


def _check_pack(version: str, checklist: dict[str, str], pack: dict[str, Any]) -> None:
    """Refuse a pack of another release and a breached item answered with a bare "ok"."""
    if pack.get("release") != version:
        raise GovernanceError(
            f"review of {version}: the review pack is of {pack.get('release')!r}, not {version}"
        )
    items = pack.get("checklist") or {}
    bare = [
        item
        for item in CHECKLIST
        if (items.get(item) or {}).get("breached") and _bare(str(checklist.get(item, "")))
    ]
    if bare:
        why = "; ".join(f"{item}: {' / '.join(items[item]['findings'][:3])}" for item in bare)
        raise GovernanceError(
            f"review of {version}: the live figures breach {', '.join(bare)}, so a bare "
            f"acknowledgement is not an answer; write what was found and what follows ({why})"
        )


def record_review(
    governance: Governance,
    version: str,
    *,
    reviewer: str,
    checklist: dict[str, str],
    outcome: str,
    identity: VerifiedIdentity,
    pack: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the review recorded against ``version`` (clinical or compliance role).

    ``checklist`` must answer every item of :data:`CHECKLIST`; ``outcome`` is
    ``continue``, ``continue_with_actions`` or ``suspend`` (which also suspends).
    ``pack`` is the live review pack of the period
    (:func:`clinical_mlops.monitoring.live_review.review_pack`), or a function computing
    it once the reviewer and the release are checked: stored with the review, its hash
    in the ledger entry; an item it breached answered with a bare "ok" is refused
    (``GovernanceError``; nothing recorded). The returned review holds the pack.
    ``identity`` proves the reviewer and is stored with the review's ledger entry.
    """
    with governance.governed(action="review", actor=reviewer, version=version):
        proof = governance.bind(identity, reviewer, action=f"review of {version}")
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
        digest = None
        breached: list[str] = []
        if callable(pack):
            pack = pack()
        if pack is not None:
            _check_pack(rel.version, checklist, pack)
            digest = sha256_json(pack)
            breached = [
                item
                for item in CHECKLIST
                if ((pack.get("checklist") or {}).get(item) or {}).get("breached")
            ]
        now = governance.now()
        with governance.engine.begin() as conn:
            review_id = conn.execute(
                sa.insert(t.reviews)
                .values(
                    version=version,
                    reviewer=reviewer,
                    role=role,
                    checklist=canonical_json(checklist).decode(),
                    outcome=outcome,
                    time=now,
                )
                .returning(t.reviews.c.id)
            ).scalar_one()
            live: dict[str, Any] = {}
            if pack is not None and digest is not None:
                conn.execute(
                    sa.insert(t.review_packs).values(
                        review_id=review_id,
                        version=version,
                        sha256=digest,
                        as_of=str(pack.get("as_of")),
                        pack=canonical_json(pack).decode(),
                    )
                )
                live = {
                    "review_pack_sha256": digest,
                    "review_period": {"since": pack.get("since"), "as_of": pack.get("as_of")},
                    "breached": breached,
                }
            governance.record(
                type="review",
                actor=reviewer,
                payload={
                    "model_version": version,
                    "outcome": outcome,
                    "role": role,
                    "checklist": checklist,
                    **live,
                    "identity": proof,
                },
            )
    if outcome == "suspend" and rel.status in ("approved_limited", "approved"):
        governance.suspend(
            version, actor=reviewer, why="periodic review outcome: suspend", identity=identity
        )
    return {
        "version": version,
        "reviewer": reviewer,
        "role": role,
        "outcome": outcome,
        "checklist": checklist,
        "time": now,
        "review_pack_sha256": digest,
        "breached": breached,
        "pack": pack,
    }


def review_pack_of(governance: Governance, version: str) -> dict[str, Any] | None:
    """Return the pack stored with ``version``'s last review and its hash (None: none stored)."""
    with governance.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.review_packs)
            .where(t.review_packs.c.version == version)
            .order_by(t.review_packs.c.review_id.desc())
        ).first()
    if row is None:
        return None
    return {"sha256": row.sha256, "as_of": row.as_of, "pack": json.loads(row.pack)}


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
        digest = (
            None
            if last is None
            else conn.execute(
                sa.select(t.review_packs.c.sha256).where(t.review_packs.c.review_id == last.id)
            ).scalar()
        )
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
            "review_pack_sha256": digest,
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
