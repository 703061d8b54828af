"""CDS Hooks ``patient-view``: the EHR's data for one patient in, one governed prediction out.

The data comes from the call's prefetch, or, for keys the EHR did not prefetch, from its
``fhirServer`` (:mod:`clinical_mlops.serving.fhir_client`). The resources are assembled
into one collection Bundle and read by the same FHIR reader as ``/v1/fhir/predict``, then
scored by the governed Predictor with purpose ``direct_care``. The encounter in context
travels with the request, so repeated calls for one patient and encounter update one
review case (:mod:`clinical_mlops.governance.queue`). Nothing is scored or recorded when
the data cannot be read (:class:`~clinical_mlops.errors.FhirDataUnavailable`) or is
malformed (:class:`~clinical_mlops.errors.InputInvalid`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clinical_mlops.errors import FhirDataUnavailable, InputInvalid
from clinical_mlops.hashing import is_text
from clinical_mlops.serving.fhir import observations_to_features
from clinical_mlops.serving.fhir_client import FetchLimits, fetch_missing, prefetch_templates
from clinical_mlops.serving.predictor import PredictionRequest, PredictionResult, Predictor

__all__ = ["PatientView", "answer_patient_view"]


@dataclass(frozen=True)
class PatientView:
    """A ``patient-view`` call, as the EHR sent it."""

    hook_instance: str
    context: Mapping[str, Any]
    prefetch: Mapping[str, Any]
    fhir_server: str | None = None
    fhir_authorization: Mapping[str, Any] | None = None


def _bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return one collection Bundle of the Observations fetched or prefetched."""
    entries: list[dict[str, Any]] = []
    found = data.get("observations")
    if found is not None:
        if not isinstance(found, Mapping) or found.get("resourceType") != "Bundle":
            raise InputInvalid([("prefetch.observations", "expected a FHIR Bundle or null")])
        for entry in found.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, Mapping) else None
            # a searchset may carry OperationOutcomes (search.mode outcome): not data
            if isinstance(res, Mapping) and res.get("resourceType") == "OperationOutcome":
                continue
            entries.append({"resource": res})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def answer_patient_view(
    predictor: Predictor,
    call: PatientView,
    *,
    requester: str,
    sites: Sequence[str] | None,
    fhir_servers: Sequence[str],
    limits: FetchLimits | None = None,
) -> PredictionResult:
    """Return the governed prediction for the patient (and encounter) a ``patient-view`` names.

    ``fhir_servers`` is the operator's allow-list for ``fhirServer``. The request id is
    ``cds-`` + the hook instance, so a call replayed by the EHR is refused as a duplicate
    rather than recorded twice.
    """
    patient = call.context.get("patientId")
    encounter = call.context.get("encounterId")
    problems = []
    if not isinstance(patient, str) or not patient or not is_text(patient):
        problems.append(("context.patientId", "a patientId (text) is required"))
    if encounter is not None and (not isinstance(encounter, str) or not is_text(encounter)):
        problems.append(("context.encounterId", "expected the Encounter id (text)"))
    if problems:
        raise InputInvalid(problems)
    spec = predictor.scorer(predictor.default).spec
    data = fetch_missing(
        prefetch_templates(spec),
        call.prefetch,
        call.context,
        server=call.fhir_server,
        authorization=call.fhir_authorization,
        allowed=fhir_servers,
        limits=limits,
    )
    if "observations" not in data:
        raise FhirDataUnavailable(
            "observations: not prefetched, and the call names no fhirServer with a token to "
            "read them from; nothing was scored"
        )
    features, _ = observations_to_features(_bundle(data), spec)
    request = PredictionRequest(
        subject_id=str(patient),
        purpose="direct_care",
        setting=spec.cohort.setting,
        features=features,
        request_id=f"cds-{call.hook_instance}",
        encounter=encounter or None,
    )
    return predictor.predict_many([request], requester=requester, where="", sites=sites)[0]
