"""FHIR R4 adapters: a Bundle of Observations in; a RiskAssessment with its Provenance out (R-I4).

Inputs: an event feature's Observation codes are the ones its task spec declares
(``features[].fhir``); the spec, not this module, is the source of the codes read.
The static features (age, sex, diagnosis) may also come as Observations coded as in
:data:`LOINC`, whose other entries are the codings this module's examples write.
Several Observations of one variable are aggregated as the task spec declares
(lowest MAP, highest lactate, any vasopressor), so an EHR can send what it charted.

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
from clinical_mlops.serving.predictor import PredictionResult
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "AIAST",
    "AUDIT_ENTRY_SYSTEM",
    "BUNDLE_SHA256_SYSTEM",
    "ENTRY_HASH_EXTENSION",
    "LOCAL_SYSTEM",
    "LOINC",
    "LOINC_SYSTEM",
    "PROBABILITY_SCALE_ENV",
    "RELEASE_SYSTEM",
    "ai_labelled",
    "assessment_bundle",
    "probability_scale",
    "provenance",
    "risk_assessment",
]

LOINC_SYSTEM = "http://loinc.org"
LOCAL_SYSTEM = "urn:clinical-mlops:variable"
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
#: feature -> (system, code, display): one coding per feature, for writing Observations; the
#: codes read for an event feature are its spec's (``features[].fhir``)
LOINC: dict[str, tuple[str, str, str]] = {
    "age": (LOINC_SYSTEM, "30525-0", "Age"),
    "sex": (LOINC_SYSTEM, "76689-9", "Sex assigned at birth"),
    "diagnosis_category": (LOINC_SYSTEM, "29308-4", "Diagnosis"),
    "gcs": (LOINC_SYSTEM, "9269-2", "Glasgow coma score total"),
    "map": (LOINC_SYSTEM, "8478-0", "Mean blood pressure"),
    "heart_rate": (LOINC_SYSTEM, "8867-4", "Heart rate"),
    "resp_rate": (LOINC_SYSTEM, "9279-1", "Respiratory rate"),
    "temperature": (LOINC_SYSTEM, "8310-5", "Body temperature"),
    "spo2": (LOINC_SYSTEM, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    "creatinine": (LOINC_SYSTEM, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    "lactate": (LOINC_SYSTEM, "2524-7", "Lactate [Moles/volume] in Serum or Plasma"),
    "albumin": (LOINC_SYSTEM, "1751-7", "Albumin [Mass/volume] in Serum or Plasma"),
    "bilirubin": (LOINC_SYSTEM, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"),
    "platelets": (LOINC_SYSTEM, "777-3", "Platelets [#/volume] in Blood by Automated count"),
    "inr": (LOINC_SYSTEM, "6301-6", "INR in Platelet poor plasma by Coagulation assay"),
    "vasopressor": (LOCAL_SYSTEM, "vasopressor", "Vasopressor support given"),
    "ventilation": (LOCAL_SYSTEM, "ventilation", "Invasive mechanical ventilation"),
}


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
        f"{words.risk_words}: calibrated probability {p:.4f} (0-1 scale); {stated}",
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
