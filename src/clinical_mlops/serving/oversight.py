"""Human oversight of served predictions: overrides (R-H1) and linked outcomes (R-O1).

An override names the prediction (the ``audit_seq`` of its inference record), an
action from :data:`OVERRIDE_ACTIONS`, an optional reason code from the declared
list :data:`OVERRIDE_REASONS` (CDS Hooks has no standard list: these are ours,
offered on every card as ``overrideReasons``) and an optional comment. The
override entry stores the explanation *as it was shown* at that moment, copied
from the inference record, with the model version, so a reviewer later sees what
the clinician saw. An outcome links an observed result to one or more predictions.

Neither is recorded for a prediction whose patient was erased (R-A4), by this process
or any other: :class:`~clinical_mlops.errors.SubjectErased` (HTTP 410), and nothing is
written — see :mod:`clinical_mlops.privacy.identity` for how soon a running process
learns of an erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clinical_mlops.errors import (
    EntryNotFound,
    InputInvalid,
    OverrideInvalid,
    PredictionNotFound,
    SubjectErased,
)
from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.serving.inputs import is_text

__all__ = [
    "OVERRIDE_ACTIONS",
    "OVERRIDE_REASONS",
    "REASON_SYSTEM",
    "record_outcome",
    "record_override",
]

REASON_SYSTEM = "urn:clinical-mlops:override-reason"
#: action -> meaning
OVERRIDE_ACTIONS: dict[str, str] = {
    "accept": "the clinician agreed with the recommendation",
    "override": "the clinician decided otherwise than the recommendation",
    "escalate": "the clinician sent the case to senior or governance review",
}
#: reason code -> display text (a Coding in REASON_SYSTEM)
OVERRIDE_REASONS: dict[str, str] = {
    "clinical-judgement": "Clinical assessment of the patient differs from the estimate",
    "data-error": "Inputs are wrong, out of date or incomplete",
    "already-addressed": "Already being addressed by the care team",
    "goals-of-care": "Goals of care or patient preference make it not applicable",
    "not-applicable": "The model does not apply to this patient",
    "other": "Other reason (see comment)",
}


def _inference(ledger: Ledger, seq: int) -> tuple[dict[str, Any], str | None]:
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
    return view.payload, view.entry.subject


def record_override(
    ledger: Ledger,
    *,
    prediction_seq: int,
    action: str,
    actor: str,
    reason_code: str | None = None,
    comment: str | None = None,
    source: str = "api",
) -> dict[str, Any]:
    """Return the stored override (with its ``seq``) after appending it to the ledger.

    Raises ``OverrideInvalid`` for an undeclared action or reason code, or a
    prediction that was never shown to a clinician (shadow/silent mode),
    ``PredictionNotFound`` when ``prediction_seq`` is not a readable inference record, and
    ``SubjectErased`` when its patient was erased.
    """
    if action not in OVERRIDE_ACTIONS:
        raise OverrideInvalid(
            f"action {action!r} is not declared; use one of {', '.join(OVERRIDE_ACTIONS)}"
        )
    if reason_code is not None and reason_code not in OVERRIDE_REASONS:
        raise OverrideInvalid(
            f"reason code {reason_code!r} is not declared; use one of {', '.join(OVERRIDE_REASONS)}"
        )
    if comment is not None and len(comment) > 2000:
        raise OverrideInvalid("the comment is longer than 2000 characters")
    payload, subject = _inference(ledger, prediction_seq)
    if not payload.get("shown_to_clinician"):
        raise OverrideInvalid(
            f"prediction {prediction_seq} was served in {payload.get('mode')} mode and never "
            "shown to a clinician; there is nothing to override"
        )
    body = {
        "prediction_seq": prediction_seq,
        "model_version": payload["model_version"],
        "release": payload.get("release"),
        "action": action,
        "reason_code": reason_code,
        "reason": OVERRIDE_REASONS.get(reason_code or ""),
        "reason_system": REASON_SYSTEM if reason_code else None,
        "comment": comment,
        "source": source,
        "explanation_shown": payload.get("explanation_shown", []),
        "probability_shown": payload.get("probability"),
        "conformal_set_shown": payload.get("conformal_set"),
        "flags_shown": payload.get("flags", []),
    }
    receipt = ledger.append(type="override", actor=actor, payload=body, subject=subject)
    return body | {"seq": receipt.seq, "time": receipt.time}


def record_outcome(
    ledger: Ledger,
    *,
    prediction_seqs: Sequence[int],
    outcome: int | bool,
    actor: str,
    observed_at: str | None = None,
) -> list[int]:
    """Return the seqs of one ``outcome`` entry per prediction, appended in one transaction.

    Any prediction that is unreadable, or whose patient was erased (``SubjectErased``),
    refuses the whole outcome: nothing is written for the others either.
    """
    if not prediction_seqs:
        raise PredictionNotFound("name at least one prediction to link the outcome to")
    if observed_at is not None and not is_text(observed_at):
        raise InputInvalid([("observed_at", "expected text (no lone surrogates)")])
    items = []
    for seq in prediction_seqs:
        payload, subject = _inference(ledger, seq)
        items.append(
            NewEntry(
                type="outcome",
                actor=actor,
                subject=subject,
                payload={
                    "prediction_seq": seq,
                    "outcome": int(outcome),
                    "observed_at": observed_at,
                    "model_version": payload["model_version"],
                    "probability": payload["probability"],
                },
            )
        )
    return [r.seq for r in ledger.append_batch(items)]
