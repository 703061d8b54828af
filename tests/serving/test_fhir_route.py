"""``POST /v1/fhir/predict`` with whole EHR Bundles: the record, insufficient data, size, refusals."""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import pytest

from clinical_mlops.http.app import MAX_BODY_BYTES, create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import load_task
from serving.fhir_bundles import MRN_SYSTEM, ehr_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

ICU = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def fhir_api(served: dict[str, Any]) -> dict[str, Any]:
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    app = create_app(predictor, auth, base_url="https://cds.example")
    token = auth.issue(subject="dr.f", roles=["clinician"])
    yield {
        "client": TestClient(app),
        "predictor": predictor,
        "headers": {"Authorization": f"Bearer {token}"},
    } | served
    predictor.close()


def _post(api: dict[str, Any], body: dict[str, Any]) -> Any:
    return api["client"].post("/v1/fhir/predict", headers=api["headers"], json=body)


def test_a_whole_ehr_bundle_is_scored_and_recorded_with_its_encounter_pseudonymised(
    fhir_api: dict[str, Any],
) -> None:
    bundle = ehr_bundle(ICU, fhir_api["rows"][30], "MRN-30")
    r = _post(fhir_api, {"purpose": "direct_care", "bundle": bundle})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["resourceType"] == "Bundle" and answer["type"] == "collection"
    ra, provenance = (e["resource"] for e in answer["entry"])
    assert provenance["resourceType"] == "Provenance"
    assert ra["resourceType"] == "RiskAssessment" and ra["subject"]["reference"] == "Patient/MRN-30"
    view = fhir_api["predictor"].ledger.read(int(ra["identifier"][0]["value"]))
    p = view.payload
    assert view.entry.type == "inference" and p["encounter"].startswith("enc_")
    assert "'e1'" not in str(p) and "MRN-30" not in str(p)  # neither id reaches the record
    assert p["basis"] == [b["reference"] for b in ra["basis"]] and p["ignored"] > 0
    assert set(p["inputs"]) == set(ICU.feature_names)  # nothing undeclared is recorded
    # the same encounter again: the same pseudonym
    again = _post(fhir_api, {"purpose": "direct_care", "bundle": bundle})
    seq = int(again.json()["entry"][0]["resource"]["identifier"][0]["value"])
    assert fhir_api["predictor"].ledger.read(seq).payload["encounter"] == p["encounter"]


def test_too_little_data_is_an_audited_insufficient_data_answer(fhir_api: dict[str, Any]) -> None:
    row = {
        k: (v if k in ("age", "sex", "diagnosis_category", "heart_rate") else None)
        for k, v in fhir_api["rows"][31].items()
    }
    before = fhir_api["predictor"].ledger.size()
    r = _post(fhir_api, {"purpose": "direct_care", "bundle": ehr_bundle(ICU, row, "MRN-31")})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "insufficient_data" and "lactate" in detail["message"]
    assert "max_missing_feature_fraction" in detail["message"]
    view = fhir_api["predictor"].ledger.read(detail["audit_seq"])
    assert view.entry.type == "inference_refused" and view.payload["code"] == "insufficient_data"
    assert fhir_api["predictor"].ledger.size() == before + 1


def test_a_bad_bundle_is_refused_naming_the_entry_and_nothing_is_recorded(
    fhir_api: dict[str, Any],
) -> None:
    bundle = ehr_bundle(ICU, fhir_api["rows"][32], "MRN-32")
    bundle["entry"].append({"resource": {"resourceType": "Patient", "id": "MRN-99"}})
    before = fhir_api["predictor"].ledger.size()
    r = _post(fhir_api, {"purpose": "direct_care", "bundle": bundle})
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["loc"][:3] == ["body", "bundle", "entry"] and "one patient" in problem["msg"]
    r = _post(
        fhir_api,
        {
            "purpose": "direct_care",
            "subject_id": "MRN-33",
            "bundle": ehr_bundle(ICU, fhir_api["rows"][32], "MRN-32"),
        },
    )
    assert r.status_code == 422 and "not the Bundle's Patient" in r.text
    assert fhir_api["predictor"].ledger.size() == before


def test_an_oversized_bundle_is_refused_naming_the_limit(fhir_api: dict[str, Any]) -> None:
    bundle = ehr_bundle(ICU, fhir_api["rows"][34], "MRN-34")
    filler = {"resourceType": "Basic", "id": "x", "text": {"div": "x" * (1024 * 1024)}}
    bundle["entry"] += [{"resource": filler}] * 50  # a 50 MB Bundle
    before = fhir_api["predictor"].ledger.size()
    r = _post(fhir_api, {"purpose": "direct_care", "bundle": bundle})
    assert r.status_code == 413
    assert "FHIR Bundle" in r.text and str(MAX_BODY_BYTES) in r.text
    assert fhir_api["predictor"].ledger.size() == before


def test_the_patient_identifier_system_is_configurable(fhir_api: dict[str, Any]) -> None:
    bundle = ehr_bundle(ICU, fhir_api["rows"][35], "p35")
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["identifier"] = [{"system": MRN_SYSTEM, "value": "MRN-35"}]
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    app = create_app(fhir_api["predictor"], auth, fhir_identifier_system=MRN_SYSTEM)
    headers = {"Authorization": "Bearer " + auth.issue(subject="dr.f", roles=["clinician"])}
    r = TestClient(app).post(
        "/v1/fhir/predict", headers=headers, json={"purpose": "direct_care", "bundle": bundle}
    )
    assert r.status_code == 200, r.text
    ra = r.json()["entry"][0]["resource"]
    assert ra["resourceType"] == "RiskAssessment" and ra["subject"]["reference"] == "Patient/p35"


def test_an_encounter_naming_a_condition_the_bundle_lacks_is_scored_from_the_conditions_sent(
    fhir_api: dict[str, Any],
) -> None:
    row = fhir_api["rows"][36]
    bundle = ehr_bundle(ICU, row, "MRN-36")
    encounter = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Encounter" and e["resource"].get("diagnosis")
    )
    # an EHR's Encounter names diagnoses recorded elsewhere (a search of Encounters does not
    # include the Conditions they name): the one absent ranks first, the one sent second
    for d in encounter["diagnosis"]:
        d["rank"] += 1
    encounter["diagnosis"].append({"condition": {"reference": "Condition/not-sent"}, "rank": 1})
    r = _post(fhir_api, {"purpose": "direct_care", "bundle": bundle})
    assert r.status_code == 200, r.text
    seq = int(r.json()["entry"][0]["resource"]["identifier"][0]["value"])
    inputs = fhir_api["predictor"].ledger.read(seq).payload["inputs"]
    assert row["diagnosis_category"] is not None
    assert inputs["diagnosis_category"] == row["diagnosis_category"]
