"""CDS Hooks as EHRs call it: spec-valid prefetch templates, reading the EHR's FHIR server when
nothing was prefetched (a real FHIR server on loopback), and coded CDS Hooks 2.0 feedback."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.cds_hooks import seq_from_card_uuid
from clinical_mlops.tasks import load_task
from fhir_server import FhirServer
from serving.fhir_bundles import ehr_bundle, ehr_prefetch, server_resources

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SERVICE = "/cds-services/icu-mortality-48h"
ICU_SPEC = load_task("icu_mortality_48h")
#: CDS Hooks 2.0: patient-view's context fields that are prefetch tokens, and the user tokens
SPEC_TOKENS = {
    "context.userId",
    "context.patientId",
    "context.encounterId",
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
}


@pytest.fixture(scope="module")
def ehr(served: dict[str, Any], fhir_server: FhirServer) -> Iterator[dict[str, Any]]:
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    app = create_app(predictor, auth, base_url="https://cds.example")
    # the operator's allow-list of FHIR servers (CLINICAL_MLOPS_FHIR_SERVERS)
    app.state.service.fhir_servers = (fhir_server.base,)
    token = auth.issue(subject="dr.e", roles=["clinician"])
    yield {
        "client": TestClient(app),
        "headers": {"Authorization": f"Bearer {token}"},
        "predictor": predictor,
        "fhir": fhir_server,
    } | served
    predictor.close()


def load(ehr: dict[str, Any], patient: str, row: dict[str, Any]) -> None:
    """Store the patient's record (stay, conditions, results, unrelated results) on the server."""
    weight = {
        "resourceType": "Observation",
        "id": f"{patient}-weight",
        "status": "final",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 80, "unit": "kg"},
    }
    bundle = ehr_bundle(ICU_SPEC, row, patient)
    ehr["fhir"].put([*server_resources(bundle, patient), weight])


def hook(ehr: dict[str, Any], patient: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": instance,
        "context": {"patientId": patient, "userId": "Practitioner/1"},
    } | extra


def server_of(ehr: dict[str, Any]) -> dict[str, Any]:
    return {
        "fhirServer": ehr["fhir"].base,
        "fhirAuthorization": {
            "access_token": ehr["fhir"].token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Observation.read patient/Patient.read",
            "subject": "clinical-mlops",
        },
    }


def test_prefetch_templates_use_only_tokens_cds_hooks_defines(ehr: dict[str, Any]) -> None:
    service = ehr["client"].get("/cds-services").json()["services"][0]
    assert service["hook"] == "patient-view"
    for key, template in service["prefetch"].items():
        tokens = set(re.findall(r"\{\{\s*(.*?)\s*\}\}", template))
        assert tokens and tokens <= SPEC_TOKENS, (key, template)
    codes = service["prefetch"]["observations"].split("code=")[1].split("&")[0].split(",")
    declared = {c for f in ICU_SPEC.features if f.status == "approved" for c in f.fhir_codes()}
    observed = {
        c
        for f in ICU_SPEC.features
        if f.status == "approved"
        for e in f.fhir
        if e.resource == "Observation"
        for c in e.all_codes
    }
    assert set(codes) == observed and observed <= declared
    assert "8480-6" in service["prefetch"]["observations"]  # a panel component MAP derives from
    assert service["prefetch"]["encounter"] == "Encounter/{{context.encounterId}}"
    assert "29463-7" not in service["prefetch"]["observations"]  # weight: not an input


def test_prefetch_asks_for_what_places_and_describes_the_icu_stay(ehr: dict[str, Any]) -> None:
    prefetch = ehr["client"].get("/cds-services").json()["services"][0]["prefetch"]
    # the principal diagnosis (diagnosis_category) is a Condition of the encounter
    assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
    # the Location says the encounter is an ICU stay, the model's intended setting
    assert prefetch["encounters"].endswith("&_include=Encounter:location")
    # `code` matches Observation.code only: MAP derives from the blood-pressure panel's parts
    panels = prefetch["observationPanels"].split("component-code=")[1].split(",")
    assert set(panels) == {"http://loinc.org|8480-6", "http://loinc.org|8462-4"}


def test_without_prefetch_the_service_reads_the_fhir_server_page_by_page(
    ehr: dict[str, Any],
) -> None:
    c = ehr["client"]
    row = ehr["rows"][20]
    # 3 charts of each variable: more than one page of the server's default 20
    load(ehr, "MRN-20", row)
    fetched = c.post(
        SERVICE, headers=ehr["headers"], json=hook(ehr, "MRN-20", "h-fetch", **server_of(ehr))
    )
    assert fetched.status_code == 200, fetched.text
    sent = c.post(
        SERVICE,
        headers=ehr["headers"],
        json=hook(
            ehr,
            "MRN-20",
            "h-prefetched",
            prefetch=ehr_prefetch(ICU_SPEC, row, "MRN-20"),
        ),
    )
    assert sent.status_code == 200, sent.text
    ledger = ehr["predictor"].ledger
    origin = ledger.origin
    a, b = (
        ledger.read(seq_from_card_uuid(origin, r.json()["cards"][0]["uuid"]) or -1).payload
        for r in (fetched, sent)
    )
    assert a is not None and b is not None
    assert a["request_id"] == "cds-h-fetch" and b["request_id"] == "cds-h-prefetched"
    assert a["inputs"] == b["inputs"] and a["probability"] == b["probability"]
    assert fetched.json()["cards"][0]["summary"] == sent.json()["cards"][0]["summary"]


def test_a_ventilated_patient_is_read_with_the_device_the_statement_names(
    ehr: dict[str, Any],
) -> None:
    """A DeviceUseStatement says what was used only through its Device: the search includes it."""
    prefetch = ehr["client"].get("/cds-services").json()["services"][0]["prefetch"]
    assert prefetch["deviceUseStatements"].endswith("&_include=DeviceUseStatement:device")
    c = ehr["client"]
    row = dict(ehr["rows"][23]) | {"ventilation": 1.0}
    load(ehr, "MRN-23", row)
    # the bundle records ventilation only as a DeviceUseStatement of a ventilator Device
    kinds = {e["resource"]["resourceType"] for e in ehr_bundle(ICU_SPEC, row, "MRN-23")["entry"]}
    assert {"DeviceUseStatement", "Device"} <= kinds
    fetched = c.post(
        SERVICE, headers=ehr["headers"], json=hook(ehr, "MRN-23", "h-vent", **server_of(ehr))
    )
    assert fetched.status_code == 200, fetched.text
    ledger = ehr["predictor"].ledger
    seq = seq_from_card_uuid(ledger.origin, fetched.json()["cards"][0]["uuid"])
    record = ledger.read(seq if seq is not None else -1).payload
    assert record["inputs"]["ventilation"] == 1
    assert "missing_inputs" not in record["flags"]
    assert any(b.startswith("DeviceUseStatement/") for b in record["basis"])


def _refused_without_record(ehr: dict[str, Any], body: dict[str, Any], status: int) -> str:
    ledger = ehr["predictor"].ledger
    before = ledger.size()
    r = ehr["client"].post(SERVICE, headers=ehr["headers"], json=body)
    assert r.status_code == status, r.text
    assert ledger.size() == before
    return r.text


def test_fhir_server_failures_answer_412_naming_the_cause_and_record_nothing(
    ehr: dict[str, Any],
) -> None:
    load(ehr, "MRN-21", ehr["rows"][21])
    wrong = server_of(ehr) | {"fhirAuthorization": {"access_token": "not-the-token"}}
    text = _refused_without_record(ehr, hook(ehr, "MRN-21", "h-401", **wrong), 412)
    assert "refused the access token (HTTP 401)" in text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/fhir"
    ehr_closed = server_of(ehr) | {"fhirServer": closed}
    ehr["client"].app.state.service.fhir_servers += (closed,)
    text = _refused_without_record(ehr, hook(ehr, "MRN-21", "h-down", **ehr_closed), 412)
    assert "cannot be reached" in text
    nothing = hook(ehr, "MRN-21", "h-nothing")
    assert "not prefetched" in _refused_without_record(ehr, nothing, 412)


@pytest.mark.parametrize(
    "server",
    ["file:///etc/passwd", "gopher://127.0.0.1/", "http://169.254.169.254/latest", "ftp://x/"],
)
def test_a_fhir_server_off_the_allow_list_is_refused(ehr: dict[str, Any], server: str) -> None:
    body = hook(
        ehr, "MRN-22", f"h-{secrets.token_hex(4)}", **server_of(ehr) | {"fhirServer": server}
    )
    assert "fhirServer" in _refused_without_record(ehr, body, 422)


def test_a_silent_fhir_server_times_out_and_oversize_answers_are_cut(
    ehr: dict[str, Any],
) -> None:
    from clinical_mlops.errors import FhirDataUnavailable
    from clinical_mlops.serving.fhir_client import FetchLimits, fetch_missing

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
    try:
        with pytest.raises(FhirDataUnavailable, match="did not answer within 0.5 s"):
            fetch_missing(
                {"observations": "Observation?patient={{context.patientId}}"},
                {},
                {"patientId": "MRN-23"},
                server=silent,
                authorization={"access_token": "t"},
                allowed=[silent],
                limits=FetchLimits(timeout=0.5),
            )
    finally:
        accepting.join(timeout=5)
        for s in held:
            s.close()
        listener.close()
    load(ehr, "MRN-23", ehr["rows"][23])
    with pytest.raises(FhirDataUnavailable, match="exceed 1000 bytes"):
        fetch_missing(
            {"observations": "Observation?patient={{context.patientId}}"},
            {},
            {"patientId": "MRN-23"},
            server=ehr["fhir"].base,
            authorization={"access_token": ehr["fhir"].token},
            allowed=[ehr["fhir"].base],
            limits=FetchLimits(max_bytes=1000),
        )
    with pytest.raises(FhirDataUnavailable, match="more than 1 pages"):
        fetch_missing(
            {"observations": "Observation?patient={{context.patientId}}&_count=2"},
            {},
            {"patientId": "MRN-23"},
            server=ehr["fhir"].base,
            authorization={"access_token": ehr["fhir"].token},
            allowed=[ehr["fhir"].base],
            limits=FetchLimits(max_pages=1),
        )


def _card(ehr: dict[str, Any], patient: int) -> dict[str, Any]:
    body = hook(
        ehr,
        f"MRN-{patient}",
        f"h-card-{patient}",
        prefetch=ehr_prefetch(ICU_SPEC, ehr["rows"][patient], f"MRN-{patient}"),
    )
    r = ehr["client"].post(SERVICE, headers=ehr["headers"], json=body)
    assert r.status_code == 200, r.text
    card: dict[str, Any] = r.json()["cards"][0]
    return card


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"code": "not-a-reason"}, "overrideReason.reason"),
        ({"system": "http://example.org/other"}, "overrideReason.reason"),
    ],
)
def test_feedback_reason_must_be_a_coding_the_card_offered(
    ehr: dict[str, Any], change: dict[str, str], field: str
) -> None:
    card = _card(ehr, 30 + len(change["code" if "code" in change else "system"]) % 5)
    reason = card["overrideReasons"][0] | change
    ledger = ehr["predictor"].ledger
    before = ledger.size()
    r = ehr["client"].post(
        f"{SERVICE}/feedback",
        headers=ehr["headers"],
        json={
            "feedback": [
                {
                    "card": card["uuid"],
                    "outcome": "overridden",
                    "overrideReason": {"reason": reason, "userComment": "seen"},
                    "outcomeTimestamp": "2026-03-02T09:00:00Z",
                }
            ]
        },
    )
    assert r.status_code == 422, r.text
    assert ["body", "feedback", 0, *field.split(".")] == r.json()["detail"][0]["loc"]
    assert ledger.size() == before


def test_feedback_per_cds_hooks_2_records_the_coded_reason_and_time(ehr: dict[str, Any]) -> None:
    card = _card(ehr, 40)
    reason = card["overrideReasons"][1]
    missing_time = {"card": card["uuid"], "outcome": "accepted"}
    r = ehr["client"].post(
        f"{SERVICE}/feedback", headers=ehr["headers"], json={"feedback": [missing_time]}
    )
    assert r.status_code == 422 and "outcomeTimestamp" in r.text
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": reason, "userComment": "family meeting"},
        "outcomeTimestamp": "2026-03-02T09:00:00Z",
    }
    r = ehr["client"].post(f"{SERVICE}/feedback", headers=ehr["headers"], json={"feedback": [item]})
    assert r.status_code == 200, r.text
    view = ehr["predictor"].ledger.read(r.json()["override_seqs"][0])
    assert view.payload is not None
    assert view.payload["reason_code"] == reason["code"]
    assert view.payload["reason_system"] == reason["system"]
    assert view.payload["comment"] == "family meeting"
    assert view.payload["outcome_timestamp"] == "2026-03-02T09:00:00Z"
