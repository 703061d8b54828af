"""FHIR R4 adapters: a Bundle of Observations in, a RiskAssessment out (R-I4).

Inputs: an event feature's Observation codes are the ones its task spec declares
(``features[].fhir``); the spec, not this module, is the source of the codes read.
The static features (age, sex, diagnosis) may also come as Observations coded as in
:data:`LOINC`, whose other entries are the codings this module's examples write.
Several Observations of one variable are aggregated as the task spec declares
(lowest MAP, highest lactate, any vasopressor), so an EHR can send what it charted.

Output: ``RiskAssessment.prediction.probabilityDecimal`` is a **percentage
(0-100)**. Invariant ras-2 caps the value at 100, which only makes sense on a
percentage scale, so we follow it; the 0-1 probability and its scale are also
stated in ``note``. Qualitative risk uses the risk-probability code system; the
conformal set, flags and caveat go to ``note`` (FHIR has no field for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinical_mlops.errors import InputInvalid
from clinical_mlops.hashing import is_text
from clinical_mlops.serving.predictor import PredictionResult
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["LOCAL_SYSTEM", "LOINC", "LOINC_SYSTEM", "observations_to_features", "risk_assessment"]

LOINC_SYSTEM = "http://loinc.org"
LOCAL_SYSTEM = "urn:clinical-mlops:variable"
RISK_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
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
_STATIC = ("age", "sex", "diagnosis_category")


def _codes_of(spec: TaskSpec) -> dict[tuple[str, str], str]:
    """Return (system, code) -> feature: the spec's Observation codes and the static ones."""
    out = {(LOINC[n][0], LOINC[n][1]): n for n in _STATIC if n in spec.feature_names}
    for f in spec.event_features:
        for entry in f.fhir:
            if entry.resource == "Observation" and entry.derive is None:
                for code in entry.codes:
                    system, value = code.split("|", 1)
                    out[(system, value)] = f.name
    return out


def _observations(bundle: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise InputInvalid([("bundle.resourceType", "expected a FHIR Bundle")])
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InputInvalid([("bundle.entry", "expected a list of entries")])
    out = []
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(res, Mapping) or res.get("resourceType") != "Observation":
            raise InputInvalid([(f"bundle.entry[{i}]", "only Observation resources are accepted")])
        if not is_text(res.get("id", "")):
            raise InputInvalid([(f"bundle.entry[{i}].resource.id", "expected text")])
        out.append(res)
    return out


def _codings(concept: Any) -> list[tuple[Any, Any]]:
    """Return (system, code) of each coding of a CodeableConcept; malformed parts are skipped."""
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list):
        return []
    return [(c.get("system"), c.get("code")) for c in codings if isinstance(c, Mapping)]


def _value(res: Mapping[str, Any], where: str) -> tuple[Any, str | None]:
    if "valueQuantity" in res:
        q = res["valueQuantity"] or {}
        unit = q.get("code") or q.get("unit") if isinstance(q, Mapping) else None
        if not isinstance(q, Mapping) or not isinstance(unit, str | None):
            raise InputInvalid([(where, "valueQuantity must be an object with a text unit")])
        return q.get("value"), unit
    if "valueBoolean" in res:
        return bool(res["valueBoolean"]), None
    if "valueCodeableConcept" in res:
        codings = _codings(res["valueCodeableConcept"])
        return (codings[0][1] if codings else None), None
    if "valueInteger" in res:
        return res["valueInteger"], None
    raise InputInvalid([(where, "the Observation has no value[x] this service reads")])


def observations_to_features(
    bundle: Mapping[str, Any], spec: TaskSpec
) -> tuple[dict[str, Any], list[str]]:
    """Return (feature values with units, references of the Observations used).

    Unknown codes are refused (undeclared inputs, R-P1), as are observations whose
    status is not final, amended or corrected.
    """
    grouped: dict[str, list[tuple[str, Any, str | None]]] = {}
    refs: list[str] = []
    problems: list[tuple[str, str]] = []
    by_code = _codes_of(spec)
    for i, res in enumerate(_observations(bundle)):
        where = f"bundle.entry[{i}]"
        codings = [c for c in _codings(res.get("code")) if all(isinstance(p, str) for p in c)]
        name = next((by_code[c] for c in codings if c in by_code), None)
        if name is None:
            codes = ", ".join(f"{system}|{code}" for system, code in codings) or "none"
            problems.append((where, f"code {codes} is not an input of this task (R-P1)"))
            continue
        if res.get("status") not in ("final", "amended", "corrected"):
            problems.append((where, f"status {res.get('status')!r}: only final results are used"))
            continue
        value, unit = _value(res, where)
        when = str(res.get("effectiveDateTime") or "")
        grouped.setdefault(name, []).append((when, value, unit))
        if res.get("id"):
            refs.append(f"Observation/{res['id']}")
    if problems:
        raise InputInvalid(problems)
    features: dict[str, Any] = {}
    for name, items in grouped.items():
        f = spec.feature(name)
        units = {u for _, _, u in items}
        if len(units) > 1:
            raise InputInvalid([(f"features.{name}", f"mixed units {sorted(map(str, units))}")])
        unit = units.pop()
        values = [v for _, v, _ in sorted(items, key=lambda t: t[0])]
        if f.kind == "categorical" or f.aggregation in ("static", "last"):
            value = values[-1]
        elif f.kind == "flag" or f.aggregation == "any":
            value = int(any(bool(v) for v in values))
        else:
            nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(nums) != len(values):
                raise InputInvalid([(f"features.{name}", "expected numeric values")])
            value = {"min": min, "max": max}.get(f.aggregation, lambda x: sum(x) / len(x))(nums)
        features[name] = {"value": value, "unit": unit} if unit else value
    return features, refs


def risk_assessment(
    result: PredictionResult,
    *,
    spec: TaskSpec,
    patient_reference: str,
    basis: list[str],
    occurrence: str,
    model_card_url: str | None = None,
) -> dict[str, Any]:
    """Return a FHIR R4 RiskAssessment (as JSON) for a scored prediction."""
    if result.status != "scored" or result.probability is None:
        raise ValueError("only a scored prediction shown to clinicians becomes a RiskAssessment")
    p = result.probability
    label = spec.label.description.strip()
    coverage = f" at {result.coverage:.0%} coverage" if result.coverage is not None else ""
    notes = [
        f"Calibrated probability {p:.4f} (0-1 scale); probabilityDecimal is the same value as a "
        "percentage (0-100), following invariant ras-2.",
        f"Conformal prediction set{coverage}: {{{', '.join(result.conformal_set or [])}}}"
        + (" — more than one outcome is plausible" if len(result.conformal_set or []) != 1 else ""),
        "Flags: " + (", ".join(result.flags) if result.flags else "none"),
        "Decision support only: review with the clinical picture; not for use as the sole basis "
        f"of a decision, nor outside its validated population ({spec.intended_use.population}).",
    ]
    if result.escalated:
        notes.append("Routed to human review: " + "; ".join(result.escalation))
    return {
        "resourceType": "RiskAssessment",
        "id": f"pred-{result.audit_seq}",
        "status": "final",
        "subject": {"reference": patient_reference},
        "occurrenceDateTime": occurrence,
        "identifier": [{"system": "urn:clinical-mlops:audit-seq", "value": str(result.audit_seq)}],
        "method": {
            "coding": [
                {
                    "system": "urn:clinical-mlops:model",
                    "code": str(result.model_version),
                    "display": f"{spec.title} ({result.release})",
                }
            ],
            "text": "Gradient-boosted or logistic model, isotonic calibration, Mondrian conformal set",
        },
        "performer": {
            "display": f"clinical-mlops model {result.model_version}",
            "identifier": {"system": "urn:clinical-mlops:release", "value": str(result.release)},
        },
        "basis": [{"reference": r} for r in basis],
        "prediction": [
            {
                "outcome": {"text": label},
                "probabilityDecimal": round(p * 100, 4),
                "qualitativeRisk": {
                    "coding": [{"system": RISK_SYSTEM, "code": result.risk, "display": result.risk}]
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
