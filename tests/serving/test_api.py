"""The HTTP service: authorisation matrix, error statuses, fallback, overrides, CDS Hooks, FHIR."""

from __future__ import annotations

import secrets
import warnings
from typing import Any

import pytest

from clinical_mlops.governance.board import Governance
from clinical_mlops.http.app import create_app
from clinical_mlops.http.deps import ROUTE_ROLES
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionResult, Predictor
from clinical_mlops.serving.auth import ROLES, AuthConfig
from clinical_mlops.serving.cds_hooks import card_for
from clinical_mlops.tasks import load_task
from identities import console
from serving.fhir_bundles import ehr_bundle, ehr_prefetch

# The CDS service the served (ICU) task declares in its spec's presentation section.
SERVICE_ID = load_task("icu_mortality_48h").words().service_id

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

ROUTES = sorted(ROUTE_ROLES)


@pytest.fixture(scope="module")
def api(served: dict[str, Any]) -> dict[str, Any]:
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    key = "cmk_" + secrets.token_hex(16)
    auth.add_api_key(key, name="ehr-interface", roles=["system"])
    app = create_app(predictor, auth, base_url="https://cds.example")
    client = TestClient(app)
    yield {"client": client, "app": app, "auth": auth, "key": key, "predictor": predictor} | served
    predictor.close()


def bearer(api: dict[str, Any], *roles: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + api["auth"].issue(subject="dr.t", roles=list(roles), **kw)}


def one(api: dict[str, Any], i: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": api["rows"][i],
    } | kw


ICU_SPEC = load_task("icu_mortality_48h")


def call(api: dict[str, Any], method: str, route: str, headers: dict[str, str]) -> int:
    c = api["client"]
    path = (
        route.replace("{service_id}", SERVICE_ID)
        .replace("{release}", api["release"])
        .replace("{prediction_id}", "0")
    )
    bodies = {
        "/v1/predict": one(api, 10),
        "/v1/fhir/predict": {
            "subject_id": "MRN-11",
            "purpose": "direct_care",
            "setting": "icu",
            "bundle": ehr_bundle(ICU_SPEC, api["rows"][11], "MRN-11"),
        },
        "/v1/overrides": {"prediction_id": 0, "action": "override"},
        "/v1/outcomes": {"prediction_ids": [0], "outcome": 1},
        f"/cds-services/{SERVICE_ID}": {
            "hook": "patient-view",
            "hookInstance": secrets.token_hex(8),
            "context": {"patientId": "MRN-12"},
            "prefetch": ehr_prefetch(ICU_SPEC, api["rows"][12], "MRN-12"),
        },
        f"/cds-services/{SERVICE_ID}/feedback": {
            "feedback": [{"card": "not-a-card", "outcome": "accepted"}]
        },
    }
    if method == "GET":
        return c.get(path, headers=headers).status_code
    return c.post(path, headers=headers, json=bodies[path]).status_code


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_authorisation_matrix(api: dict[str, Any], method: str, route: str) -> None:
    allowed = ROUTE_ROLES[(method, route)]
    statuses = {}
    for role in ROLES:
        statuses[role] = call(api, method, route, bearer(api, role))
    statuses["none"] = call(api, method, route, {})
    statuses["bad-token"] = call(api, method, route, {"Authorization": "Bearer not.a.token"})
    statuses["other-audience"] = call(
        api, method, route, bearer(api, "clinician", "system", audience="another-service")
    )
    statuses["expired"] = call(api, method, route, bearer(api, *ROLES, ttl_seconds=-60))
    statuses["bad-key"] = call(api, method, route, {"X-API-Key": "cmk_wrong"})
    statuses["api-key"] = call(api, method, route, {"X-API-Key": api["key"]})
    for who, code in statuses.items():
        role = "system" if who == "api-key" else who
        if not allowed or role in allowed:
            assert code not in (401, 403), (who, code)
        elif role in ROLES:
            assert code == 403, (who, code)
        else:
            assert code == 401, (who, code)


def test_every_route_declares_roles_and_openapi_is_complete(api: dict[str, Any]) -> None:
    paths = api["client"].get("/openapi.json").json()["paths"]
    served = {(m.upper(), path) for path, ops in paths.items() for m in ops}
    assert served == set(ROUTE_ROLES)
    for ops in paths.values():
        for op in ops.values():
            assert op.get("summary") and "responses" in op


def test_invalid_input_is_422_naming_the_field_and_writes_nothing(api: dict[str, Any]) -> None:
    led = api["predictor"].ledger
    before = led.size()
    body = one(api, 1)
    body["features"] = body["features"] | {"lactate": "high", "potassium": 4}
    r = api["client"].post("/v1/predict", headers=bearer(api, "clinician"), json=body)
    assert r.status_code == 422
    locs = [tuple(d["loc"]) for d in r.json()["detail"]]
    assert ("body", "features", "lactate") in locs and ("body", "features", "potassium") in locs
    huge = {"items": [one(api, 1)] * 1001}
    assert (
        api["client"].post("/v1/predict", headers=bearer(api, "clinician"), json=huge).status_code
        == 422
    )
    assert led.size() == before


def test_missing_consent_is_403_with_a_refusal_event(api: dict[str, Any]) -> None:
    r = api["client"].post(
        "/v1/predict",
        headers=bearer(api, "clinician"),
        json=one(api, 2, subject_id="MRN-NOCONSENT"),
    )
    assert r.status_code == 403
    detail = r.json()["detail"]
    assert detail["code"] == "consent_not_granted"
    assert api["predictor"].ledger.read(detail["audit_seq"]).entry.type == "consent_refused"


def test_under_18_refused(api: dict[str, Any]) -> None:
    body = one(api, 3)
    body["features"] = body["features"] | {"age": 16}
    r = api["client"].post("/v1/predict", headers=bearer(api, "clinician"), json=body)
    assert r.status_code == 422 and r.json()["detail"]["code"] == "outside_intended_use"


def test_suspended_model_answers_with_the_fallback(api: dict[str, Any]) -> None:
    v = api["release"]
    with Registry.open(api["ws"]) as reg, Governance(reg) as gov:
        gov.suspend(
            v, actor="demo.dr.lena.ortiz", why="api test", identity=console("demo.dr.lena.ortiz")
        )
    try:
        r = api["client"].post("/v1/predict", headers=bearer(api, "clinician"), json=one(api, 4))
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "fallback" and body["flags"] == ["suspended"]
        assert "probability" not in body and body["fallback"]["name"] == "SOFA-like score"
    finally:
        with Registry.open(api["ws"]) as reg, Governance(reg) as gov:
            gov.resume(
                v, actor="demo.sam.okafor", why="api test over", identity=console("demo.sam.okafor")
            )


def test_override_round_trip_keeps_the_explanation_shown(api: dict[str, Any]) -> None:
    c = api["client"]
    pred = c.post("/v1/predict", headers=bearer(api, "clinician"), json=one(api, 5)).json()
    r = c.post(
        "/v1/overrides",
        headers=bearer(api, "clinician"),
        json={
            "prediction_id": pred["audit_seq"],
            "action": "override",
            "reason_code": "clinical-judgement",
            "comment": "looks well",
        },
    )
    assert r.status_code == 201
    view = api["predictor"].ledger.read(r.json()["seq"])
    assert view.entry.type == "override" and view.entry.actor == "user:dr.t"
    assert view.payload["explanation_shown"] == pred["contributions"]
    assert view.payload["model_version"] == pred["model_version"]
    bad = c.post(
        "/v1/overrides",
        headers=bearer(api, "clinician"),
        json={"prediction_id": pred["audit_seq"], "action": "override", "reason_code": "because"},
    )
    assert bad.status_code == 422 and "not declared" in bad.json()["detail"]["message"]
    out = c.post(
        "/v1/outcomes",
        headers={"X-API-Key": api["key"]},
        json={"prediction_ids": [pred["audit_seq"]], "outcome": 0},
    )
    assert out.status_code == 201
    linked = api["predictor"].ledger.read(out.json()["outcome_seqs"][0])
    assert linked.entry.type == "outcome" and linked.payload["prediction_seq"] == pred["audit_seq"]


def test_cds_hooks_discovery_card_and_feedback(api: dict[str, Any]) -> None:
    c = api["client"]
    services = c.get("/cds-services").json()["services"]
    assert {"hook", "title", "description", "id", "prefetch"} <= set(services[0])
    assert services[0]["hook"] == "patient-view" and services[0]["id"] == SERVICE_ID
    call_body = {
        "hook": "patient-view",
        "hookInstance": "h-1",
        "context": {"patientId": "MRN-6", "userId": "Practitioner/1"},
        "prefetch": ehr_prefetch(ICU_SPEC, api["rows"][6], "MRN-6"),
    }
    cards = c.post(
        f"/cds-services/{SERVICE_ID}", headers=bearer(api, "clinician"), json=call_body
    ).json()["cards"]
    card = cards[0]
    assert {"uuid", "summary", "indicator", "source", "detail", "overrideReasons"} <= set(card)
    assert len(card["summary"]) < 140 and "%" in card["summary"] and "set" in card["summary"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert "icu_mortality_48h-" in card["source"]["label"] and card["source"]["url"].endswith(
        "/card"
    )
    reason = card["overrideReasons"][0]
    fb = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "family meeting"},
                "outcomeTimestamp": "2026-03-02T09:00:00Z",
            }
        ]
    }
    r = c.post(f"/cds-services/{SERVICE_ID}/feedback", headers=bearer(api, "clinician"), json=fb)
    assert r.status_code == 200
    view = api["predictor"].ledger.read(r.json()["override_seqs"][0])
    assert view.payload["source"] == "cds-hooks" and view.payload["reason_code"] == reason["code"]
    assert view.payload["explanation_shown"]


@pytest.mark.parametrize(
    ("probability", "coverage", "shown"),
    [
        (0.99993, 0.95, ">99.9 % (high); 95% set"),
        (0.0004, 0.9, "<0.1 % (low); 90% set"),
        (0.004, 0.9, "0.4 % (low); 90% set"),
        (0.37, 0.8, "37.0 % (high); 80% set"),
        (0.99, 0.9, "99.0 % (high); 90% set"),
        (1.0, 0.9, ">99.9 % (high); 90% set"),
    ],
)
def test_card_summary_never_rounds_to_certainty_and_names_the_release_coverage(
    probability: float, coverage: float, shown: str
) -> None:
    risk = "low" if probability < 0.1 else "high"
    result = PredictionResult(
        status="scored",
        request_id="r",
        audit_seq=7,
        release="t@1",
        model_version="t-1",
        probability=probability,
        risk=risk,
        conformal_set=["yes"],
        coverage=coverage,
        completeness=1.0,
    )
    card = card_for(result, origin="o", model_card_url="http://x/card", outcome_words="Risk")
    assert card is not None and card["summary"].startswith(f"Risk: {shown} {{yes}}")


def test_fhir_risk_assessment_validates(api: dict[str, Any]) -> None:
    from fhir.resources.R4B.riskassessment import RiskAssessment

    body = {
        "subject_id": "MRN-7",
        "purpose": "direct_care",
        "setting": "icu",
        "bundle": ehr_bundle(ICU_SPEC, api["rows"][7], "MRN-7"),
    }
    r = api["client"].post("/v1/fhir/predict", headers=bearer(api, "clinician"), json=body)
    assert r.status_code == 200, r.text
    doc = r.json()["entry"][0]["resource"]
    ra = RiskAssessment.model_validate(doc)
    pred = ra.prediction[0]
    assert 0 <= float(pred.probabilityDecimal) <= 100
    assert pred.qualitativeRisk.coding[0].code in ("negligible", "low", "moderate", "high")
    coverage = api["predictor"].scorer(api["release"]).coverage
    notes = " ".join(n.text for n in ra.note)
    measured = [f.name for f in ICU_SPEC.event_features if api["rows"][7].get(f.name) is not None]
    assert len(ra.basis) >= len(measured) and all(b.reference for b in ra.basis)
    assert f"Conformal prediction set at {coverage:.0%} coverage" in notes
    assert doc["method"]["coding"][0]["code"].startswith("icu_mortality_48h-")


def test_metrics_and_health(api: dict[str, Any]) -> None:
    c = api["client"]
    c.post("/v1/predict", headers=bearer(api, "clinician"), json=one(api, 8))
    text = c.get("/metrics", headers={"X-API-Key": api["key"]}).text
    assert (
        'clinical_mlops_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    )
    assert "clinical_mlops_http_request_duration_seconds_bucket" in text
    assert "clinical_mlops_model_status" in text and "clinical_mlops_predictions_total" in text
    assert c.get("/healthz", headers=bearer(api, "auditor")).json()["status"] == "ok"
