"""The readmission task served end to end over CDS Hooks and FHIR, in its own words."""

from __future__ import annotations

import secrets
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clinical_mlops.application.privacy import grant_consent
from clinical_mlops.application.services import Services
from clinical_mlops.application.training import train_model
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from fhir_server import FhirServer
from registry.test_task_words import PHRASES, build_task
from registry_helpers import FAST, REVIEW_UNSURE

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from clinical_mlops.http.app import create_app

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"


def record(patient: str) -> list[dict[str, Any]]:
    """A heart-failure admission discharged yesterday, with a prior stay and vitals."""
    now = datetime.now(UTC).replace(microsecond=0)
    adm, dis = now - timedelta(days=6), now - timedelta(hours=20)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    subject = {"reference": f"Patient/{patient}"}
    enc = f"{patient}-enc"
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": patient, "gender": "female", "birthDate": "1948-05-02"},
        {
            "resourceType": "Encounter",
            "id": enc,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": subject,
            "period": {"start": iso(adm), "end": iso(dis)},
            "diagnosis": [{"condition": {"reference": f"Condition/{patient}-c1"}, "rank": 1}],
        },
        {
            "resourceType": "Encounter",
            "id": f"{patient}-prior",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": subject,
            "period": {
                "start": iso(adm - timedelta(days=90)),
                "end": iso(adm - timedelta(days=85)),
            },
        },
    ]
    for k, code in enumerate(["I50.9", "E11.9", "N18.3"], start=1):
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{patient}-c{k}",
                "subject": subject,
                "encounter": {"reference": f"Encounter/{enc}"},
                "code": {"coding": [{"system": ICD10, "code": code}]},
            }
        )
    for k, (code, value, unit) in enumerate(
        [
            ("8867-4", 88, "/min"),
            ("9279-1", 20, "/min"),
            ("8310-5", 37.1, "Cel"),
            ("59408-5", 94, "%"),
            ("718-7", 11.2, "g/dL"),
        ]
    ):
        out.append(
            {
                "resourceType": "Observation",
                "id": f"{patient}-o{k}",
                "status": "final",
                "subject": subject,
                "encounter": {"reference": f"Encounter/{enc}"},
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "effectiveDateTime": iso(dis - timedelta(hours=3)),
                "valueQuantity": {
                    "value": value,
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    return out


def test_readmission_served_over_cds_hooks_and_fhir_in_its_own_words(
    tmp_path: Path, small_source_dir: Path, fhir_server: FhirServer
) -> None:
    ws, spec, snap = build_task("readmission_30d", tmp_path, small_source_dir)
    result = train_model(ws, snap, config=FAST)
    # the release queues unsure predictions, so the EHR's calls make a case to review
    govern_demo_release(ws, model_version=result.model_version, escalation=REVIEW_UNSURE)
    patient = "rp-1"
    with Services.open(ws) as s:
        grant_consent(
            s,
            subject=patient,
            purposes=["direct_care"],
            valid_from=datetime(2000, 1, 1, tzinfo=UTC),
            actor="test",
        )
    resources = record(patient)
    fhir_server.put(resources)
    with Predictor.open(ws, task=spec.name, site="demo-icu-north", status_ttl=0.0) as predictor:
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        app = create_app(predictor, auth, base_url="https://cds.example")
        app.state.service.fhir_servers = (fhir_server.base,)
        client = TestClient(app)
        headers = {"Authorization": f"Bearer {auth.issue(subject='dr.r', roles=['clinician'])}"}

        (service,) = client.get("/cds-services").json()["services"]
        assert service["id"] == "readmission-30d"
        assert service["prefetch"]["conditions"].startswith("Condition?patient=")
        assert service["prefetch"]["encounters"].startswith("Encounter?patient=")
        url = f"/cds-services/{service['id']}"
        context = {
            "patientId": patient,
            "encounterId": f"{patient}-enc",
            "userId": "Practitioner/1",
        }
        fetched = client.post(
            url,
            headers=headers,
            json={
                "hook": "patient-view",
                "hookInstance": "r-fetch",
                "context": context,
                "fhirServer": fhir_server.base,
                "fhirAuthorization": {"access_token": fhir_server.token, "token_type": "Bearer"},
            },
        )
        assert fetched.status_code == 200, fetched.text
        by_type: dict[str, list[dict[str, Any]]] = {}
        for r in resources:
            by_type.setdefault(r["resourceType"], []).append(r)

        def searchset(rs):
            return {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in rs],
            }

        prefetch = {
            "patient": by_type["Patient"][0],
            "encounter": by_type["Encounter"][0],
            "encounters": searchset(by_type["Encounter"]),
            "conditions": searchset(by_type["Condition"]),
            "observations": searchset(by_type["Observation"]),
        }
        sent = client.post(
            url,
            headers=headers,
            json={
                "hook": "patient-view",
                "hookInstance": "r-prefetch",
                "context": context,
                "prefetch": prefetch,
            },
        )
        assert sent.status_code == 200, sent.text
        foreign = [p.lower() for p in PHRASES["icu_mortality_48h"]]
        for answer in (fetched, sent):
            (card,) = answer.json()["cards"]
            assert card["summary"].startswith("30-day readmission risk"), card
            text = answer.text.lower()
            assert not [p for p in foreign if p in text and p not in ("death", "deaths")]
        assert fetched.json()["cards"][0]["summary"] == sent.json()["cards"][0]["summary"]

        # one open case for the patient and encounter, however often the EHR calls
        reviewer = {"Authorization": f"Bearer {auth.issue(subject='dr.q', roles=['reviewer'])}"}
        cases = client.get("/v1/cases", headers=reviewer)
        assert cases.status_code == 200 and cases.json()["total"] == 1, cases.text

        card = sent.json()["cards"][0]
        reason = card["overrideReasons"][0]
        fb = client.post(
            f"{url}/feedback",
            headers=headers,
            json={
                "feedback": [
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "overrideReason": {"reason": reason, "userComment": "already followed up"},
                        "outcomeTimestamp": "2026-03-02T09:00:00Z",
                    }
                ]
            },
        )
        assert fb.status_code == 200, fb.text
        view = predictor.ledger.read(fb.json()["override_seqs"][0])
        assert view.payload is not None and view.payload["reason_code"] == reason["code"]

        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in resources],
        }
        r = client.post(
            "/v1/fhir/predict",
            headers=headers,
            json={"purpose": "direct_care", "bundle": bundle, "encounter": f"{patient}-enc"},
        )
        assert r.status_code == 200, r.text
        ra = (
            next(
                e["resource"]
                for e in r.json()["entry"]
                if e["resource"]["resourceType"] == "RiskAssessment"
            )
            if "entry" in r.json()
            else r.json()
        )
        assert "readmission" in str(ra["prediction"][0]["outcome"]).lower(), ra
