"""The escalation queue (R-H2) and one decision per escalated case (R-H1).

A *case* is one prediction the Predictor escalated: an ``inference`` ledger entry
followed by an ``escalation`` entry (scope ``case``) carrying the same request id.
The queue lists cases newest first with their age and why they were escalated, and
keeps a case *open* until a clinician accepts or overrides it. The decision is an
``override`` ledger entry written by :func:`serving.oversight.record_override`, so it
carries the explanation, probability, set and flags as they were shown.

A case takes one decision: :func:`decide_case` refuses a second ``accept`` or
``override`` on the same prediction with :class:`~clinical_mlops.errors.CaseAlreadyDecided`
naming the decision already recorded, so a double-submitted form or a replayed post
records nothing twice. ``escalate`` (send to senior review) may precede the decision
and keeps the case open.

Everything is read from the ledger: nothing about a case is stored elsewhere, and a
case of an erased patient (payload no longer readable) leaves the queue. Patient
identifiers never appear here: cases name the pseudonym; :func:`identifier_of` is
the one way back to the identifier, for the roles that need it.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from clinical_mlops.errors import CaseAlreadyDecided, PredictionNotFound
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.serving.oversight import record_override
from clinical_mlops.serving.predictor import ESCALATE_ON, FLAGS

__all__ = [
    "DECISIVE_ACTIONS",
    "ESCALATION_REASONS",
    "Case",
    "CaseState",
    "Decision",
    "case",
    "decide_case",
    "escalated_cases",
    "identifier_of",
]

CaseState = Literal["open", "decided", "all"]
#: actions that close a case; ``escalate`` keeps it open (sent to senior review)
DECISIVE_ACTIONS = ("accept", "override")
#: escalation flag -> the words the escalation entry uses (see ``serving.predictor.ESCALATE_ON``)
ESCALATION_REASONS: dict[str, str] = dict(ESCALATE_ON)
_WORDS_TO_FLAG = {words: flag for flag, words in ESCALATE_ON.items()}
_DECIDE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decision:
    """A clinician's response to a case, as recorded in the ledger."""

    seq: int
    time: str
    actor: str
    action: str
    reason_code: str | None
    reason: str | None
    comment: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class Case:
    """One escalated prediction and what has been decided on it.

    ``prediction_seq`` (the inference entry) identifies the case everywhere: the
    override entry, the API's ``prediction_id`` and the console's URL.
    """

    prediction_seq: int
    escalation_seq: int
    escalated_at: str
    age_seconds: float
    reasons: list[str]
    reason_flags: list[str]
    pseudonym: str
    release: str | None
    model_version: str
    site: str | None
    mode: str | None
    probability: float | None
    threshold: float | None
    conformal_set: list[str]
    coverage: float | None
    flags: list[str]
    completeness: float | None
    contributions: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    purpose: str | None = None
    requester: str | None = None
    decisions: list[Decision] = field(default_factory=list)

    @property
    def decision(self) -> Decision | None:
        """Return the decision that closed the case (accept or override), if any."""
        return next((d for d in self.decisions if d.action in DECISIVE_ACTIONS), None)

    @property
    def state(self) -> Literal["open", "decided"]:
        return "decided" if self.decision else "open"

    @property
    def sent_to_senior_review(self) -> bool:
        return any(d.action == "escalate" for d in self.decisions)

    @property
    def flag_words(self) -> list[tuple[str, str]]:
        """Return (flag, what it tells the clinician) for each flag of the prediction."""
        return [(f, FLAGS.get(f, f)) for f in self.flags]

    def to_json(self) -> dict[str, Any]:
        return {
            "prediction_seq": self.prediction_seq,
            "escalation_seq": self.escalation_seq,
            "escalated_at": self.escalated_at,
            "age_seconds": self.age_seconds,
            "reasons": self.reasons,
            "reason_flags": self.reason_flags,
            "pseudonym": self.pseudonym,
            "release": self.release,
            "model_version": self.model_version,
            "site": self.site,
            "mode": self.mode,
            "probability": self.probability,
            "threshold": self.threshold,
            "conformal_set": self.conformal_set,
            "coverage": self.coverage,
            "flags": self.flags,
            "completeness": self.completeness,
            "contributions": self.contributions,
            "state": self.state,
            "sent_to_senior_review": self.sent_to_senior_review,
            "decisions": [d.to_json() for d in self.decisions],
        }


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _rows(ledger: Ledger, query: sa.Select[Any]) -> list[Any]:
    with ledger.store.engine.connect() as conn:
        return list(conn.execute(query))


def _decisions(
    ledger: Ledger, *, since_seq: int, subjects: set[str] | None
) -> dict[int, list[Decision]]:
    """Return prediction seq -> decisions (override entries), oldest first."""
    query = (
        sa.select(entries.c.seq, entries.c.time, entries.c.actor)
        .where(entries.c.type == "override", entries.c.seq > since_seq)
        .order_by(entries.c.seq)
    )
    if subjects is not None:
        if not subjects:
            return {}
        query = query.where(entries.c.subject.in_(sorted(subjects)))
    out: dict[int, list[Decision]] = defaultdict(list)
    for row in _rows(ledger, query):
        view = ledger.read(int(row.seq))
        if view.payload is None:
            continue
        p = view.payload
        out[int(p["prediction_seq"])].append(
            Decision(
                seq=int(row.seq),
                time=str(row.time),
                actor=str(row.actor),
                action=str(p.get("action")),
                reason_code=p.get("reason_code"),
                reason=p.get("reason"),
                comment=p.get("comment"),
            )
        )
    return out


def _entries_before(ledger: Ledger, escalation_seqs: list[int]) -> dict[int, Any]:
    """Return seq -> (seq, type, subject) of the entry just before each escalation."""
    wanted = sorted({s - 1 for s in escalation_seqs if s > 0})
    out: dict[int, Any] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for row in _rows(
            ledger,
            sa.select(entries.c.seq, entries.c.type, entries.c.subject).where(
                entries.c.seq.in_(chunk)
            ),
        ):
            out[int(row.seq)] = row
    return out


def _inference_before(
    ledger: Ledger, escalation: Any, request_id: str
) -> tuple[int, dict[str, Any]] | None:
    """Return (seq, payload) of the inference an escalation entry follows, if readable.

    The Predictor writes the escalation right after its inference in one batch, so
    the entry before it is checked first; an older ledger layout falls back to a
    search by subject and request id.
    """
    seq = int(escalation.seq) - 1
    rows = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.type, entries.c.subject).where(entries.c.seq == seq),
    )
    candidates = [seq] if rows and rows[0].type == "inference" else []
    if not candidates or rows[0].subject != escalation.subject:
        candidates = [
            int(r.seq)
            for r in _rows(
                ledger,
                sa.select(entries.c.seq)
                .where(
                    entries.c.type == "inference",
                    entries.c.subject == escalation.subject,
                    entries.c.seq < escalation.seq,
                )
                .order_by(entries.c.seq.desc())
                .limit(50),
            )
        ]
    for candidate in candidates:
        view = ledger.read(candidate)
        if view.payload is not None and view.payload.get("request_id") == request_id:
            return candidate, view.payload
    return None


def _case(
    escalation: Any,
    esc_payload: dict[str, Any],
    seq: int,
    inf: dict[str, Any],
    *,
    now: datetime,
    decisions: Iterable[Decision],
) -> Case:
    reasons = [r.strip() for r in str(esc_payload.get("reason", "")).split(";") if r.strip()]
    context = inf.get("context") or {}
    return Case(
        prediction_seq=seq,
        escalation_seq=int(escalation.seq),
        escalated_at=str(escalation.time),
        age_seconds=max(0.0, (now - _parse_time(str(escalation.time))).total_seconds()),
        reasons=reasons,
        reason_flags=[_WORDS_TO_FLAG[r] for r in reasons if r in _WORDS_TO_FLAG],
        pseudonym=str(escalation.subject),
        release=inf.get("release"),
        model_version=str(inf.get("model_version")),
        site=context.get("site"),
        mode=inf.get("mode"),
        probability=inf.get("probability"),
        threshold=inf.get("threshold"),
        conformal_set=list(inf.get("conformal_set") or []),
        coverage=inf.get("coverage"),
        flags=list(inf.get("flags") or []),
        completeness=inf.get("completeness"),
        contributions=list(inf.get("explanation_shown") or []),
        inputs=dict(inf.get("inputs") or {}),
        purpose=inf.get("purpose"),
        requester=inf.get("requester"),
        decisions=list(decisions),
    )


def escalated_cases(
    ledger: Ledger,
    *,
    now: datetime,
    state: CaseState = "open",
    reason: str | None = None,
    site: str | None = None,
    release: str | None = None,
    min_age_hours: float | None = None,
    limit: int = 200,
) -> list[Case]:
    """Return the escalated cases matching the filters, newest first (at most ``limit``).

    ``reason`` is an escalation flag from :data:`ESCALATION_REASONS` (``empty_set``,
    ``ambiguous_set``, ``out_of_scope``); ``min_age_hours`` keeps cases waiting at
    least that long. Only per-case escalations are listed (model-wide escalations
    from monitoring are alerts, not cases); cases whose payload was erased or purged
    are left out.
    """
    if reason is not None and reason not in ESCALATION_REASONS:
        raise ValueError(
            f"unknown escalation reason {reason!r}; use one of {', '.join(ESCALATION_REASONS)}"
        )
    escalations = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.time, entries.c.subject)
        .where(entries.c.type == "escalation", entries.c.subject.is_not(None))
        .order_by(entries.c.seq.desc()),
    )
    if not escalations:
        return []
    decided = _decisions(ledger, since_seq=min(int(e.seq) for e in escalations) - 1, subjects=None)
    closed = {seq for seq, ds in decided.items() if any(d.action in DECISIVE_ACTIONS for d in ds)}
    before = _entries_before(ledger, [int(e.seq) for e in escalations])
    out: list[Case] = []
    for esc in escalations:
        if len(out) >= limit:
            break
        age_h = (now - _parse_time(str(esc.time))).total_seconds() / 3600.0
        if min_age_hours is not None and age_h < min_age_hours:
            continue
        # The state is known without opening any payload when the entry before the
        # escalation is its inference (as the Predictor writes them): skip early.
        guess = int(esc.seq) - 1
        prev = before.get(guess)
        known = prev is not None and prev.type == "inference" and prev.subject == esc.subject
        if state != "all" and known and (guess in closed) != (state == "decided"):
            continue
        view = ledger.read(int(esc.seq))
        if view.payload is None or view.payload.get("scope", "case") != "case":
            continue
        found = _inference_before(ledger, esc, str(view.payload.get("request_id")))
        if found is None:
            continue
        seq, inf = found
        item = _case(esc, view.payload, seq, inf, now=now, decisions=decided.get(seq, []))
        if state != "all" and item.state != state:
            continue
        if reason is not None and reason not in item.reason_flags:
            continue
        if site is not None and item.site != site:
            continue
        if release is not None and release not in (item.release, item.model_version):
            continue
        out.append(item)
    return out


def case(ledger: Ledger, prediction_seq: int, *, now: datetime) -> Case:
    """Return the case of prediction ``prediction_seq`` with every decision recorded on it.

    A prediction that was not escalated is returned as a case too (no reasons), so a
    clinician can respond to any shown recommendation; ``PredictionNotFound`` when
    the seq is not a readable inference record.
    """
    view = _inference_view(ledger, prediction_seq)
    subject = view.entry.subject
    payload = view.payload or {}
    following = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.time, entries.c.subject)
        .where(
            entries.c.type == "escalation",
            entries.c.subject == subject,
            entries.c.seq > prediction_seq,
        )
        .order_by(entries.c.seq)
        .limit(50),
    )
    esc_row, esc_payload = None, {}
    for row in following:
        esc = ledger.read(int(row.seq))
        if esc.payload is not None and esc.payload.get("request_id") == payload.get("request_id"):
            esc_row, esc_payload = row, esc.payload
            break
    decisions = _decisions(
        ledger, since_seq=prediction_seq, subjects={subject} if subject else set()
    ).get(prediction_seq, [])
    if esc_row is None:
        esc_row = _Row(seq=-1, time=view.entry.time, subject=subject)
    return _case(esc_row, esc_payload, prediction_seq, payload, now=now, decisions=decisions)


@dataclass(frozen=True)
class _Row:
    seq: int
    time: str
    subject: str | None


def _inference_view(ledger: Ledger, seq: int) -> Any:
    from clinical_mlops.errors import EntryNotFound

    try:
        view = ledger.read(seq)
    except EntryNotFound:
        raise PredictionNotFound(f"no prediction with audit seq {seq}") from None
    if view.entry.type != "inference":
        raise PredictionNotFound(
            f"audit seq {seq} is a {view.entry.type!r} entry, not a prediction"
        )
    if view.payload is None:
        raise PredictionNotFound(f"prediction {seq} is no longer readable ({view.status})")
    return view


def decide_case(
    ledger: Ledger,
    prediction_seq: int,
    *,
    action: str,
    actor: str,
    reason_code: str | None = None,
    comment: str | None = None,
    source: str = "console",
) -> Decision:
    """Return the decision recorded on case ``prediction_seq`` (one ``override`` ledger entry).

    Raises ``CaseAlreadyDecided`` when the case was already accepted or overridden
    (nothing is written), ``OverrideInvalid`` for an undeclared action or reason, and
    ``PredictionNotFound`` for a seq that is not a readable prediction. Decisions on
    one process are serialised, so two identical posts arriving together record one.
    """
    with _DECIDE_LOCK:
        view = _inference_view(ledger, prediction_seq)
        subject = view.entry.subject
        existing = _decisions(
            ledger, since_seq=prediction_seq, subjects={subject} if subject else set()
        ).get(prediction_seq, [])
        closing = next((d for d in existing if d.action in DECISIVE_ACTIONS), None)
        if closing is not None:
            raise CaseAlreadyDecided(
                f"prediction {prediction_seq} was already decided: {closing.action} by "
                f"{closing.actor} at {closing.time} (audit seq {closing.seq}); nothing was "
                "recorded again",
                decision=closing.to_json(),
            )
        if action == "escalate" and any(d.action == "escalate" for d in existing):
            first = next(d for d in existing if d.action == "escalate")
            raise CaseAlreadyDecided(
                f"prediction {prediction_seq} was already sent to senior review by "
                f"{first.actor} at {first.time} (audit seq {first.seq}); nothing was recorded again",
                decision=first.to_json(),
            )
        stored = record_override(
            ledger,
            prediction_seq=prediction_seq,
            action=action,
            actor=actor,
            reason_code=reason_code or None,
            comment=(comment or "").strip() or None,
            source=source,
        )
    return Decision(
        seq=int(stored["seq"]),
        time=str(stored["time"]),
        actor=actor,
        action=action,
        reason_code=stored.get("reason_code"),
        reason=stored.get("reason"),
        comment=stored.get("comment"),
    )


def identifier_of(ledger: Ledger, pseudonym: str) -> str | None:
    """Return the patient identifier behind ``pseudonym`` (None once erased or unknown).

    Only for roles that act on the patient (a clinician on a case): the console
    shows pseudonyms to everyone else.
    """
    from clinical_mlops.privacy.identity import subjects

    with ledger.vault.engine.connect() as conn:
        found = conn.execute(
            sa.select(subjects.c.identifier).where(subjects.c.pseudonym == pseudonym)
        ).scalar()
    return None if found is None else str(found)
