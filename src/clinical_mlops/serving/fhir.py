"""FHIR R4 output: a RiskAssessment with its Provenance (R-I4).

Inputs are read by :mod:`clinical_mlops.serving.fhir_input` with the codes each feature's
task spec declares (``features[].fhir``); this module holds none.

Output: a ``collection`` Bundle of the RiskAssessment and the Provenance of it
(:func:`assessment_bundle`). ``prediction.probabilityDecimal`` is a **percentage
(0-100)** by default: the R4 element's comment says decimal values are expressed
as percentages (max = 100) and invariant ras-2 caps them at 100. A deployment whose
EHR reads 0-1 sets :data:`PROBABILITY_SCALE_ENV` to ``unit``; the ``note`` always
states the 0-1 probability and the scale used. The outcome is the task's own
(``presentation.outcome`` and its codings). Every resource the model produces
carries the AI Transparency on FHIR security label ``AIAST`` in ``meta.security``;
the Provenance (AI Transparency ``AI-Provenance`` profile) names the release as a
contained AI Device (release, model version, bundle SHA-256) and the audit record
(ledger seq and entry hash) that recorded the prediction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.phrases import risk_percent
from clinical_mlops.serving.predictor import PredictionResult
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "AIAST",
    "AUDIT_ENTRY_SYSTEM",
    "BUNDLE_SHA256_SYSTEM",
    "ENTRY_HASH_EXTENSION",
    "PROBABILITY_SCALE_ENV",
    "RELEASE_SYSTEM",
    "ai_labelled",
    "assessment_bundle",
    "probability_scale",
    "provenance",
    "risk_assessment",
]

RISK_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
#: HL7 AI Transparency on FHIR: the security label of data asserted by an AI.
AIAST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
_AIT = "http://hl7.org/fhir/uv/aitransparency"
AI_PROVENANCE_PROFILE = f"{_AIT}/StructureDefinition/AI-Provenance"
AI_DEVICE_PROFILE = f"{_AIT}/StructureDefinition/AI-Device"
_AI_KIND_EXTENSION = f"{_AIT}/StructureDefinition/aitransparency.AIKind"
_AI_DEVICE_TYPES = f"{_AIT}/CodeSystem/AIdeviceTypeCS"
RELEASE_SYSTEM = "urn:clinical-mlops:release"
BUNDLE_SHA256_SYSTEM = "urn:clinical-mlops:bundle-sha256"
AUDIT_SEQ_SYSTEM = "urn:clinical-mlops:audit-seq"
#: The audit record a Provenance names: ``<ledger origin>/<seq>``.
AUDIT_ENTRY_SYSTEM = "urn:clinical-mlops:audit-entry"
#: Extension on that Provenance entity holding the entry's leaf hash (hex SHA-256).
ENTRY_HASH_EXTENSION = "urn:clinical-mlops:fhir:audit-entry-leaf-hash"
#: ``percent`` (R4 default, 0-100) or ``unit`` (0-1) for ``probabilityDecimal``.
PROBABILITY_SCALE_ENV = "CLINICAL_MLOPS_FHIR_PROBABILITY_SCALE"
Scale = Literal["percent", "unit"]


def probability_scale(environ: Mapping[str, str] | None = None) -> Scale:
    """Return the ``probabilityDecimal`` scale this deployment uses (default ``percent``).

    ``percent`` follows the R4 definition (0-100, invariant ras-2); ``unit`` (0-1) is
    for EHRs that read the element as a probability. Any other value of
    :data:`PROBABILITY_SCALE_ENV` is refused, naming the variable.
    """
    value = (os.environ if environ is None else environ).get(PROBABILITY_SCALE_ENV, "percent")
    if value not in ("percent", "unit"):
        raise ValueInvalid(f"{PROBABILITY_SCALE_ENV}: expected 'percent' or 'unit', got {value!r}")
    return "percent" if value == "percent" else "unit"


def ai_labelled(resource: dict[str, Any]) -> dict[str, Any]:
    """Return ``resource`` with the ``AIAST`` security label in ``meta.security`` (added once).

    Every resource the model asserts (the RiskAssessment and its Provenance) carries
    it (insufficient data is a refusal, not a resource), so an EHR can tell AI-produced data from charted data (AI
    Transparency on FHIR, first level of observability).
    """
    meta = dict(resource.get("meta") or {})
    security = list(meta.get("security") or [])
    if not any(c.get("system") == AIAST["system"] and c.get("code") == "AIAST" for c in security):
        security.append(dict(AIAST))
    meta["security"] = security
    return {**resource, "meta": meta}


def _outcome(spec: TaskSpec) -> dict[str, Any]:
    words = spec.words()
    out: dict[str, Any] = {"text": words.outcome}
    if words.outcome_coding:
        out["coding"] = [c.model_dump() for c in words.outcome_coding]
    return out


def risk_assessment(
    result: PredictionResult,
    *,
    spec: TaskSpec,
    patient_reference: str,
    basis: list[str],
    occurrence: str,
    model_card_url: str | None = None,
    scale: Scale = "percent",
) -> dict[str, Any]:
    """Return a FHIR R4 RiskAssessment (as JSON) for a scored prediction, labelled ``AIAST``.

    The outcome is the task's own (``presentation``); ``probabilityDecimal`` is on
    ``scale`` (see :func:`probability_scale`) and the note says which.
    """
    if result.status != "scored" or result.probability is None:
        raise ValueError("only a scored prediction shown to clinicians becomes a RiskAssessment")
    p = result.probability
    words = spec.words()
    coverage = f" at {result.coverage:.0%} coverage" if result.coverage is not None else ""
    stated = (
        "probabilityDecimal is the same value as a percentage (0-100), as the R4 element "
        "defines it (invariant ras-2)."
        if scale == "percent"
        else "probabilityDecimal is this value on the 0-1 scale (set by the deployment)."
    )
    notes = [
        f"{words.risk_words}: {risk_percent(p)} (calibrated probability); {stated}",
        f"Conformal prediction set{coverage}: {{{', '.join(result.conformal_set or [])}}}"
        + (" — more than one outcome is plausible" if len(result.conformal_set or []) != 1 else ""),
        "Flags: " + (", ".join(result.flags) if result.flags else "none"),
        "Decision support only: review with the clinical picture; not for use as the sole basis "
        f"of a decision, nor outside its validated population ({spec.intended_use.population}).",
    ]
    if result.escalated:
        notes.append("Routed to human review: " + "; ".join(result.escalation))
    return ai_labelled(
        {
            "resourceType": "RiskAssessment",
            "id": f"pred-{result.audit_seq}",
            "status": "final",
            "subject": {"reference": patient_reference},
            "occurrenceDateTime": occurrence,
            "identifier": [{"system": AUDIT_SEQ_SYSTEM, "value": str(result.audit_seq)}],
            "method": {
                "coding": [
                    {
                        "system": "urn:clinical-mlops:model",
                        "code": str(result.model_version),
                        "display": f"{words.title} ({result.release})",
                    }
                ],
                "text": (
                    "Gradient-boosted or logistic model, isotonic calibration, "
                    "Mondrian conformal set"
                ),
            },
            "performer": {
                "display": f"clinical-mlops model {result.model_version}",
                "identifier": {"system": RELEASE_SYSTEM, "value": str(result.release)},
            },
            "basis": [{"reference": r} for r in basis],
            "prediction": [
                {
                    "outcome": _outcome(spec),
                    "probabilityDecimal": round(p * 100, 4) if scale == "percent" else round(p, 6),
                    "qualitativeRisk": {
                        "coding": [
                            {"system": RISK_SYSTEM, "code": result.risk, "display": result.risk}
                        ]
                    },
                    "whenRange": {
                        "low": {
                            "value": spec.label.window.start_hours,
                            "unit": "h",
                            "system": "http://unitsofmeasure.org",
                            "code": "h",
                        },
                        "high": {
                            "value": spec.label.window.end_hours,
                            "unit": "h",
                            "system": "http://unitsofmeasure.org",
                            "code": "h",
                        },
                    },
                    "rationale": "; ".join(c["phrase"] for c in result.contributions) or None,
                }
            ],
            "note": [{"text": n} for n in notes]
            + ([{"text": f"Model card: {model_card_url}"}] if model_card_url else []),
        }
    )


def provenance(
    result: PredictionResult,
    *,
    spec: TaskSpec,
    origin: str,
    target: str,
    recorded: str,
    model_card_url: str | None = None,
) -> dict[str, Any]:
    """Return the FHIR R4 Provenance of one audited prediction (AI Transparency profile).

    It targets ``target`` (the RiskAssessment), names the release as a contained AI
    Device (identifiers: release and bundle SHA-256; version: the model version) and
    the audit record as an entity: ``<ledger origin>/<seq>`` with the entry's leaf
    hash. ``clinical-mlops audit provenance`` checks all of it against the ledger.
    """
    if result.audit_seq is None or result.entry_hash is None or result.bundle_sha256 is None:
        raise ValueError("only an audited prediction of a verified release has a Provenance")
    seq = result.audit_seq
    ai_type = {"system": _AI_DEVICE_TYPES, "code": "Artificial-Intelligence"}
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": "release",
        "meta": {"profile": [AI_DEVICE_PROFILE]},
        "extension": [
            {
                "url": _AI_KIND_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [{"system": _AI_DEVICE_TYPES, "code": "Machine-Learning-Models"}]
                },
            }
        ],
        "identifier": [
            {"system": RELEASE_SYSTEM, "value": str(result.release)},
            {"system": BUNDLE_SHA256_SYSTEM, "value": result.bundle_sha256},
        ],
        "deviceName": [{"name": f"{spec.words().title} ({result.release})", "type": "model-name"}],
        "type": {"coding": [ai_type]},
        "version": [{"value": str(result.model_version)}],
    }
    if model_card_url:
        device["note"] = [{"text": f"Model card: {model_card_url}"}]
    return ai_labelled(
        {
            "resourceType": "Provenance",
            "id": f"prov-{seq}",
            "meta": {"profile": [AI_PROVENANCE_PROFILE]},
            "contained": [device],
            "target": [
                {
                    "reference": target,
                    "identifier": {"system": AUDIT_SEQ_SYSTEM, "value": str(seq)},
                }
            ],
            "occurredDateTime": recorded,
            "recorded": recorded,
            "reason": [{"coding": [dict(AIAST)]}],
            "activity": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                        "code": "CREATE",
                        "display": "create",
                    }
                ]
            },
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": (
                                    "http://terminology.hl7.org/CodeSystem/"
                                    "provenance-participant-type"
                                ),
                                "code": "author",
                                "display": "Author",
                            }
                        ]
                    },
                    "role": [{"coding": [ai_type]}],
                    "who": {"reference": "#release", "display": f"release {result.release}"},
                }
            ],
            "entity": [
                {
                    "extension": [{"url": ENTRY_HASH_EXTENSION, "valueString": result.entry_hash}],
                    "role": "source",
                    "what": {
                        "identifier": {"system": AUDIT_ENTRY_SYSTEM, "value": f"{origin}/{seq}"},
                        "display": f"audit record {seq} (inference) of ledger {origin}",
                    },
                }
            ],
        }
    )


def assessment_bundle(
    result: PredictionResult,
    *,
    spec: TaskSpec,
    origin: str,
    base_url: str,
    patient_reference: str,
    basis: list[str],
    occurrence: str,
    model_card_url: str | None = None,
    scale: Scale = "percent",
) -> dict[str, Any]:
    """Return a ``collection`` Bundle: the RiskAssessment, then its Provenance.

    The entries' ``fullUrl`` are under ``<base_url>/fhir`` so the Provenance's relative
    target resolves inside the Bundle; the service does not serve them back (no FHIR
    read), the ledger is the record.
    """
    ra = risk_assessment(
        result,
        spec=spec,
        patient_reference=patient_reference,
        basis=basis,
        occurrence=occurrence,
        model_card_url=model_card_url,
        scale=scale,
    )
    target = f"RiskAssessment/{ra['id']}"
    prov = provenance(
        result,
        spec=spec,
        origin=origin,
        target=target,
        recorded=occurrence,
        model_card_url=model_card_url,
    )
    base = base_url.rstrip("/") + "/fhir"
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{origin}/{result.audit_seq}")),
        "type": "collection",
        "timestamp": occurrence,
        "entry": [
            {"fullUrl": f"{base}/{target}", "resource": ra},
            {"fullUrl": f"{base}/Provenance/{prov['id']}", "resource": prov},
        ],
    }
