"""The escalation queue (R-H2) and one decision per escalated case (R-H1).

A *case* is what a clinician reviews: the predictions of one patient routed to human
review by ``escalation`` ledger entries of scope ``case``. Two writers route
predictions: the Predictor, right after the ``inference`` entry in the same batch (same
time, same subject, same request id), when the prediction meets a review condition of
the release's escalation policy within its budget (``vocabulary.REVIEW_REASONS``); and
monitoring, later, naming the prediction's audit seq, when an alert on the release routes
its recent cases (``monitoring.escalation``). A prediction routed both ways is in its
case once, with both reasons.

One case per patient and encounter while it is open: a prediction escalated for the
same patient and the same EHR encounter (the encounter pseudonym its inference record
carries) as a case not yet decided joins that case instead of opening another, so an
EHR that scores a patient again and again (CDS Hooks on every chart view, a batch every
hour) leaves one case to review. The case shows its newest prediction — its risk,
set, flags and explanation — with the reasons of all of them, and has waited since its
first escalation. A prediction escalated after the case was decided opens a new case.
A prediction without an encounter is a case of its own. Which case a prediction is in
depends only on the entries before its first escalation, in ledger order, so it never
changes once written, and two writers escalating the same encounter at once still make
one case.

A case is named by the audit seq of its first prediction (:attr:`Case.prediction_seq`):
the console's URL, the key of its decision. Deciding it by the seq of any of its
predictions decides the one case. The queue lists cases by their newest escalation, with
their age, why and how many predictions they hold, and keeps a case *open* until a
clinician accepts or overrides it. The decision is an ``override`` ledger entry written by
:func:`governance.oversight.record_overrides` naming the prediction shown (its
explanation, probability, set and flags as they were shown) and the case (``case_seq``).

A case takes one decision: :func:`clinical_mlops.application.governance.decide_case` — the
one function the console, ``POST /v1/overrides`` and CDS Hooks feedback all call — refuses a second ``accept``
or ``override`` on the same case with
:class:`~clinical_mlops.errors.CaseAlreadyDecided` naming the decision already
recorded, so a double-submitted form, a replayed post or the same decision arriving
from two front ends at once records nothing twice. The rule is the ledger store's
(a unique key per case, ``ledger.claims``), not a check before writing, so it
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

from clinical_mlops.errors import EntryNotFound, PredictionNotFound, SubjectErased, ValueInvalid
from clinical_mlops.ledger import EntryView, Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.vocabulary import FLAGS, REVIEW_REASONS

__all__ = [
    "DECISIVE_ACTIONS",
    "DEFAULT_SORT",
    "ESCALATION_REASONS",
    "QUEUE_SORTS",
    "Case",
    "CaseQueue",
    "CaseState",
    "Decision",
    "case",
    "case_queue",
    "case_seq_of",
    "case_spans",
    "check_sort",
    "escalated_cases",
    "identifier_of",
    "next_case",
]

CaseState = Literal["open", "decided", "all"]
#: actions that decide a case; ``escalate`` keeps it open (sent to senior review)
DECISIVE_ACTIONS = ("accept", "override")
#: why a case was escalated -> words: the review conditions of the release's escalation
#: policy (``vocabulary.REVIEW_REASONS``) and a monitoring alert on the release
#: (``monitoring.escalation.escalate_cases``)
ESCALATION_REASONS: dict[str, str] = {str(k): v for k, v in REVIEW_REASONS.items()} | {
    "monitoring_alert": "monitoring alert on the release"
}
_WORDS_TO_FLAG = {words: str(flag) for flag, words in REVIEW_REASONS.items()}
#: how a queue can be ordered -> what comes first (ties: longest waiting, then oldest case)
QUEUE_SORTS: dict[str, str] = {
    "risk": "highest estimated risk (the calibrated probability of the newest prediction) first",
    "waiting": "longest waiting (since the case's first escalation) first",
    "reason": "grouped by why the case was escalated, then highest risk first",
    "newest": "newest escalation first",
}
#: the order a clinician works the queue in unless they choose another: the sickest first
DEFAULT_SORT = "risk"


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
    """One case: the escalated predictions of a patient and encounter, and what was decided.

    ``prediction_seq`` (the first prediction's inference entry) identifies the case
    everywhere: the key of its decision, the console's URL; ``predictions`` lists the
    audit seqs of all of its predictions, oldest first, any of which decides it. The
    risk, set, flags, explanation and inputs are those of the newest prediction
    (``latest_seq``); the reasons are those of all of them.
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
    predictions: list[int] = field(default_factory=list)
    #: the pseudonym of the EHR encounter the case is about (None: one prediction, no encounter)
    encounter: str | None = None
    #: the seq of the newest escalation of the case (the queue's order)
    newest_escalation_seq: int = -1

    @property
    def latest_seq(self) -> int:
        """Return the audit seq of the newest prediction of the case (the one shown)."""
        return self.predictions[-1] if self.predictions else self.prediction_seq

    @property
    def prediction_count(self) -> int:
        return max(1, len(self.predictions))

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
            "predictions": self.predictions,
            "prediction_count": self.prediction_count,
            "latest_prediction_seq": self.latest_seq,
            "encounter": self.encounter,
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
    """Return case seq -> decisions (override entries), oldest first.

    A decision names its case (``case_seq``); one recorded before cases grouped
    predictions names its prediction, which :func:`_group` maps to the case.
    """
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
        target = p.get("case_seq")
        out[int(p["prediction_seq"] if target is None else target)].append(
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


def _first_seq(routing: _Routing) -> int:
    """Return the seq of the first escalation of a prediction."""
    return int(routing.rows[-1].seq)


def _encounter(view: EntryView) -> str | None:
    """Return the encounter pseudonym an inference record carries (None without one)."""
    found = (view.payload or {}).get("encounter")
    return found if isinstance(found, str) and found else None


def _group(
    routed: dict[int, _Routing], views: dict[int, EntryView], decided: dict[int, list[Decision]]
) -> dict[int, list[int]]:
    """Return case seq -> the seqs of its predictions, in the order they joined it.

    Predictions are taken in the order of their first escalation: one escalated for a
    patient and encounter whose case is open (no accept or override recorded before this
    escalation) joins that case; any other opens one. A prediction without an encounter,
    or decided on its own before it was escalated, is a case of its own. Only the
    predictions in ``views`` (readable inference records) are grouped.
    """
    closing: dict[int, int] = {}
    for target, ds in decided.items():
        seqs = [d.seq for d in ds if d.action in DECISIVE_ACTIONS]
        if seqs:
            closing[target] = min(seqs)
    cases: dict[int, list[int]] = {}
    open_case: dict[tuple[str, str], int] = {}
    for seq in sorted((s for s in routed if s in views), key=lambda s: _first_seq(routed[s])):
        view, first = views[seq], _first_seq(routed[seq])
        encounter = _encounter(view)
        own = closing.get(seq)
        if encounter is None or (own is not None and own < first):
            cases[seq] = [seq]
            continue
        key = (str(view.entry.subject), encounter)
        held = open_case.get(key)
        if held is not None:
            # decisions recorded before cases grouped predictions name a member, not the case
            closed = [closing[m] for m in cases[held] if m in closing]
            if closed and min(closed) < first:
                held = None
        if held is None:
            cases[seq] = [seq]
            open_case[key] = seq
        else:
            cases[held].append(seq)
    return cases


@dataclass
class _Cases:
    """The cases built from a set of escalations, with what they were built from."""

    routed: dict[int, _Routing]
    views: dict[int, EntryView]
    decided: dict[int, list[Decision]]
    members: dict[int, list[int]]

    def decisions(self, members: list[int]) -> list[Decision]:
        """Return the decisions of the case of ``members``, oldest first."""
        found = {d.seq: d for m in members for d in self.decided.get(m, [])}
        return [found[k] for k in sorted(found)]

    def newest_escalation(self, members: list[int]) -> int:
        return max(int(self.routed[m].rows[0].seq) for m in members)

    def case_of(self, seq: int) -> int | None:
        """Return the seq of the case prediction ``seq`` is in (None: it is in none)."""
        return next((c for c, ms in self.members.items() if seq in ms), None)


def _load(ledger: Ledger, escalations: list[Any], *, subjects: set[str] | None) -> _Cases:
    """Return the cases of ``escalations`` (rows of escalation entries, newest first)."""
    routed = _route_all(ledger, escalations)
    views: dict[int, EntryView] = {}
    for seq in routed:
        try:
            view = ledger.read(seq)
        except EntryNotFound:
            continue
        if view.entry.type == "inference" and view.payload is not None:
            views[seq] = view
    decided = _decisions(ledger, since_seq=min(routed, default=0) - 1, subjects=subjects)
    return _Cases(routed, views, decided, _group(routed, views, decided))


def _case(
    ledger: Ledger,
    case_seq: int,
    members: list[int],
    views: dict[int, EntryView],
    routings: list[_Routing],
    *,
    now: datetime,
    decisions: Iterable[Decision],
) -> Case | None:
    """Return the case, or None when an escalation payload can no longer be read."""
    reasons: list[str] = []
    flags: list[str] = []
    rows = sorted((row for r in routings for row in r.rows), key=lambda row: int(row.seq))
    opened = {seq: payload for r in routings for seq, payload in r.payloads.items()}
    for row in rows:  # oldest first
        payload = opened.get(int(row.seq))
        if payload is None:
            payload = ledger.read(int(row.seq)).payload
            if payload is None:
                return None
        words, keys = _reasons(payload)
        reasons += [w for w in words if w not in reasons]
        flags += [k for k in keys if k not in flags]
    predictions = sorted(members)
    inference = views[predictions[-1]]  # the newest prediction is the one shown
    inf = inference.payload or {}
    context = inf.get("context") or {}
    first = rows[0] if rows else None
    since = str(first.time) if first is not None else views[case_seq].entry.time
    return Case(
        prediction_seq=case_seq,
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
        predictions=predictions,
        encounter=_encounter(views[case_seq]),
        newest_escalation_seq=int(rows[-1].seq) if rows else -1,
    )


@dataclass(frozen=True)
class CaseQueue:
    """The cases matching a queue's filters: the first ``limit`` of them and how many match."""

    cases: list[Case]
    total: int

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "cases": [c.to_json() for c in self.cases]}


def check_sort(sort: str) -> str:
    """Return ``sort`` when it is a key of :data:`QUEUE_SORTS`; ``ValueInvalid`` naming it otherwise."""
    if sort not in QUEUE_SORTS:
        raise ValueInvalid(
            f"sort: unknown queue order {sort!r}; use one of {', '.join(QUEUE_SORTS)}"
        )
    return sort


def _risk(item: Case) -> float:
    # a case whose prediction has no probability (never expected) sorts after every risk
    return -1.0 if item.probability is None else float(item.probability)


def _reason_rank(item: Case) -> int:
    """Return the position of the case's first reason in :data:`ESCALATION_REASONS`."""
    order = list(ESCALATION_REASONS)
    return min((order.index(f) for f in item.reason_flags if f in order), default=len(order))


def _order_key(sort: str) -> Any:
    """Return the sort key of ``sort``; ties go to the longest waiting case, then the oldest."""
    if sort == "risk":
        return lambda c: (-_risk(c), c.escalation_seq, c.prediction_seq)
    if sort == "waiting":
        return lambda c: (c.escalation_seq, c.prediction_seq)
    if sort == "reason":
        return lambda c: (_reason_rank(c), -_risk(c), c.escalation_seq, c.prediction_seq)
    return lambda c: (-c.newest_escalation_seq, c.prediction_seq)


def _matching(
    ledger: Ledger,
    *,
    now: datetime,
    state: CaseState,
    reason: str | None,
    site: str | None,
    release: str | None,
    min_age_hours: float | None,
) -> list[Case]:
    """Return every case matching the filters, in no particular order."""
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
    found = _load(ledger, escalations, subjects=None)
    out: list[Case] = []
    for seq, members in found.members.items():
        decisions = found.decisions(members)
        closed = any(d.action in DECISIVE_ACTIONS for d in decisions)
        if state != "all" and closed != (state == "decided"):
            continue
        first = min(_first_seq(found.routed[m]) for m in members)
        routings = [found.routed[m] for m in members]
        waited_since = next(r.time for rt in routings for r in rt.rows if int(r.seq) == first)
        waited = (now - _parse_time(str(waited_since))).total_seconds() / 3600.0
        if min_age_hours is not None and waited < min_age_hours:
            continue
        item = _case(ledger, seq, members, found.views, routings, now=now, decisions=decisions)
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


def case_queue(
    ledger: Ledger,
    *,
    now: datetime,
    state: CaseState = "open",
    reason: str | None = None,
    site: str | None = None,
    release: str | None = None,
    min_age_hours: float | None = None,
    limit: int = 200,
    sort: str = DEFAULT_SORT,
) -> CaseQueue:
    """Return the first ``limit`` cases matching the filters in the order ``sort`` names,
    and how many match in all.

    ``sort`` is a key of :data:`QUEUE_SORTS`: ``risk`` (the default: the highest
    calibrated probability of the case's newest prediction first), ``waiting`` (the
    longest waiting since the first escalation first), ``reason`` (grouped by the
    case's first reason in :data:`ESCALATION_REASONS` order, then highest risk) or
    ``newest`` (newest escalation first); ties go to the longest waiting case. Any
    other value is refused with ``ValueInvalid`` naming ``sort`` and the allowed values.
    ``reason`` is a key of :data:`ESCALATION_REASONS` (a review condition such as
    ``near_threshold`` or ``out_of_scope``, or ``monitoring_alert``) that any prediction
    of the case was escalated for; ``site`` and ``release`` match the case's newest
    prediction; ``min_age_hours`` keeps cases waiting at least that long (since their
    first escalation). Only per-case escalations are listed (a release-wide escalation
    is an alert, not a case); cases whose payloads were erased or purged are left out.
    """
    check_sort(sort)
    if limit < 0:
        raise ValueInvalid(f"limit: expected a number of cases >= 0, not {limit}")
    found = _matching(
        ledger,
        now=now,
        state=state,
        reason=reason,
        site=site,
        release=release,
        min_age_hours=min_age_hours,
    )
    found.sort(key=_order_key(sort))
    return CaseQueue(cases=found[:limit], total=len(found))


def next_case(
    ledger: Ledger,
    *,
    now: datetime,
    sort: str = DEFAULT_SORT,
    reason: str | None = None,
    site: str | None = None,
    release: str | None = None,
    skip: Iterable[int] = (),
) -> Case | None:
    """Return the first open case nobody has taken on, in the order ``sort`` names (None: none).

    The case a clinician should open next in the queue as they see it (same filters,
    same order). A case already sent to senior review is taken on — it waits for a
    senior, not for the next clinician — and is passed over; so are the cases named
    in ``skip`` (by any of their predictions), which a clinician passed over themselves.
    """
    passed = set(skip)
    found = _matching(
        ledger,
        now=now,
        state="open",
        reason=reason,
        site=site,
        release=release,
        min_age_hours=None,
    )
    found.sort(key=_order_key(check_sort(sort)))
    for item in found:
        if item.sent_to_senior_review or passed & {item.prediction_seq, *item.predictions}:
            continue
        return item
    return None


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
    sort: str = "newest",
) -> list[Case]:
    """Return the cases matching the filters, newest escalation first (see :func:`case_queue`)."""
    return case_queue(
        ledger,
        now=now,
        state=state,
        reason=reason,
        site=site,
        release=release,
        min_age_hours=min_age_hours,
        limit=limit,
        sort=sort,
    ).cases


def case_spans(ledger: Ledger, *, now: datetime) -> list[tuple[str, str, str | None]]:
    """Return ``(release, opened at, decided at or None)`` of every readable case.

    For workload monitoring: a case opens at its first escalation and is decided at its
    first accept or override (a correction does not move it); the release is that of
    the case's newest prediction. Times are the ledger's ISO-8601 UTC strings.
    """
    out = []
    for item in _matching(
        ledger,
        now=now,
        state="all",
        reason=None,
        site=None,
        release=None,
        min_age_hours=None,
    ):
        closing = [
            d.time for d in item.decisions if d.action in DECISIVE_ACTIONS and d.corrects is None
        ]
        out.append(
            (str(item.release or item.model_version), item.escalated_at, min(closing, default=None))
        )
    return out


def _subject_cases(ledger: Ledger, view: EntryView) -> _Cases:
    """Return the cases of the patient of inference ``view`` (all their escalations)."""
    subject = view.entry.subject
    escalations = _rows(
        ledger,
        sa.select(entries.c.seq, entries.c.time, entries.c.subject, entries.c.actor)
        .where(entries.c.type == "escalation", entries.c.subject == subject)
        .order_by(entries.c.seq.desc()),
    )
    return _load(ledger, escalations, subjects={subject} if subject else set())


def case_seq_of(ledger: Ledger, view: EntryView) -> int:
    """Return the seq naming the case of the prediction read as ``view`` (its inference entry).

    The seq of the case's first prediction when the prediction was escalated into a
    case of its patient and encounter; its own seq otherwise (no encounter, or not
    escalated). The answer depends only on entries written before the prediction's first
    escalation, so every writer deciding the case claims the same key.
    """
    seq = view.entry.seq
    if _encounter(view) is None:
        return seq
    found = _subject_cases(ledger, view).case_of(seq)
    return seq if found is None else found


def case(ledger: Ledger, prediction_seq: int, *, now: datetime) -> Case:
    """Return the case of prediction ``prediction_seq`` with every escalation and decision.

    Any prediction of a case gives the case (named by its first prediction). A
    prediction that was not escalated is returned as a case too (no reasons), so a
    clinician can respond to any shown recommendation; ``PredictionNotFound`` when
    the seq is not a readable inference record, ``SubjectErased`` when its patient was
    erased (nothing of theirs is shown).
    """
    view = _inference_view(ledger, prediction_seq)
    found = _subject_cases(ledger, view)
    case_seq = found.case_of(prediction_seq)
    if case_seq is None:
        members, views = [prediction_seq], {prediction_seq: view}
        routings = [found.routed[prediction_seq]] if prediction_seq in found.routed else []
        case_seq = prediction_seq
    else:
        members, views = found.members[case_seq], found.views
        routings = [found.routed[m] for m in members]
    item = _case(
        ledger,
        case_seq,
        members,
        views,
        routings,
        now=now,
        decisions=found.decisions(members),
    )
    if item is None:
        raise PredictionNotFound(
            f"prediction {prediction_seq}: an escalation is no longer readable"
        )
    return item


def _inference_view(ledger: Ledger, seq: int) -> EntryView:
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
