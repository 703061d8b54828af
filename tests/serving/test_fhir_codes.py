"""The FHIR reader takes its codes from the task spec, not from a table in code."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clinical_mlops.serving.fhir_input import read_bundle
from clinical_mlops.tasks import load_task, task_from_mapping

SPEC = load_task("icu_mortality_48h")
NOW = datetime(2030, 1, 2, 0, 0)


def _bundle(system: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"}},
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "status": "in-progress",
                    "class": {"code": "IMP"},
                    "subject": {"reference": "Patient/p1"},
                    "period": {"start": "2030-01-01T00:00:00Z"},
                }
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "subject": {"reference": "Patient/p1"},
                    "encounter": {"reference": "Encounter/e1"},
                    "code": {"coding": [{"system": system, "code": code}]},
                    "effectiveDateTime": "2030-01-01T08:00:00Z",
                    "valueQuantity": {"value": value, "unit": "%", "code": "%"},
                }
            },
        ],
    }


def _spo2(spec: Any, bundle: dict[str, Any]) -> list[float]:
    reading = read_bundle(bundle, spec, now=NOW)
    return [v for name, _, v in reading.unit.events if name == "spo2"]


def test_a_code_the_spec_declares_is_read():
    # SpO2 in arterial blood (2708-6), as simulated EHRs send it beside pulse oximetry.
    bundle = _bundle("http://loinc.org", "2708-6", 93.0)
    assert _spo2(SPEC, bundle) == [93.0]
    assert "Observation/o1" in read_bundle(bundle, SPEC, now=NOW).basis


def test_a_code_removed_from_the_spec_is_no_longer_read():
    data = SPEC.model_dump(mode="json")
    spo2 = next(f for f in data["features"] if f["name"] == "spo2")
    spo2["fhir"] = [{"codes": ["urn:example:site|SAT"]}]
    spec = task_from_mapping(data, source="test")
    assert _spo2(spec, _bundle("urn:example:site", "SAT", 95.0)) == [95.0]
    ignored = _bundle("http://loinc.org", "59408-5", 95.0)
    assert _spo2(spec, ignored) == []
    assert read_bundle(ignored, spec, now=NOW).ignored == 1
