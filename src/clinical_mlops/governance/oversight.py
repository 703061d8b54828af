"""Human oversight of served predictions: decisions (R-H1) and linked outcomes (R-O1).

A decision (an ``override`` ledger entry) names the prediction (the ``audit_seq`` of
its inference record), an action from :data:`OVERRIDE_ACTIONS`, an optional reason
code from the declared list :data:`~clinical_mlops.vocabulary.OVERRIDE_REASONS` (CDS Hooks has no standard list:
these are ours, offered on every card as ``overrideReasons``) and an optional
comment. The entry stores the explanation *as it was shown* at that moment, copied
from the inference record, with the model version, so a reviewer later sees what the
clinician saw. An outcome links an observed result to one or more predictions.

One of each, enforced by the ledger's store (``ledger.claims``), whichever front end
writes (console, ``POST /v1/overrides``, CDS Hooks feedback) and however many race:

* a case takes one decision (accept or override) and one referral to senior
  review (escalate, which may precede the decision); a second is refused with
  :class:`~clinical_mlops.errors.CaseAlreadyDecided` naming the one recorded. A case is
  one prediction, or the escalated predictions of one patient and encounter while the
  case is open (:mod:`clinical_mlops.governance.queue`): a decision naming any of them
  records the case (``case_seq``) beside the prediction shown;
* a prediction takes one outcome; a second is refused with
  :class:`~clinical_mlops.errors.OutcomeAlreadyRecorded`.

A recorded decision or outcome is changed only by an explicit correction
(``correction=True`` with a ``correction_reason``): a new entry naming the one it
corrects (``corrects``), its author and why, so the record and its correction both
stay in the ledger. Each value can be corrected once — the next correction corrects
the correction — so two people correcting the same value at once cannot both succeed.
Monitoring and the console use the newest value.

Nothing is recorded for a prediction whose patient was erased (R-A4), by this process
or any other: :class:`~clinical_mlops.errors.SubjectErased` (HTTP 410), and nothing is
written — see :mod:`clinical_mlops.privacy.identity` for how soon a running process
learns of an erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clinical_mlops.errors import (
    AlreadyRecorded,
    CaseAlreadyDecided,
    EntryNotFound,
    InputInvalid,
    OutcomeAlreadyRecorded,
    OverrideInvalid,
    PredictionNotFound,
    SubjectErased,
)
from clinical_mlops.governance.queue import DECISIVE_ACTIONS, case_seq_of
from clinical_mlops.hashing import is_text
from clinical_mlops.ledger import EntryView, Ledger, NewEntry
from clinical_mlops.vocabulary import OVERRIDE_REASONS, REASON_SYSTEM

__all__ = [
    "DECISIVE_ACTIONS",
    "OVERRIDE_ACTIONS",
    "OverrideRequest",
    "record_outcome",
    "record_overrides",
]

#: action -> meaning
OVERRIDE_ACTIONS: dict[str, str] = {
    "accept": "the clinician agreed with the recommendation",
    "override": "the clinician decided otherwise than the recommendation",
    "escalate": "the clinician sent the case to senior or governance review",
}


def _inference(ledger: Ledger, seq: int) -> EntryView:
    try:
        view = ledger.read(seq)
    except EntryNotFound:
        raise PredictionNotFound(
            f"no prediction with audit seq {seq}; use the audit_seq returned with the prediction"
        ) from None
    if view.entry.type != "inference":
        raise PredictionNotFound(
            f"audit seq {seq} is a {view.entry.type!r} entry, not a prediction"
        )
    if view.status == "erased":
        raise SubjectErased(
            f"the patient of prediction {seq} was erased (R-A4): their data are destroyed, so "
            "nothing can be recorded against this prediction; nothing was recorded"
        )
    if view.status != "ok" or view.payload is None:
        raise PredictionNotFound(f"prediction {seq} is no longer readable ({view.status})")
    return view


@dataclass(frozen=True)
class OverrideRequest:
    """One clinician response to one shown prediction (see :func:`record_overrides`)."""

    prediction_seq: int
    action: str
    reason_code: str | None = None
    comment: str | None = None
    correction: bool = False
    correction_reason: str | None = None
    #: when the clinician responded, as the front end reports it (CDS Hooks outcomeTimestamp)
    outcome_timestamp: str | None = None


def _correction_reason(correction: bool, reason: str | None, *, what: str) -> str | None:
    """Return the checked reason of a correction (None when this is not one)."""
    text = (reason or "").strip() if isinstance(reason, str) else reason
    if not correction:
        if text:
            raise InputInvalid(
                [("correction_reason", f"a reason is given only with a correction of {what}")]
            )
        return None
    if isinstance(text, str) and text and not is_text(text):
        raise InputInvalid([("correction_reason", "expected text (no lone surrogates)")])
    if not isinstance(text, str) or not text:
        raise InputInvalid(
            [
                (
                    "correction_reason",
                    f"a correction of {what} needs a reason: say why the recorded one is wrong",
                )
            ]
        )
    if len(text) > 2000:
        raise InputInvalid([("correction_reason", "longer than 2000 characters")])
    return text


def _read_decision(ledger: Ledger, seq: int) -> dict[str, Any]:
    """Return what a refusal shows of decision ``seq`` (as ``Decision.to_json`` shapes it)."""
    out: dict[str, Any] = {"seq": seq, "time": None, "actor": None, "action": None}
    try:
        view = ledger.read(seq)
    except EntryNotFound:
        return out
    out |= {"time": view.entry.time, "actor": view.entry.actor}
    p = view.payload or {}
    out |= {
        "action": p.get("action"),
        "reason_code": p.get("reason_code"),
        "reason": p.get("reason"),
        "comment": p.get("comment"),
    }
    return out


def _case_words(prediction_seq: int, case_seq: int) -> str:
    """Return how a refusal names the case of ``prediction_seq``."""
    if case_seq == prediction_seq:
        return f"prediction {prediction_seq}"
    return f"case {case_seq} (prediction {prediction_seq} is one of its predictions)"


def _already_decided(
    ledger: Ledger, prediction_seq: int, case_seq: int, *, scope: str, seq: int, key: str = ""
) -> CaseAlreadyDecided:
    """Return the refusal of a decision on the case ``case_seq``: entry ``seq`` holds ``scope``."""
    held = _read_decision(ledger, seq)
    by = f"by {held['actor']} at {held['time']} (audit seq {seq})"
    what = _case_words(prediction_seq, case_seq)
    if scope == "senior_review":
        message = f"{what} was already sent to senior review {by}; nothing was recorded again"
    elif scope == "supersedes":
        message = (
            f"decision {key} on {what} was already corrected "
            f"{by}: {held['action']}; nothing was recorded. Correct the current decision"
        )
    else:
        message = (
            f"{what} was already decided: {held['action']} {by}; "
            "nothing was recorded again. A case takes one decision; to change it, send a "
            "correction with a reason"
        )
    return CaseAlreadyDecided(message, decision=held)


def record_overrides(
    ledger: Ledger,
    requests: Sequence[OverrideRequest],
    *,
    actor: str,
    source: str = "api",
) -> list[dict[str, Any]]:
    """Return the stored decisions (each with its ``seq``), appended in one transaction.

    Raises ``OverrideInvalid`` for an undeclared action or reason code, a prediction
    never shown to a clinician (shadow/silent mode) or named twice, or a correction of
    a prediction not yet decided; ``PredictionNotFound`` when a seq is not a readable
    inference record; ``CaseAlreadyDecided`` when a prediction already has its decision
    (or its referral to senior review, or the decision named was corrected since) —
    enforced by the ledger's store, so of any number of concurrent decisions on one
    prediction exactly one is recorded. Any refusal records nothing of the request.
    """
    items: list[NewEntry] = []
    out: list[dict[str, Any]] = []
    seen: dict[tuple[int, bool], int] = {}
    cases: list[int] = []
    for r in requests:
        if r.action not in OVERRIDE_ACTIONS:
            raise OverrideInvalid(
                f"action {r.action!r} is not declared; use one of {', '.join(OVERRIDE_ACTIONS)}"
            )
        if r.reason_code is not None and r.reason_code not in OVERRIDE_REASONS:
            raise OverrideInvalid(
                f"reason code {r.reason_code!r} is not declared; use one of "
                f"{', '.join(OVERRIDE_REASONS)}"
            )
        comment = (r.comment.strip() or None) if isinstance(r.comment, str) else r.comment
        if comment is not None and len(comment) > 2000:
            raise OverrideInvalid("the comment is longer than 2000 characters")
        why = _correction_reason(r.correction, r.correction_reason, what="a decision")
        if r.correction and r.action not in DECISIVE_ACTIONS:
            raise OverrideInvalid(
                f"a correction replaces a decision, so its action is one of "
                f"{', '.join(DECISIVE_ACTIONS)}, not {r.action!r}"
            )
        decisive = r.action in DECISIVE_ACTIONS
        view = _inference(ledger, r.prediction_seq)
        payload, subject = view.payload or {}, view.entry.subject
        # the case the prediction is in: its decision is the case's, whichever prediction
        # of the case it names
        case_seq = case_seq_of(ledger, view)
        if (case_seq, decisive) in seen:
            other = seen[(case_seq, decisive)]
            also = "" if other == r.prediction_seq else f" (as prediction {other})"
            raise OverrideInvalid(
                f"{_case_words(r.prediction_seq, case_seq)} is named twice in this "
                f"request{also}; a case takes one decision"
            )
        seen[(case_seq, decisive)] = r.prediction_seq
        cases.append(case_seq)
        if not payload.get("shown_to_clinician"):
            raise OverrideInvalid(
                f"prediction {r.prediction_seq} was served in {payload.get('mode')} mode and "
                "never shown to a clinician; there is nothing to override"
            )
        decided = ledger.holders([("decision", str(case_seq))]).get(("decision", str(case_seq)))
        corrects = None
        if r.correction:
            if decided is None:
                raise OverrideInvalid(
                    f"prediction {r.prediction_seq} has no decision to correct; send the "
                    "decision without a correction"
                )
            corrects = ledger.latest_correction(decided)
        elif decided is not None and not decisive:
            # Not a uniqueness rule (an escalation racing a decision is the same as one
            # just before it); a referral after the case is closed would mean nothing.
            raise _already_decided(
                ledger, r.prediction_seq, case_seq, scope="decision", seq=decided
            )
        body: dict[str, Any] = {
            "prediction_seq": r.prediction_seq,
            "case_seq": case_seq,
            "model_version": payload["model_version"],
            "release": payload.get("release"),
            "action": r.action,
            "reason_code": r.reason_code,
            "reason": OVERRIDE_REASONS.get(r.reason_code or ""),
            "reason_system": REASON_SYSTEM if r.reason_code else None,
            "comment": comment,
            "source": source,
            "explanation_shown": payload.get("explanation_shown", []),
            "probability_shown": payload.get("probability"),
            "conformal_set_shown": payload.get("conformal_set"),
            "flags_shown": payload.get("flags", []),
        }
        if corrects is not None:
            body |= {"corrects": corrects, "correction_reason": why}
        if r.outcome_timestamp is not None:
            body["outcome_timestamp"] = r.outcome_timestamp
        items.append(NewEntry(type="override", actor=actor, payload=body, subject=subject))
        out.append(body)
    try:
        receipts = ledger.append_batch(items)
    except AlreadyRecorded as exc:
        raise _already_decided(
            ledger,
            requests[exc.index].prediction_seq,
            cases[exc.index],
            scope=exc.scope,
            seq=exc.seq,
            key=exc.key,
        ) from None
    return [body | {"seq": rc.seq, "time": rc.time} for body, rc in zip(out, receipts, strict=True)]


def _outcome_refused(
    ledger: Ledger, exc: AlreadyRecorded, prediction_seq: int
) -> OutcomeAlreadyRecorded:
    """Return the refusal of an outcome whose unique key another entry holds."""
    try:
        view = ledger.read(exc.seq)
        value = (view.payload or {}).get("outcome")
        held = f"audit seq {exc.seq}, outcome {value}, by {view.entry.actor} at {view.entry.time}"
    except EntryNotFound:
        held = f"audit seq {exc.seq}"
    if exc.scope == "supersedes":
        return OutcomeAlreadyRecorded(
            f"outcome {exc.key} of prediction {prediction_seq} was already corrected "
            f"({held}); nothing of this request was recorded. Correct the current outcome"
        )
    return OutcomeAlreadyRecorded(
        f"prediction {prediction_seq} already has an outcome ({held}); nothing of this "
        "request was recorded. A prediction takes one outcome; to change it, send it as a "
        "correction with a reason (correction, correction_reason)"
    )


def record_outcome(
    ledger: Ledger,
    *,
    prediction_seqs: Sequence[int],
    outcome: int | bool,
    actor: str,
    observed_at: str | None = None,
    correction: bool = False,
    correction_reason: str | None = None,
) -> list[int]:
    """Return the seqs of one ``outcome`` entry per prediction, appended in one transaction.

    Any prediction that is unreadable, or whose patient was erased (``SubjectErased``),
    refuses the whole outcome: nothing is written for the others either.
    Raises ``OutcomeAlreadyRecorded`` (nothing written) when a prediction already has
    its outcome — enforced by the ledger's store, so of concurrent outcomes for one
    prediction exactly one is recorded. With ``correction`` (and a
    ``correction_reason``) each outcome corrects the prediction's current one instead;
    a prediction without an outcome then raises ``InputInvalid``.
    """
    if not prediction_seqs:
        raise PredictionNotFound("name at least one prediction to link the outcome to")
    if observed_at is not None and not is_text(observed_at):
        raise InputInvalid([("observed_at", "expected text (no lone surrogates)")])
    why = _correction_reason(correction, correction_reason, what="an outcome")
    first: dict[int, int] = {}
    for j, seq in enumerate(prediction_seqs):
        if seq in first:
            raise InputInvalid(
                [(f"prediction_ids[{j}]", f"prediction {seq} is also named at [{first[seq]}]")]
            )
        first[seq] = j
    items = []
    for j, seq in enumerate(prediction_seqs):
        view = _inference(ledger, seq)
        payload, subject = view.payload or {}, view.entry.subject
        body: dict[str, Any] = {
            "prediction_seq": seq,
            "outcome": int(outcome),
            "observed_at": observed_at,
            "model_version": payload["model_version"],
            "probability": payload["probability"],
        }
        if correction:
            held = ledger.holders([("outcome", str(seq))]).get(("outcome", str(seq)))
            if held is None:
                raise InputInvalid(
                    [
                        (
                            f"prediction_ids[{j}]",
                            f"prediction {seq} has no outcome to correct; send it without "
                            "a correction",
                        )
                    ]
                )
            body |= {"corrects": ledger.latest_correction(held), "correction_reason": why}
        items.append(NewEntry(type="outcome", actor=actor, subject=subject, payload=body))
    try:
        return [r.seq for r in ledger.append_batch(items)]
    except AlreadyRecorded as exc:
        raise _outcome_refused(ledger, exc, prediction_seqs[exc.index]) from None
