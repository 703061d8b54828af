"""CDS Hooks 2.0: discovery, a patient-view service returning one card, and feedback.

The service reads the patient's prefetched Observations (a FHIR Bundle, see
:mod:`clinical_mlops.serving.fhir`), runs the same Predictor as ``/v1/predict``
with purpose ``direct_care`` and answers with one card: the risk and its
uncertainty in the summary, an indicator from risk and flags, the source naming
the model version with a link to its model card, the contributions in clinical
words in the detail, and our declared override reasons. Card uuids encode the
audit seq of the inference record, so feedback (accepted / overridden, with an
overrideReason) reaches the same override path as ``POST /v1/overrides``.
Shadow and silent releases return no card; a suspended model returns a warning
card with the clinical baseline score.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from clinical_mlops.evaluation.phrases import estimate_percent
from clinical_mlops.serving.predictor import PredictionResult
from clinical_mlops.vocabulary import OVERRIDE_REASONS, REASON_SYSTEM

__all__ = ["card_for", "card_uuid", "discovery", "seq_from_card_uuid"]

_PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "observations": (
        "Observation?patient={{context.patientId}}&status=final&date=ge{{context.windowStart}}"
    ),
}


def discovery(*, service_id: str, title: str, description: str, population: str) -> dict[str, Any]:
    """Return the discovery document (``GET /cds-services``).

    The service id, title and description are the served task's own words
    (``presentation`` in its spec), never another task's.
    """
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": service_id,
                "title": title,
                "description": description,
                "prefetch": _PREFETCH,
                "usageRequirements": (
                    f"{population.rstrip('.')}. Send the Observations of the observation "
                    "window (LOINC-coded) as prefetch 'observations'. "
                    "The EHR authenticates with a signed JWT (role clinician or system)."
                ),
            }
        ]
    }


def card_uuid(origin: str, seq: int) -> str:
    """Return the card uuid of the inference record ``seq`` (reversible, stable across restarts)."""
    head = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return str(uuid.UUID(hex=head + f"{seq:016x}"))


def seq_from_card_uuid(origin: str, value: str) -> int | None:
    """Return the audit seq a card uuid of this ledger names, or None."""
    try:
        hexed = uuid.UUID(value).hex
    except (ValueError, AttributeError, TypeError):
        return None
    if hexed[:16] != hashlib.sha256(origin.encode()).hexdigest()[:16]:
        return None
    return int(hexed[16:], 16)


def _coding(code: str) -> dict[str, str]:
    return {"system": REASON_SYSTEM, "code": str(code), "display": OVERRIDE_REASONS[code]}


def card_for(
    result: PredictionResult, *, origin: str, model_card_url: str, outcome_words: str
) -> dict[str, Any] | None:
    """Return the card for one result (None for shadow/silent releases or refusals)."""
    if result.status == "fallback" and result.fallback:
        fb = result.fallback
        return {
            "uuid": card_uuid(origin, result.audit_seq or 0) if result.audit_seq else None,
            "summary": f"Risk model suspended — {fb['name']} {fb['score']}/{fb['max_points']} (not a probability)"[
                :139
            ],
            "indicator": "warning",
            "detail": fb["note"],
            "source": {
                "label": f"clinical-mlops {result.model_version} (suspended)",
                "url": model_card_url,
            },
        }
    if result.status != "scored" or result.probability is None or result.audit_seq is None:
        return None
    cset = "{" + ", ".join(result.conformal_set or []) + "}"
    unsure = len(result.conformal_set or []) != 1
    level = f"{round(100 * result.coverage)}% set " if result.coverage is not None else "set "
    summary = (
        f"{outcome_words}: {estimate_percent(result.probability)} ({result.risk}); {level}{cset}"
    )
    if unsure:
        summary += " — uncertain"
    if result.escalated:
        summary += ", for review"
    if result.above_threshold and not unsure:
        indicator = "critical"
    elif result.above_threshold or result.flags:
        indicator = "warning"
    else:
        indicator = "info"
    lines = ["**What moved this estimate** (model contributions, not causes):", ""]
    lines += [f"- {c['phrase']}" for c in result.contributions]
    if result.flags:
        lines += ["", "**Flags:** " + ", ".join(result.flags)]
    if result.escalated:
        lines += ["", "**Routed to human review:** " + "; ".join(result.escalation)]
    lines += [
        "",
        f"Data completeness {100 * (result.completeness or 0):.0f}%. Decision support only; "
        "it does not say what treatment would change the outcome.",
    ]
    return {
        "uuid": card_uuid(origin, result.audit_seq),
        "summary": summary[:139],
        "indicator": indicator,
        "detail": "\n".join(lines),
        "source": {
            "label": f"clinical-mlops model {result.model_version}",
            "url": model_card_url,
            "topic": {"system": "urn:clinical-mlops:release", "code": str(result.release)},
        },
        "overrideReasons": [_coding(code) for code in OVERRIDE_REASONS],
        "links": [{"label": "Model card", "url": model_card_url, "type": "absolute"}],
    }
