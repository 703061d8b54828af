"""Reading FHIR Bundles as EHRs send them, and refusing bad ones with the entry and rule named."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.errors import InputInvalid
from clinical_mlops.serving.fhir_input import read_bundle
from clinical_mlops.tasks import load_task
from serving.fhir_bundles import MRN_SYSTEM, render_stay

ICU = load_task("icu_mortality_48h")
WARD = load_task("readmission_30d")
ADMIT = datetime(2026, 3, 1, 8, 0)


def _events(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "charttime": [ADMIT + timedelta(hours=h) for _, h, _ in rows],
            "variable": [v for v, _, _ in rows],
            "value": [x for _, _, x in rows],
        }
    )


def _stay(**extra: Any) -> pd.Series:
    return pd.Series(
        {
            "stay_id": 7,
            "subject_id": 42,
            "hadm_id": 70,
            "age": 67.0,
            "sex": "F",
            "diagnosis_icd10": "J18.9",
            "admittime": ADMIT,
            "intime": ADMIT,
            "outtime": ADMIT + timedelta(hours=40),
            "dischtime": ADMIT + timedelta(hours=60),
        }
        | extra
    )


VITALS = [
    ("heart_rate", 1.0, 96.0),
    ("heart_rate", 30.0, 150.0),  # after the 24 h window: no feature
    ("map", 2.0, 71.0),
    ("map", 3.0, 64.0),
    ("spo2", 2.0, 93.0),
    ("resp_rate", 2.0, 22.0),
    ("temperature", 4.0, 38.3),
    ("gcs", 4.0, 13.0),
    ("creatinine", 5.0, 1.4),
    ("lactate", 5.0, 2.6),
    ("platelets", 5.0, 180.0),
    ("inr", 5.0, 1.3),
    ("vasopressor", 6.0, 1.0),
    ("ventilation", 6.0, 0.0),
]


def icu_bundle(seed: int = 1, kind: str = "collection") -> tuple[dict[str, Any], datetime, str]:
    return render_stay(ICU, _stay(), _events(VITALS), rng=np.random.default_rng(seed), kind=kind)


def _entry(bundle: dict[str, Any], pred: Any) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if pred(e.get("resource", {})))


def _refused(bundle: Any, *, now: datetime, **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(InputInvalid) as info:
        read_bundle(bundle, ICU, now=now, **kw)
    return info.value.problems


# -- what is read -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["collection", "searchset", "transaction"])
def test_a_bundle_gives_the_cohort_facts_and_the_declared_events_only(kind: str) -> None:
    bundle, now, enc = icu_bundle(kind=kind)
    r = read_bundle(bundle, ICU, now=now)
    assert r.subject_id == "p42" and r.encounter_id == enc and r.setting == "icu"
    assert r.patient_reference == "Patient/p42"
    c = r.unit.cohort
    assert (c["age"], c["sex"], c["diagnosis_icd10"]) == (67.0, "F", "J18.9")
    assert c["window_start"] == ADMIT and c["window_end"] == ADMIT + timedelta(hours=24)
    assert r.prediction_time == ADMIT + timedelta(hours=24)
    variables = {v for v, _, _ in r.unit.events}
    assert variables == {v for v, _, _ in VITALS}  # weight, BMI, glucose: not declared
    assert all(v != 999 for _, _, v in r.unit.events)
    # entered-in-error, cancelled and preliminary copies carry the valid range's top: never read
    highs = {f.variable: f.valid_range[1] for f in ICU.event_features if f.valid_range}
    assert not any(v == highs[var] and var not in ("vasopressor",) for var, _, v in r.unit.events)
    assert r.ignored >= 9 and all("/" in b for b in r.basis)
    assert not any(b.startswith(("Patient/", "Encounter/")) for b in r.basis)


def test_units_convert_and_panels_give_a_mean_pressure() -> None:
    bundle, now, _ = icu_bundle()
    obs = bundle["entry"][
        _entry(
            bundle,
            lambda r: (
                r.get("id")
                and r.get("resourceType") == "Observation"
                and r["code"]["coding"][0]["code"] in ("2160-0", "14682-9")
            ),
        )
    ]["resource"]
    obs["valueQuantity"] = {
        "value": 123.76,
        "unit": "µmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "umol/L",
    }
    bp = bundle["entry"][
        _entry(
            bundle,
            lambda r: (
                r.get("resourceType") == "Observation"
                and r["code"]["coding"][0]["code"] in ("8478-0", "85354-9")
            ),
        )
    ]["resource"]
    bp.pop("valueQuantity", None)
    bp["code"] = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    bp["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {
                "value": 16.0,
                "unit": "kPa",
                "system": "http://unitsofmeasure.org",
                "code": "kPa",
            },
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 60, "unit": "mmHg"},
        },
    ]
    r = read_bundle(bundle, ICU, now=now)
    creat = [v for var, _, v in r.unit.events if var == "creatinine"]
    assert any(abs(v - 123.76 * 113.12 / 10000) < 1e-9 for v in creat)
    maps = [v for var, _, v in r.unit.events if var == "map"]
    assert any(abs(v - (16.0 * 7.500615758 + 120) / 3) < 1e-3 for v in maps)


def test_the_subject_comes_from_the_configured_identifier_and_an_explicit_one_must_agree() -> None:
    bundle, now, _ = icu_bundle()
    assert read_bundle(bundle, ICU, now=now, identifier_system=MRN_SYSTEM).subject_id == "MRN-42"
    assert read_bundle(bundle, ICU, now=now, subject="MRN-42").subject_id == "p42"
    problems = _refused(bundle, now=now, subject="MRN-43")
    assert problems[0][0] == "subject" and "not the Bundle's Patient" in problems[0][1]
    problems = _refused(bundle, now=now, identifier_system="urn:other")
    assert problems[0][0].endswith(".resource.identifier") and "urn:other" in problems[0][1]


def test_readmission_reads_disposition_prior_stays_and_anchors_at_discharge() -> None:
    stay = _stay(discharge_location="HOME_HEALTH")
    prior = [(60, ADMIT - timedelta(days=90), ADMIT - timedelta(days=85))]
    bundle, now, enc = render_stay(
        WARD,
        stay,
        _events([("heart_rate", 50.0, 88.0), ("followup_scheduled", 59.0, 1.0)]),
        diagnoses=["I50.9", "E11.9"],
        prior=prior,
        rng=np.random.default_rng(3),
    )
    r = read_bundle(bundle, WARD, now=now, encounter=enc)
    c = r.unit.cohort
    assert c["discharge_location"] == "HOME_HEALTH" and c["diagnosis_icd10"] == "J18.9"
    assert sorted(r.unit.diagnoses) == ["E11.9", "I50.9", "J18.9"]
    # this stay and the prior inpatient one, not the emergency visit
    assert sorted(t for _, t in r.unit.admissions) == [prior[0][1], ADMIT]
    assert r.prediction_time == ADMIT + timedelta(hours=60) and r.setting == "ward"
    # still in hospital: the request time stands for discharge
    i = _entry(bundle, lambda res: res.get("id") == enc)
    bundle["entry"][i]["resource"]["status"] = "in-progress"
    del bundle["entry"][i]["resource"]["period"]["end"]
    assert read_bundle(bundle, WARD, now=now, encounter=enc).prediction_time == now


# -- bad input --------------------------------------------------------------------------------


def test_entries_that_are_not_resources_and_nested_bundles_are_refused() -> None:
    bundle, now, _ = icu_bundle()
    for bad, rule in (
        (1.5, "must be an object"),
        ({"fullUrl": "x"}, "must hold a resource"),
        ({"resource": {"resourceType": "Bundle", "type": "collection"}}, "nested Bundle"),
    ):
        b = copy.deepcopy(bundle)
        b["entry"].insert(3, bad)
        path, msg = _refused(b, now=now)[0]
        assert path.startswith("bundle.entry[3]") and rule in msg
    b = copy.deepcopy(bundle) | {"type": "history"}
    assert _refused(b, now=now)[0][0] == "bundle.type"


def test_a_reference_to_an_encounter_missing_from_the_bundle_is_refused() -> None:
    bundle, now, _ = icu_bundle()
    i = _entry(
        bundle,
        lambda r: (
            r.get("resourceType") == "Observation" and r["code"]["coding"][0]["code"] == "8867-4"
        ),
    )
    bundle["entry"][i]["resource"]["encounter"] = {"reference": "Encounter/nowhere"}
    path, msg = _refused(bundle, now=now)[0]
    assert path == f"bundle.entry[{i}].resource.encounter.reference" and "no Encounter" in msg


def test_contradictory_patients_are_refused() -> None:
    bundle, now, _ = icu_bundle()
    two = copy.deepcopy(bundle)
    two["entry"].append({"resource": {"resourceType": "Patient", "id": "p99"}})
    path, msg = _refused(two, now=now)[0]
    assert path == f"bundle.entry[{len(two['entry']) - 1}].resource" and "one patient" in msg
    other = copy.deepcopy(bundle)
    i = _entry(other, lambda r: r.get("resourceType") == "Observation")
    other["entry"][i]["resource"]["subject"] = {"reference": "Patient/p99"}
    path, msg = _refused(other, now=now)[0]
    assert path == f"bundle.entry[{i}].resource.subject.reference" and "another patient" in msg


def test_a_declared_code_without_a_system_is_refused_and_unknown_systems_are_ignored() -> None:
    bundle, now, _ = icu_bundle()
    i = _entry(
        bundle,
        lambda r: (
            r.get("resourceType") == "Observation" and r["code"]["coding"][0]["code"] == "8867-4"
        ),
    )
    unknown = copy.deepcopy(bundle)
    unknown["entry"][i]["resource"]["code"]["coding"][0]["system"] = "urn:local:vitals"
    r = read_bundle(unknown, ICU, now=now)
    assert not any(v == "heart_rate" and t.hour == 9 for v, t, _ in r.unit.events)
    del bundle["entry"][i]["resource"]["code"]["coding"][0]["system"]
    path, msg = _refused(bundle, now=now)[0]
    assert path == f"bundle.entry[{i}].resource.code" and "has no system" in msg


def test_units_that_cannot_convert_are_refused() -> None:
    bundle, now, _ = icu_bundle()
    i = _entry(
        bundle,
        lambda r: (
            r.get("resourceType") == "Observation" and r["code"]["coding"][0]["code"] == "8867-4"
        ),
    )
    bundle["entry"][i]["resource"]["valueQuantity"] = {
        "value": 90,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    path, msg = _refused(bundle, now=now)[0]
    assert (
        path == f"bundle.entry[{i}].resource.valueQuantity" and "heart_rate" in msg and "mg" in msg
    )


def test_future_timestamps_are_refused_beyond_the_clock_skew() -> None:
    bundle, now, _ = icu_bundle()
    i = _entry(
        bundle,
        lambda r: (
            r.get("resourceType") == "Observation" and r["code"]["coding"][0]["code"] == "8867-4"
        ),
    )
    res = bundle["entry"][i]["resource"]
    res["effectiveDateTime"] = (now + timedelta(minutes=3)).isoformat() + "Z"
    read_bundle(bundle, ICU, now=now)  # within the skew
    res["effectiveDateTime"] = (now + timedelta(hours=2)).isoformat() + "+00:00"
    path, msg = _refused(bundle, now=now)[0]
    assert (
        path == f"bundle.entry[{i}].resource.effectiveDateTime" and "after the request time" in msg
    )
    res["effectiveDateTime"] = "2026-03-01T09:00:00"
    assert "no time zone" in _refused(bundle, now=now)[0][1]


def test_a_bundle_without_an_encounter_names_what_is_missing() -> None:
    bundle, now, _ = icu_bundle()
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Encounter"]
    path, msg = _refused(bundle, now=now)[0]
    assert path == "bundle.entry" and "no Encounter" in msg and "period.start" in msg
