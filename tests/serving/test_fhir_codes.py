"""The FHIR Observation reader takes its codes from the task spec, not from a table in code."""

from __future__ import annotations

from typing import Any

import pytest

from clinical_mlops.errors import InputInvalid
from clinical_mlops.serving.fhir import observations_to_features
from clinical_mlops.tasks import load_task, task_from_mapping

SPEC = load_task("icu_mortality_48h")


def _bundle(system: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "code": {"coding": [{"system": system, "code": code}]},
                    "effectiveDateTime": "2030-01-01T08:00:00Z",
                    "valueQuantity": {"value": value, "unit": "%", "code": "%"},
                }
            }
        ],
    }


def test_a_code_the_spec_declares_is_read():
    # SpO2 in arterial blood (2708-6), as simulated EHRs send it beside pulse oximetry.
    features, refs = observations_to_features(_bundle("http://loinc.org", "2708-6", 93.0), SPEC)
    assert features == {"spo2": {"value": 93.0, "unit": "%"}} and refs == ["Observation/o1"]


def test_a_code_removed_from_the_spec_is_no_longer_read():
    data = SPEC.model_dump(mode="json")
    spo2 = next(f for f in data["features"] if f["name"] == "spo2")
    spo2["fhir"] = [{"codes": ["urn:example:site|SAT"]}]
    spec = task_from_mapping(data, source="test")
    features, _ = observations_to_features(_bundle("urn:example:site", "SAT", 95.0), spec)
    assert features == {"spo2": {"value": 95.0, "unit": "%"}}
    with pytest.raises(InputInvalid, match="59408-5"):
        observations_to_features(_bundle("http://loinc.org", "59408-5", 95.0), spec)
