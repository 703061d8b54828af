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

from clinical_mlops.application.scoring import FhirScoring, score_fhir_bundle
from clinical_mlops.errors import FhirDataUnavailable, InputInvalid
from clinical_mlops.hashing import is_text
from clinical_mlops.serving.fhir_client import FetchLimits, fetch_missing, prefetch_templates
from clinical_mlops.serving.predictor import Predictor

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
    """Return one collection Bundle of everything fetched or prefetched, each resource once.

    Searchsets are flattened; a resource read twice (the encounter in context is also
    one of the patient's Encounters) is kept once, so it is not counted as a prior stay.
    """
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(res: Any, full_url: Any, where: str) -> None:
        if not isinstance(res, Mapping):
            raise InputInvalid([(where, "expected a FHIR resource")])
        rtype, rid = res.get("resourceType"), res.get("id")
        # a searchset may carry OperationOutcomes (search.mode outcome): not data
        if rtype == "OperationOutcome":
            return
        if isinstance(rtype, str) and isinstance(rid, str) and rid:
            if f"{rtype}/{rid}" in seen:
                return
            seen.add(f"{rtype}/{rid}")
        entry: dict[str, Any] = {"resource": res}
        if isinstance(full_url, str) and full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)

    for key, found in data.items():
        if found is None:
            continue  # the EHR has no data for this key
        where = f"prefetch.{key}"
        if not isinstance(found, Mapping):
            raise InputInvalid([(where, "expected a FHIR resource, a Bundle or null")])
        if found.get("resourceType") != "Bundle":
            add(found, None, where)
            continue
        items = found.get("entry") or []
        if not isinstance(items, list):
            raise InputInvalid([(f"{where}.entry", "expected a list of entries")])
        for i, entry in enumerate(items):
            if not isinstance(entry, Mapping):
                raise InputInvalid([(f"{where}.entry[{i}]", "expected an entry with a resource")])
            add(entry.get("resource"), entry.get("fullUrl"), f"{where}.entry[{i}].resource")
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def answer_patient_view(
    predictor: Predictor,
    call: PatientView,
    *,
    requester: str,
    sites: Sequence[str] | None,
    fhir_servers: Sequence[str],
    limits: FetchLimits | None = None,
    identifier_system: str | None = None,
) -> FhirScoring:
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
    templates = prefetch_templates(spec)
    data = fetch_missing(
        templates,
        call.prefetch,
        call.context,
        server=call.fhir_server,
        authorization=call.fhir_authorization,
        allowed=fhir_servers,
        limits=limits,
    )
    if "observations" in templates and "observations" not in data:
        raise FhirDataUnavailable(
            "observations: not prefetched, and the call names no fhirServer with a token to "
            "read them from; nothing was scored"
        )
    # patientId is the Patient's id: the reader refuses a Patient that is someone else, and
    # identifies the patient as configured (Patient.id, or an identifier system such as MRN)
    return score_fhir_bundle(
        predictor,
        _bundle(data),
        requester=requester,
        purpose="direct_care",
        sites=sites,
        subject=patient,
        encounter=encounter or None,
        request_id=f"cds-{call.hook_instance}",
        identifier_system=identifier_system,
    )
