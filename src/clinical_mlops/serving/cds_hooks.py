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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from clinical_mlops.errors import InputInvalid, PredictionNotFound
from clinical_mlops.evaluation.phrases import CONTRIBUTION_REFERENCE, risk_percent
from clinical_mlops.governance.oversight import OverrideRequest
from clinical_mlops.serving.predictor import PredictionResult
from clinical_mlops.vocabulary import OVERRIDE_REASONS, REASON_SYSTEM

__all__ = [
    "card_for",
    "card_uuid",
    "discovery",
    "feedback_requests",
    "refusal_card",
    "seq_from_card_uuid",
]

#: why no risk was given, in a clinician's words, per refusal code
_WHY_NOT = {
    "insufficient_data": "too few of its inputs are recorded",
    "consent_not_granted": "the patient's consent does not cover direct care",
    "unknown_subject": "the patient is not known to this service",
    "outside_intended_use": "the patient is outside the model's intended use",
    "site_not_permitted": "this site may not use the model",
    "not_deployed": "no release is deployed for this site",
}


def discovery(
    *, service_id: str, title: str, description: str, population: str, prefetch: dict[str, str]
) -> dict[str, Any]:
    """Return the discovery document (``GET /cds-services``).

    The service id, title and description are the served task's own words
    (``presentation`` in its spec), never another task's. ``prefetch`` comes from
    :func:`clinical_mlops.serving.fhir_client.prefetch_templates`.
    """
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": service_id,
                "title": title,
                "description": description,
                "prefetch": prefetch,
                "usageRequirements": (
                    f"{population.rstrip('.')}. Prefetch the templates, or send fhirServer "
                    "with fhirAuthorization so the service reads them; pass encounterId so "
                    "repeated calls update one review case. The EHR authenticates with a "
                    "signed JWT (role clinician or system)."
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


def refusal_card(result: PredictionResult, *, risk_words: str) -> dict[str, Any] | None:
    """Return the info card saying no risk was given and why (None when nothing was refused).

    A refusal is an answer, not an error: the card names the task's own risk, says it
    was not estimated, and carries the refusal's message (for ``insufficient_data``, the
    inputs missing) so the clinician knows what to record for an estimate.
    """
    if not result.refusal:
        return None
    code = str(result.refusal["code"])
    why = _WHY_NOT.get(code, code.replace("_", " "))
    return {
        "summary": f"{risk_words[:1].upper()}{risk_words[1:]}: not given, {why}"[:139],
        "indicator": "info",
        "detail": str(result.refusal["message"]),
        "source": {"label": "clinical-mlops"},
    }


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
    summary = f"{outcome_words}: {risk_percent(result.probability)} ({result.risk}); {level}{cset}"
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
    if any(c.get("reference") for c in result.contributions):
        lines += ["", CONTRIBUTION_REFERENCE]
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


def feedback_requests(origin: str, items: Sequence[Mapping[str, Any]]) -> list[OverrideRequest]:
    """Return the decisions CDS Hooks 2.0 feedback items ask for, checked against the cards.

    Each item names a card this service issued (``PredictionNotFound`` otherwise), an
    ``outcome`` (``accepted`` or ``overridden``) and its ``outcomeTimestamp``; an
    ``overrideReason.reason`` must be one of the Codings the card offered (same
    ``system`` and ``code``), and only an override carries one. Every problem is named
    by its field (``feedback[i]...``) in one ``InputInvalid``; nothing is recorded.
    """
    problems: list[tuple[str, str]] = []
    out: list[OverrideRequest] = []
    for i, item in enumerate(items):
        at = f"feedback[{i}]"
        seq = seq_from_card_uuid(origin, str(item.get("card")))
        if seq is None:
            raise PredictionNotFound(
                f"{at}.card: {item.get('card')!r} was not issued by this service"
            )
        outcome = item.get("outcome")
        when = item.get("outcomeTimestamp")
        try:
            stamp = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                problems.append((f"{at}.outcomeTimestamp", "expected a time with its UTC offset"))
        except ValueError:
            problems.append((f"{at}.outcomeTimestamp", "expected an ISO 8601 date-time"))
        override = item.get("overrideReason") or {}
        coding = override.get("reason")
        code = None
        if coding is not None:
            if outcome != "overridden":
                problems.append((f"{at}.overrideReason", "only an overridden card has a reason"))
            elif (
                coding.get("system") != REASON_SYSTEM or coding.get("code") not in OVERRIDE_REASONS
            ):
                problems.append(
                    (
                        f"{at}.overrideReason.reason",
                        f"{coding.get('system')}|{coding.get('code')} is not a reason the card "
                        f"offered; use system {REASON_SYSTEM} with one of "
                        f"{', '.join(OVERRIDE_REASONS)}",
                    )
                )
            else:
                code = str(coding["code"])
        out.append(
            OverrideRequest(
                prediction_seq=seq,
                action="accept" if outcome == "accepted" else "override",
                reason_code=code,
                comment=override.get("userComment"),
                outcome_timestamp=str(when),
            )
        )
    if problems:
        raise InputInvalid(problems)
    return out
