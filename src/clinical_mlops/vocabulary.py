"""The project's words, each defined once: roles, gate names, reason codes and flags.

Every member is a :class:`~enum.StrEnum`, so it compares equal to (and is stored as)
its string: ``Role.CLINICAL == "clinical"``. Ledger payloads, database rows, tokens
and forms keep the exact strings they always held; code names the member instead of
retyping the literal, so a typo is an ``AttributeError`` instead of a silently
unmatched rule.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "APPROVER_ROLES",
    "FLAGS",
    "GATES",
    "GATE_LABELS",
    "OVERRIDE_REASONS",
    "REASON_SYSTEM",
    "REVIEW_CONDITIONS",
    "REVIEW_REASONS",
    "Flag",
    "Gate",
    "OverrideReason",
    "RefusalCode",
    "Role",
]


class Role(StrEnum):
    """A governance role a person holds in the registry (granted by compliance)."""

    CLINICAL = "clinical"
    COMPLIANCE = "compliance"
    ENGINEERING = "engineering"


#: the roles whose approvals make gate 4, one person each
APPROVER_ROLES: tuple[Role, ...] = (Role.CLINICAL, Role.COMPLIANCE, Role.ENGINEERING)


class Gate(StrEnum):
    """A release gate (R-L3), in the order a release passes them."""

    SCHEMA_CONTRACT = "schema_contract"
    METRICS = "metrics"
    EVIDENCE = "evidence"
    APPROVALS = "approvals"


#: every gate, in order
GATES: tuple[Gate, ...] = tuple(Gate)
#: gate -> how a reviewer reads it
GATE_LABELS: dict[Gate, str] = {
    Gate.SCHEMA_CONTRACT: "1 · Schema and contracts",
    Gate.METRICS: "2 · Metrics vs acceptance criteria",
    Gate.EVIDENCE: "3 · Explanation, fairness, drift evidence",
    Gate.APPROVALS: "4 · Named approvals",
}


class OverrideReason(StrEnum):
    """Why a clinician decided otherwise (a Coding in ``urn:clinical-mlops:override-reason``)."""

    CLINICAL_JUDGEMENT = "clinical-judgement"
    DATA_ERROR = "data-error"
    ALREADY_ADDRESSED = "already-addressed"
    GOALS_OF_CARE = "goals-of-care"
    NOT_APPLICABLE = "not-applicable"
    OTHER = "other"


#: the Coding system of override reason codes
REASON_SYSTEM = "urn:clinical-mlops:override-reason"
#: reason code -> display text; CDS Hooks has no standard list, so these are offered on
#: every card as ``overrideReasons``
OVERRIDE_REASONS: dict[str, str] = {
    OverrideReason.CLINICAL_JUDGEMENT: (
        "Clinical assessment of the patient differs from the estimate"
    ),
    OverrideReason.DATA_ERROR: "Inputs are wrong, out of date or incomplete",
    OverrideReason.ALREADY_ADDRESSED: "Already being addressed by the care team",
    OverrideReason.GOALS_OF_CARE: "Goals of care or patient preference make it not applicable",
    OverrideReason.NOT_APPLICABLE: "The model does not apply to this patient",
    OverrideReason.OTHER: "Other reason (see comment)",
}


class RefusalCode(StrEnum):
    """Why a prediction request was refused (the ``code`` of the refusal and its record)."""

    SITE_NOT_PERMITTED = "site_not_permitted"
    CONSENT_NOT_GRANTED = "consent_not_granted"
    UNKNOWN_SUBJECT = "unknown_subject"
    OUTSIDE_INTENDED_USE = "outside_intended_use"
    NOT_DEPLOYED = "not_deployed"
    INSUFFICIENT_DATA = "insufficient_data"


class Flag(StrEnum):
    """A flag on a prediction, shown to the clinician with it."""

    LOW_CONFIDENCE = "low_confidence"
    AMBIGUOUS_SET = "ambiguous_set"
    EMPTY_SET = "empty_set"
    OUT_OF_RANGE = "out_of_range"
    MISSING_INPUTS = "missing_inputs"
    OUT_OF_SCOPE = "out_of_scope"
    SUSPENDED = "suspended"
    NEAR_THRESHOLD = "near_threshold"
    REVIEW_DEFERRED = "review_deferred"
    DRIFT_ALERT = "drift_alert"


#: flag -> what it tells the clinician
FLAGS: dict[str, str] = {
    Flag.LOW_CONFIDENCE: (
        "the conformal set is not a single answer; treat the estimate with caution"
    ),
    Flag.AMBIGUOUS_SET: "both outcomes are plausible at the set's coverage level",
    Flag.EMPTY_SET: "the case looks unlike the validation patients of either outcome",
    Flag.OUT_OF_RANGE: "a value lies beyond the range seen in the validation patients",
    Flag.MISSING_INPUTS: "some inputs were not measured; training medians were used",
    Flag.OUT_OF_SCOPE: "outside the validated use (too few inputs, or before the prediction time)",
    Flag.SUSPENDED: "the model is suspended; the clinical baseline score is shown instead",
    Flag.NEAR_THRESHOLD: (
        "the risk lies in the review band around the alert threshold, where the decision is "
        "least certain"
    ),
    Flag.REVIEW_DEFERRED: (
        "the case met a review condition beyond the review budget: flagged, not queued"
    ),
    Flag.DRIFT_ALERT: "a drift alert is open on this model: flagged cases are reviewed",
}
#: condition -> reason words: what an escalation policy (a task spec's ``escalation.review_on``)
#: may route to human review (R-H2, R-H5); the flags a scored prediction can carry, the band
#: around the operating threshold, and an open drift alert on the served release
REVIEW_REASONS: dict[str, str] = {
    Flag.OUT_OF_SCOPE: "outside the validated scope",
    Flag.EMPTY_SET: "uncertainty: empty conformal set",
    Flag.AMBIGUOUS_SET: "uncertainty: ambiguous conformal set",
    Flag.LOW_CONFIDENCE: "uncertainty: the conformal set is not a single answer",
    Flag.NEAR_THRESHOLD: "uncertainty: risk near the alert threshold",
    Flag.OUT_OF_RANGE: "a value beyond the range seen in validation",
    Flag.MISSING_INPUTS: "inputs not measured",
    Flag.DRIFT_ALERT: "drift alert open: flagged case reviewed",
}
#: the conditions an escalation policy may name, in a stable order
REVIEW_CONDITIONS: tuple[str, ...] = tuple(REVIEW_REASONS)
