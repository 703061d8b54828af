"""How EHRs link a stay's diagnoses and visits, as the third-party corpus sends them.

Two shapes found in clinosim's Bundles (tests/fhir_corpus.py) and common in EHR feeds:
comorbidities are problem-list Conditions that name no encounter and are linked to the stay
only from ``Encounter.diagnosis``; and a Bundle of a stay holds short visits during it (a
clinic check-up) that start after the admission.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clinical_mlops.features.online import features_for_one
from clinical_mlops.serving.fhir_input import read_bundle
from clinical_mlops.tasks import load_task

WARD = load_task("readmission_30d")
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _condition(cid: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
    } | extra


def _encounter(eid: str, klass: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": start, "end": end},
    } | extra


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "female",
        "birthDate": "1950-04-02",
    }
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (patient, *resources)],
    }


STAY = _encounter(
    "stay",
    "IMP",
    "2026-03-01T08:00:00Z",
    "2026-03-06T11:00:00Z",
    diagnosis=[
        {"condition": {"reference": "Condition/hf"}, "rank": 1},
        {"condition": {"reference": "Condition/dm"}, "rank": 2},
        {"condition": {"reference": "Condition/copd"}, "rank": 3},
    ],
)
# the discharge diagnosis names the stay; the comorbidities are problem-list items
DIAGNOSES = (
    _condition("hf", "I50.9", encounter={"reference": "Encounter/stay"}),
    _condition("dm", "E11.9"),
    _condition("copd", "J44.9"),
    _condition("unlisted", "C34.90"),  # on the problem list, not a diagnosis of this stay
)


def test_conditions_the_encounter_lists_are_its_diagnoses() -> None:
    reading = read_bundle(_bundle(STAY, *DIAGNOSES), WARD, now=NOW)
    assert sorted(reading.unit.diagnoses) == ["E11.9", "I50.9", "J44.9"]
    assert {"Condition/hf", "Condition/dm", "Condition/copd"} <= set(reading.basis)
    assert "Condition/unlisted" not in reading.basis
    features = features_for_one(WARD, reading.unit)
    assert features["diagnosis_category"] == "circulatory"
    # heart failure, diabetes and chronic lung disease: one Charlson point each
    assert features["charlson_index"] == 3


def test_the_principal_diagnosis_may_be_linked_from_the_encounter_only() -> None:
    listed_only = [_condition("hf", "I50.9"), *DIAGNOSES[1:]]
    reading = read_bundle(_bundle(STAY, *listed_only), WARD, now=NOW)
    assert reading.unit.cohort["diagnosis_icd10"] == "I50.9"
    assert features_for_one(WARD, reading.unit)["diagnosis_category"] == "circulatory"


def test_a_visit_during_the_stay_is_not_taken_for_the_stay() -> None:
    checkup = _encounter("checkup", "AMB", "2026-03-04T10:15:00Z", "2026-03-04T10:30:00Z")
    reading = read_bundle(_bundle(STAY, checkup, *DIAGNOSES), WARD, now=NOW)
    assert reading.encounter_id == "stay" and reading.setting == "ward"


def test_an_encounter_in_progress_is_taken_before_an_earlier_stay() -> None:
    emergency = _encounter("ed", "EMER", "2026-03-19T22:00:00Z", "2026-03-19T22:00:00Z")
    emergency["status"] = "in-progress"
    del emergency["period"]["end"]
    reading = read_bundle(_bundle(STAY, emergency, *DIAGNOSES), WARD, now=NOW)
    assert reading.encounter_id == "ed" and reading.setting == "emergency"
