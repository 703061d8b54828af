"""The escalation queue (R-H2) and one decision per escalated case (R-H1).

A *case* is one prediction routed to human review by an ``escalation`` ledger
entry of scope ``case``. Two writers route cases: the Predictor, right after the
``inference`` entry in the same batch (same time, same subject, same request id),
when the prediction itself is doubtful (``vocabulary.ESCALATE_ON``); and
monitoring, later, naming the prediction's audit seq, when an alert on the release
routes its recent cases (``monitoring.escalation``). A prediction routed both ways
is one case with both reasons; it has waited since its first escalation.

The queue lists cases by their newest escalation, with their age and why, and
keeps a case *open* until a clinician accepts or overrides it. The decision is an
``override`` ledger entry written by :func:`governance.oversight.record_overrides`, so it
carries the explanation, probability, set and flags as they were shown.

A case takes one decision: :func:`clinical_mlops.application.governance.decide_case` — the
one function the console, ``POST /v1/overrides`` and CDS Hooks feedback all call — refuses a second ``accept``
or ``override`` on the same prediction with
:class:`~clinical_mlops.errors.CaseAlreadyDecided` naming the decision already
recorded, so a double-submitted form, a replayed post or the same decision arriving
from two front ends at once records nothing twice. The rule is the ledger store's
(a unique key per prediction, ``ledger.claims``), not a check before writing, so it
holds across threads and processes. ``escalate`` (send to senior review) may precede
the decision, once, and keeps the case open. A decision is changed only by an
explicit correction with a reason (``correction=True``), which names the decision it
corrects; the case shows the newest.

Everything is read from the ledger: nothing about a case is stored elsewhere, and a
case of an erased patient (payload no longer readable) leaves the queue. Patient
identifiers never appear here: cases name the pseudonym; :func:`identifier_of` is
the one way back to the identifier, for the roles that need it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from clinical_mlops.errors import PredictionNotFound, SubjectErased, ValueInvalid
from clinical_mlops.governance.oversight import DECISIVE_ACTIONS
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.vocabulary import ESCALATE_ON, FLAGS

__all__ = [
    "DECISIVE_ACTIONS",
    "ESCALATION_REASONS",
    "Case",
    "CaseState",
    "Decision",
    "case",
    "escalated_cases",
    "identifier_of",
]

CaseState = Literal["open", "decided", "all"]
#: why a case was escalated -> words: the Predictor's flags (``vocabulary.ESCALATE_ON``)
#: and a monitoring alert on the release (``monitoring.escalation.escalate_cases``)
ESCALATION_REASONS: dict[str, str] = dict(ESCALATE_ON) | {
    "monitoring_alert": "monitoring alert on the release"
}
_WORDS_TO_FLAG = {words: flag for flag, words in ESCALATE_ON.items()}


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
    corrects: int | None = None
    correction_reason: str | None = None
    #: the override entry's payload with its seq and time, as ``POST /v1/overrides`` returns it
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "comment": self.comment,
            "corrects": self.corrects,
            "correction_reason": self.correction_reason,
        }


@dataclass(frozen=True)
class Case:
    """One escalated prediction and what has been decided on it.

    ``prediction_seq`` (the inference entry) identifies the case everywhere: the
    override entry, the API's ``prediction_id`` and the console's URL.
    """

    prediction_seq: int
    escalation_seq: int  # the first escalation of the case; -1 when it was never escalated
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
        """Return the decision that closed the case (accept or override) as last corrected."""
        first = next(
            (d for d in self.decisions if d.action in DECISIVE_ACTIONS and d.corrects is None),
            None,
        )
        correction = {d.corrects: d for d in self.decisions if d.corrects is not None}
        while first is not None and first.seq in correction:
            first = correction[first.seq]
        return first

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
                corrects=p.get("corrects"),
                correction_reason=p.get("correction_reason"),
            )
        )
    return out


def _neighbours(ledger: Ledger, seqs: Iterable[int]) -> dict[int, Any]:
    """Return seq -> (seq, type, subject, time, actor) of the entries ``seqs``, in chunks."""
    wanted = sorted(set(seqs))
    out: dict[int, Any] = {}
    for i in range(0, len(wanted), 500):
        query = sa.select(
            entries.c.seq, entries.c.type, entries.c.subject, entries.c.time, entries.c.actor
        )
        for row in _rows(ledger, query.where(entries.c.seq.in_(wanted[i : i + 500]))):
            out[int(row.seq)] = row
    return out


def _same_batch(inference: Any, escalation: Any) -> bool:
    """True when ``escalation`` is the Predictor's, written with ``inference`` in one batch.

    The Predictor appends a case's escalation right after its inference, in the same
    transaction (same time) and under the same actor (the requester); an escalation
    from monitoring has its own actor.
    """
    return (
        inference is not None
        and inference.type == "inference"
        and inference.subject == escalation.subject
        and inference.time == escalation.time
        and inference.actor == escalation.actor
    )


def _reasons(payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Return (reasons in words, reason flags) of one escalation payload."""
    if payload.get("alert_id"):
        return [str(payload.get("reason", "monitoring alert"))], ["monitoring_alert"]
    words = [r.strip() for r in str(payload.get("reason", "")).split(";") if r.strip()]
    return words, [_WORDS_TO_FLAG[w] for w in words if w in _WORDS_TO_FLAG]


def _prediction_of(ledger: Ledger, escalation: Any, payload: dict[str, Any]) -> int | None:
    """Return the audit seq of the prediction an escalation routes (None when unreadable)."""
    if payload.get("prediction_seq") is not None:
        return int(payload["prediction_seq"])
    request_id = payload.get("request_id")
    for row in _rows(
        ledger,
        sa.select(entries.c.seq)
        .where(
            entries.c.type == "inference",
            entries.c.subject == escalation.subject,
            entries.c.seq < escalation.seq,
        )
        .order_by(entries.c.seq.desc())
        .limit(50),
    ):
        view = ledger.read(int(row.seq))
        if view.payload is not None and view.payload.get("request_id") == request_id:
            return int(row.seq)
    return None


@dataclass
class _Routing:
    """The escalations of one prediction, newest first."""

    rows: list[Any] = field(default_factory=list)
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)


def _route_all(ledger: Ledger, escalations: list[Any]) -> dict[int, _Routing]:
    """Return prediction seq -> its escalations (in the order of ``escalations``).

    A Predictor escalation is recognised without opening its payload (same batch as
    the inference just before it); a monitoring escalation is opened to read the
    prediction it names.
    """
    before = _neighbours(ledger, [int(e.seq) - 1 for e in escalations if int(e.seq) > 0])
    routed: dict[int, _Routing] = {}
    for esc in escalations:
        seq = int(esc.seq)
        if _same_batch(before.get(seq - 1), esc):
            routed.setdefault(seq - 1, _Routing()).rows.append(esc)
            continue
        view = ledger.read(seq)
        if view.payload is None or view.payload.get("scope", "case") != "case":
            continue
        target = _prediction_of(ledger, esc, view.payload)
        if target is not None:
            item = routed.setdefault(target, _Routing())
            item.rows.append(esc)
            item.payloads[seq] = view.payload
    return routed


def _case(
    ledger: Ledger,
    prediction_seq: int,
    inference: Any,
    routing: _Routing,
    *,
    now: datetime,
    decisions: Iterable[Decision],
) -> Case | None:
    """Return the case, or None when an escalation payload can no longer be read."""
    reasons: list[str] = []
    flags: list[str] = []
    for row in reversed(routing.rows):  # oldest first
        payload = routing.payloads.get(int(row.seq))
        if payload is None:
            payload = ledger.read(int(row.seq)).payload
            if payload is None:
                return None
        words, keys = _reasons(payload)
        reasons += [w for w in words if w not in reasons]
        flags += [k for k in keys if k not in flags]
    inf = inference.payload or {}
    context = inf.get("context") or {}
    first = routing.rows[-1] if routing.rows else None
    since = str(first.time) if first is not None else inference.entry.time
    return Case(
        prediction_seq=prediction_seq,
        escalation_seq=int(first.seq) if first is not None else -1,
        escalated_at=since,
        age_seconds=max(0.0, (now - _parse_time(since)).total_seconds()),
        reasons=reasons,
        reason_flags=flags,
        pseudonym=str(inference.entry.subject),
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
    """Return the escalated cases matching the filters, newest escalation first (at most ``limit``).

    ``reason`` is a key of :data:`ESCALATION_REASONS` (``empty_set``,
    ``ambiguous_set``, ``out_of_scope``, ``monitoring_alert``); ``min_age_hours``
    keeps cases waiting at least that long (since their first escalation). Only
    per-case escalations are listed (a release-wide escalation is an alert, not a
    case); cases whose payloads were erased or purged are left out.
    """
    if reason is not None and reason not in ESCALATION_REASONS:
        raise ValueInvalid(
            f"reason: unknown escalation reason {reason!r}; use one of {', '.join(ESCALATION_REASONS)}"
        )
    escalations = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.time, entries.c.subject, entries.c.actor)
        .where(entries.c.type == "escalation", entries.c.subject.is_not(None))
        .order_by(entries.c.seq.desc()),
    )
    if not escalations:
        return []
    routed = _route_all(ledger, escalations)
    decided = _decisions(ledger, since_seq=min(routed, default=0) - 1, subjects=None)
    closed = {seq for seq, ds in decided.items() if any(d.action in DECISIVE_ACTIONS for d in ds)}
    out: list[Case] = []
    for seq, routing in routed.items():  # newest escalation first
        if len(out) >= limit:
            break
        if state != "all" and (seq in closed) != (state == "decided"):
            continue
        waited = (now - _parse_time(str(routing.rows[-1].time))).total_seconds() / 3600.0
        if min_age_hours is not None and waited < min_age_hours:
            continue
        inference = ledger.read(seq)
        if inference.entry.type != "inference" or inference.payload is None:
            continue
        item = _case(ledger, seq, inference, routing, now=now, decisions=decided.get(seq, []))
        if item is None:
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
    """Return the case of prediction ``prediction_seq`` with every escalation and decision.

    A prediction that was not escalated is returned as a case too (no reasons), so a
    clinician can respond to any shown recommendation; ``PredictionNotFound`` when
    the seq is not a readable inference record, ``SubjectErased`` when its patient was
    erased (nothing of theirs is shown).
    """
    view = _inference_view(ledger, prediction_seq)
    subject = view.entry.subject
    later = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.time, entries.c.subject, entries.c.actor)
        .where(
            entries.c.type == "escalation",
            entries.c.subject == subject,
            entries.c.seq > prediction_seq,
        )
        .order_by(entries.c.seq.desc()),
    )
    routing = _route_all(ledger, later).get(prediction_seq, _Routing())
    decisions = _decisions(
        ledger, since_seq=prediction_seq, subjects={subject} if subject else set()
    ).get(prediction_seq, [])
    found = _case(ledger, prediction_seq, view, routing, now=now, decisions=decisions)
    if found is None:
        raise PredictionNotFound(
            f"prediction {prediction_seq}: an escalation is no longer readable"
        )
    return found


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
    if view.status == "erased":
        raise SubjectErased(
            f"the patient of case {seq} was erased (R-A4): their data are destroyed and "
            "are not shown; nothing can be decided or recorded on this case"
        )
    if view.payload is None:
        raise PredictionNotFound(f"prediction {seq} is no longer readable ({view.status})")
    return view


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
