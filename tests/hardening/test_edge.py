"""The service's edge: whose site, what is read before the caller is known, odd keys, the
OpenAPI document, and the model card a CDS card links to.

Each test goes through the HTTP app as a client would. The rollout here: the release runs
in full mode at every site (``*``), in pilot at ``demo-icu-north`` and, for these tests,
in shadow at ``shadow-icu``: a caller from the shadow site must never get a score shown.
"""

from __future__ import annotations

import json
import secrets
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_mlops.http.app import MAX_BODY_BYTES, create_app
from clinical_mlops.http.deps import ROUTE_ROLES
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig, hash_api_key
from clinical_mlops.tasks import load_task
from serving.fhir_bundles import ehr_bundle, ehr_prefetch

# The CDS service the served (ICU) task declares in its spec's presentation section.
SERVICE_ID = load_task("icu_mortality_48h").words().service_id

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

SHADOW, PILOT = "shadow-icu", "demo-icu-north"


@pytest.fixture(scope="module")
def edge(
    served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The app over the served workspace with auth from files: a secret and API keys with sites."""
    # a manifest entry in shadow mode (as written before trials ran beside the live release)
    with Registry.open(served["ws"]) as reg:
        reg.place(
            served["release"], site=SHADOW, mode="shadow", actor="demo.dr.lena.ortiz", why="test"
        )
    folder = tmp_path_factory.mktemp("edge")
    secret, keys = folder / "jwt.secret", folder / "keys.json"
    secret.write_text(secrets.token_hex(32))
    multi, plain = "cmk_" + secrets.token_hex(16), "cmk_" + secrets.token_hex(16)
    keys.write_text(
        json.dumps(
            {
                "keys": [
                    {
                        "name": "ehr-north",
                        "sha256": hash_api_key(multi),
                        "roles": ["system"],
                        "sites": [SHADOW, PILOT],
                    },
                    {"name": "ehr", "sha256": hash_api_key(plain), "roles": ["system"]},
                ]
            }
        )
    )
    auth = AuthConfig.from_files(secret_file=secret, api_keys_file=keys)
    predictor = Predictor.open(served["ws"], status_ttl=0.0)
    app = create_app(predictor, auth, base_url="https://cds.example")
    with TestClient(app) as client:
        yield {
            "client": client,
            "app": app,
            "auth": auth,
            "multi": {"X-API-Key": multi},
            "plain": {"X-API-Key": plain},
            "predictor": predictor,
        } | served
    predictor.close()


def bearer(edge: dict[str, Any], *roles: str, **claims: Any) -> dict[str, str]:
    return {
        "Authorization": "Bearer " + edge["auth"].issue(subject="dr.e", roles=list(roles), **claims)
    }


def item(edge: dict[str, Any], i: int, **change: Any) -> dict[str, Any]:
    body = {"subject_id": f"MRN-{i}", "purpose": "direct_care", "setting": "icu"}
    return body | {"features": dict(edge["rows"][i])} | change


def tip(edge: dict[str, Any]) -> int:
    return int(edge["predictor"].ledger.size())


def refusals(edge: dict[str, Any], code: str) -> float:
    metrics = edge["app"].state.service.metrics
    found = metrics.registry.get_sample_value("clinical_mlops_refusals_total", {"code": code})
    return float(found or 0.0)


# -- 1. the rollout site comes from the credential ------------------------------------------------


@pytest.mark.parametrize("claimed", ["*", "made-up-icu", PILOT, ""])
def test_a_body_site_other_than_the_tokens_is_refused_and_logged(
    edge: dict[str, Any], claimed: str
) -> None:
    shadow_clinician = bearer(edge, "clinician", site=SHADOW)
    before, counted = tip(edge), refusals(edge, "site_not_permitted")
    r = edge["client"].post(
        "/v1/predict", headers=shadow_clinician, json=item(edge, 30, site=claimed)
    )
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "site_not_permitted" and repr(claimed) in detail["message"]
    assert "probability" not in r.text
    view = edge["predictor"].ledger.read(detail["audit_seq"])
    assert view.entry.type == "inference_refused" and view.entry.actor == "user:dr.e"
    assert view.payload is not None and view.payload["code"] == "site_not_permitted"
    assert tip(edge) == before + 1  # the refusal alone: no inference entry
    assert refusals(edge, "site_not_permitted") == counted + 1


def test_the_tokens_site_decides_the_rollout_and_is_what_the_ledger_records(
    edge: dict[str, Any],
) -> None:
    shadow_clinician = bearer(edge, "clinician", site=SHADOW)
    for body in (item(edge, 31), item(edge, 32, site=SHADOW)):
        r = edge["client"].post("/v1/predict", headers=shadow_clinician, json=body)
        assert r.status_code == 200 and r.json()["status"] == "shadow", r.text
        assert "probability" not in r.json()
        payload = edge["predictor"].ledger.read(r.json()["audit_seq"]).payload
        assert payload["context"]["site"] == SHADOW and payload["shown_to_clinician"] is False


def test_a_batch_item_naming_another_site_is_refused_alone(edge: dict[str, Any]) -> None:
    shadow_clinician = bearer(edge, "clinician", site=SHADOW)
    body = {"items": [item(edge, 33), item(edge, 34, site="*")]}
    r = edge["client"].post("/v1/predict", headers=shadow_clinician, json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == "shadow"
    assert second["status"] == "refused" and second["refusal"]["code"] == "site_not_permitted"


def test_an_api_key_scores_at_its_declared_sites_only(edge: dict[str, Any]) -> None:
    c, multi = edge["client"], edge["multi"]
    home = c.post("/v1/predict", headers=multi, json=item(edge, 35))
    assert home.status_code == 200 and home.json()["status"] == "shadow", home.text  # first site
    named = c.post("/v1/predict", headers=multi, json=item(edge, 36, site=PILOT))
    assert named.status_code == 200 and named.json()["status"] == "scored", named.text
    payload = edge["predictor"].ledger.read(named.json()["audit_seq"]).payload
    assert payload["context"]["site"] == PILOT
    for claimed in ("*", "elsewhere"):
        r = c.post("/v1/predict", headers=multi, json=item(edge, 37, site=claimed))
        assert r.status_code == 403 and r.json()["detail"]["code"] == "site_not_permitted"


def test_a_credential_naming_no_site_is_scored_at_the_services_site_only(
    edge: dict[str, Any],
) -> None:
    c = edge["client"]
    for who in (bearer(edge, "clinician"), edge["plain"]):
        r = c.post("/v1/predict", headers=who, json=item(edge, 38))
        assert r.status_code == 200 and r.json()["status"] == "scored", r.text
        for claimed in ("*", PILOT, SHADOW):
            r = c.post("/v1/predict", headers=who, json=item(edge, 39, site=claimed))
            assert r.status_code == 403, (who, claimed, r.text)


def test_a_token_naming_the_wildcard_site_is_refused(edge: dict[str, Any]) -> None:
    r = edge["client"].post(
        "/v1/predict", headers=bearer(edge, "clinician", site="*"), json=item(edge, 40)
    )
    assert r.status_code == 401 and "'site'" in r.json()["detail"]["message"]


def test_cds_hooks_and_fhir_take_the_site_from_the_api_key(edge: dict[str, Any]) -> None:
    c, multi = edge["client"], edge["multi"]
    hook = {
        "hook": "patient-view",
        "hookInstance": secrets.token_hex(8),
        "context": {"patientId": "MRN-41"},
        "prefetch": ehr_prefetch(load_task("icu_mortality_48h"), edge["rows"][41], "MRN-41"),
    }
    r = c.post(f"/cds-services/{SERVICE_ID}", headers=multi, json=hook)
    assert r.status_code == 200 and r.json() == {"cards": []}, r.text  # shadow: no card
    fhir = item(edge, 42) | {
        "bundle": ehr_bundle(load_task("icu_mortality_48h"), edge["rows"][42], "MRN-42")
    }
    del fhir["features"]
    r = c.post("/v1/fhir/predict", headers=multi, json=fhir)
    assert r.status_code == 200 and r.json()["status"] == "shadow", r.text


# -- 4. credentials before the body; the body limit while it streams -----------------------------


def test_an_unauthenticated_malformed_body_is_401_not_422(edge: dict[str, Any]) -> None:
    for path in ("/v1/predict", "/v1/overrides", f"/cds-services/{SERVICE_ID}"):
        for headers in ({}, {"Authorization": "Bearer not.a.token"}):
            r = edge["client"].post(
                path,
                content=b'{"subject_id": ',
                headers=headers | {"Content-Type": "application/json"},
            )
            assert r.status_code == 401, (path, r.text)
    r = edge["client"].post(
        "/v1/outcomes",
        content=b"{",
        headers=bearer(edge, "clinician") | {"Content-Type": "application/json"},
    )
    assert r.status_code == 403, r.text  # a clinician may not record outcomes, whatever the body


def chunked_call(app: Any, headers: dict[str, str], chunks: int) -> tuple[int, int, bytes]:
    """Send ``chunks`` MiB to POST /v1/predict with no Content-Length (chunked) straight over
    ASGI; return the status, how many chunks the app read and the response body."""
    read = 0
    sent: list[dict[str, Any]] = []
    piece = b" " * (1024 * 1024)

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read == chunks:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": piece, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    # A thread of its own: an event loop another test left marked in this worker's main thread
    # must not decide whether this app call can run.
    runner = threading.Thread(target=anyio.run, args=(app, scope, receive, send))
    runner.start()
    runner.join()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], read, body


def test_a_chunked_body_is_read_only_up_to_the_limit_and_only_from_a_known_caller(
    edge: dict[str, Any],
) -> None:
    chunks = MAX_BODY_BYTES // (1024 * 1024) * 5  # five times the limit
    status, read, body = chunked_call(edge["app"], {}, chunks)
    assert status == 401 and read == 0, (status, read, body)
    status, read, body = chunked_call(edge["app"], bearer(edge, "clinician"), chunks)
    assert status == 413 and read == MAX_BODY_BYTES // (1024 * 1024) + 1, (status, read)
    assert str(MAX_BODY_BYTES) in json.loads(body)["detail"]


# -- 6. any key gives a 422 naming it; duplicate keys are refused ---------------------------------


@pytest.mark.parametrize("key", ["²", "a.³", "٣", "1", "[0]", 'a"b', "x]y[", "features.age"])
def test_an_undeclared_key_is_a_422_naming_it_exactly(edge: dict[str, Any], key: str) -> None:
    body = item(edge, 43)
    body["features"][key] = 1
    r = edge["client"].post("/v1/predict", headers=bearer(edge, "clinician"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "features", key]


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(key=st.text(min_size=1, max_size=8), batch=st.booleans())
def test_any_undeclared_key_is_named_by_its_location(
    edge: dict[str, Any], key: str, batch: bool
) -> None:
    body = item(edge, 44)
    if key in body["features"]:
        return
    body["features"][key] = 1
    sent = {"items": [body]} if batch else body
    r = edge["client"].post(
        "/v1/predict",
        headers=bearer(edge, "clinician") | {"Content-Type": "application/json"},
        content=json.dumps(sent).encode(),  # lone surrogates as JSON escapes
    )
    assert r.status_code == 422, r.text
    where = ["body", "items", 0, "features", key] if batch else ["body", "features", key]
    assert where in [d["loc"] for d in r.json()["detail"]], r.text


def test_a_key_sent_twice_is_refused_naming_it_and_nothing_is_written(edge: dict[str, Any]) -> None:
    row = {k: v for k, v in edge["rows"][45].items() if k != "age"}
    features = json.dumps(row)[:-1] + ', "age": 17, "age": 67}'
    single = (
        '{"subject_id": "MRN-45", "purpose": "direct_care", "setting": "icu", '
        f'"features": {features}}}'
    )
    top = '{"subject_id": "MRN-45", "subject_id": "MRN-46", ' + single[1:]
    batch = '{"items": [' + json.dumps(item(edge, 46)) + ", " + single + "]}"
    for raw, loc, key in (
        (single, ["body", "features", "age"], "age"),
        (top, ["body", "subject_id"], "subject_id"),
        (batch, ["body", "items", 1, "features", "age"], "age"),
    ):
        before = tip(edge)
        for kind in ("application/json", "application/json; charset=utf-8"):
            r = edge["client"].post(
                "/v1/predict",
                headers=bearer(edge, "clinician") | {"Content-Type": kind},
                content=raw.encode(),
            )
            assert r.status_code == 422, r.text
            (problem,) = r.json()["detail"]
            assert problem["loc"] == loc and repr(key) in problem["msg"], problem
        assert tip(edge) == before


# -- 14. the OpenAPI document -----------------------------------------------------------------


def test_openapi_declares_security_every_error_and_the_allowed_purposes(
    edge: dict[str, Any],
) -> None:
    doc = edge["client"].get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert {(s["type"], s.get("scheme"), s.get("name")) for s in schemes.values()} == {
        ("http", "bearer", None),
        ("apiKey", None, "X-API-Key"),
    }
    for (method, route), roles in ROUTE_ROLES.items():
        op = doc["paths"][route][method.lower()]
        codes = set(op["responses"])
        assert {"413", "503"} <= codes, (method, route)
        if roles:
            assert {"401", "403"} <= codes and len(op["security"]) == 2, (method, route)
            assert all(r in op["description"] for r in roles)
        else:
            assert op["security"] == []
        if "requestBody" in op:
            assert "422" in codes
        for code, response in op["responses"].items():
            assert response.get("content"), (method, route, code)
            for media in response["content"].values():
                assert media.get("schema") is not None, (method, route, code)
    for route in ("/v1/predict", "/v1/fhir/predict", "/cds-services/{service_id}"):
        assert "409" in doc["paths"][route]["post"]["responses"]
    purposes = edge["predictor"].scorer(edge["predictor"].default).spec.consent.purposes_allowed
    for name in ("PredictItem", "FhirPredict"):
        assert doc["components"]["schemas"][name]["properties"]["purpose"]["enum"] == list(purposes)
    links = doc["paths"]["/v1/predict"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"override", "outcome"}


# -- 10b. the model card a CDS card links to opens in a browser ----------------------------------


def test_the_model_card_link_of_a_cds_card_opens_without_credentials(edge: dict[str, Any]) -> None:
    c = edge["client"]
    hook = {
        "hook": "patient-view",
        "hookInstance": secrets.token_hex(8),
        "context": {"patientId": "MRN-47"},
        "prefetch": ehr_prefetch(load_task("icu_mortality_48h"), edge["rows"][47], "MRN-47"),
    }
    r = c.post(f"/cds-services/{SERVICE_ID}", headers=bearer(edge, "clinician"), json=hook)
    assert r.status_code == 200, r.text
    (card,) = r.json()["cards"]
    (link,) = card["links"]
    assert link["url"].startswith("https://cds.example/") and card["source"]["url"] == link["url"]
    page = c.get(link["url"].removeprefix("https://cds.example"))  # a browser: no token
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert edge["release"] in page.text or "Model card" in page.text
    missing = c.get("/v1/models/no-such-release/card")
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "ReleaseNotFound"


@settings(max_examples=1000, deadline=None, database=None, derandomize=True)
@given(
    steps=st.lists(st.one_of(st.text(max_size=6), st.integers(0, 10**6)), min_size=1, max_size=5),
    noise=st.text(max_size=12),
)
def test_field_paths_read_back_exactly_and_any_text_splits_without_error(
    steps: list[str | int], noise: str
) -> None:
    from clinical_mlops.serving.inputs import field_path, split_path

    path = ""
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else field_path(path, step)
    assert split_path(path) == steps, path
    for text in (noise, path + noise, noise + path):
        assert all(isinstance(s, str | int) for s in split_path(text))
