"""API fuzzing: schemathesis cases from the service's own OpenAPI document, in process.

Every operation of ``create_app`` gets positive (schema-valid) and negative
(schema-breaking) cases, each sent with one of a set of credentials: every role's
valid token, the system API key, and invalid ones (none, garbage, expired, another
audience, another signer, no roles claim, a wrong scheme, an unknown API key) or the
header values the generator itself made up. The checks: no 5xx, ever; every 4xx is
JSON whose ``detail`` names the problem (a message, or field paths with messages);
every 401 asks for a Bearer token. Failures are collected, not raised one by one, so a
run reports how many cases failed and one reproduction per failure kind.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import select
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi

from clinical_mlops.http.deps import ROUTE_ROLES
from clinical_mlops.serving.auth import ROLES
from clinical_mlops.serving.cds_hooks import card_uuid
from clinical_mlops.tasks import load_task
from clinical_mlops.vocabulary import REASON_SYSTEM
from serving.fhir_bundles import ehr_bundle, ehr_prefetch

ICU_SPEC = load_task("icu_mortality_48h")
# The CDS service the served (ICU) task declares in its spec's presentation section.
SERVICE_ID = ICU_SPEC.words().service_id

#: cases per operation and generation mode: (10 positive runs + 6 negative runs, one per
#: operation with a body) x 64, plus GET /cds-services once per credential set (21) = 1,045
PER_MODE = 64
MIN_CASES = 1000


def fuzz_settings(examples: int) -> settings:
    """Return Hypothesis settings for a fuzz run: derandomised, so CI runs the same cases."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def credentials(service: dict[str, Any]) -> dict[str, dict[str, str] | None]:
    """Return header sets by name; None keeps the headers the generator made up."""
    auth = service["auth"]

    def token(**claims: Any) -> dict[str, str]:
        now = int(time.time())
        body = {"sub": "fuzz", "aud": auth.audience, "iat": now, "exp": now + 3600} | claims
        body = {k: v for k, v in body.items() if v is not None}
        return {"Authorization": "Bearer " + jwt.encode(body, auth.key, algorithm="HS256")}

    out: dict[str, dict[str, str] | None] = {
        f"role:{r}": {"Authorization": "Bearer " + auth.issue(subject="fuzz", roles=[r])}
        for r in ROLES
    }
    out |= {
        "all-roles": {"Authorization": "Bearer " + auth.issue(subject="fuzz", roles=list(ROLES))},
        "api-key": {"X-API-Key": service["key"]},
        "generated": None,
        "none": {},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "scheme": {"Authorization": "Basic " + secrets.token_hex(8)},
        "expired": token(roles=list(ROLES), exp=int(time.time()) - 60),
        "audience": token(roles=list(ROLES), aud="another-service"),
        "no-roles": token(),
        "roles-not-list": token(roles="clinician"),
        # text a JSON token may carry but UTF-8 cannot store (a lone surrogate), and odd types
        "odd-subject": token(roles=list(ROLES), sub="dr.\ud800"),
        "subject-not-text": token(roles=list(ROLES), sub=12345),
        "site-not-text": token(roles=list(ROLES), site=["icu"]),
        "bad-key": {"X-API-Key": "cmk_" + secrets.token_hex(16)},
    }
    other = secrets.token_hex(32)
    now = int(time.time())
    out["other-signer"] = {
        "Authorization": "Bearer "
        + jwt.encode(
            {"sub": "x", "aud": auth.audience, "exp": now + 60, "roles": list(ROLES)},
            other,
            algorithm="HS256",
        )
    }
    return out


def header(response: Any, name: str) -> str:
    """Return a response header (schemathesis keeps lowercase names and lists of values)."""
    return ", ".join(response.headers.get(name, []))


def clear_body_problem(response: Any) -> str | None:
    """Return why a 4xx body is not a clear JSON statement of the problem, or None."""
    kind = header(response, "content-type")
    if "json" not in kind:
        return f"content-type {kind!r}, expected JSON"
    try:
        body = response.json()
    except ValueError:
        return "body is not JSON"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return None
    if isinstance(detail, dict) and str(detail.get("message", "")).strip() and detail.get("code"):
        return None
    if (
        isinstance(detail, list)
        and detail
        and all(isinstance(d, dict) and d.get("msg") and "loc" in d for d in detail)
    ):
        return None
    return f"detail does not name the problem: {str(body)[:200]}"


@pytest.mark.slow
def test_fuzzed_requests_never_fail_the_server_and_every_4xx_says_why(
    service: dict[str, Any], record_property: Any
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", service["app"])
    operations = [result.ok() for result in schema.get_all_operations()]
    served = {(op.method.upper(), op.path) for op in operations}
    assert served == set(ROUTE_ROLES)  # every route of the service is fuzzed
    creds = credentials(service)
    names = sorted(creds)
    client = asgi.get_client(service["app"])
    tried: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: dict[str, str] = {}
    failed = 0

    def send(case: Any, who: str) -> None:
        nonlocal failed
        headers = dict(case.headers or {})
        chosen = creds[who]
        if chosen is not None:
            for h in [h for h in headers if h.lower() in ("authorization", "x-api-key")]:
                del headers[h]
            headers |= chosen
        case.headers = headers
        tried[f"{case.method} {case.path}"] += 1
        try:
            response = case.call(session=client)
        except Exception as exc:  # the in-process client re-raises what the app did not handle
            failed += 1
            key = f"{case.method} {case.path} [{who}] unhandled {type(exc).__name__}"
            failures.setdefault(key, f"{exc}\n{case.as_curl_command()}")
            statuses[500] += 1
            return
        statuses[response.status_code] += 1
        problem = None
        if response.status_code >= 500:
            problem = f"{response.status_code}: {response.text[:300]}"
        elif 400 <= response.status_code < 500:
            problem = clear_body_problem(response)
            if (
                response.status_code == 401
                and "bearer" not in header(response, "www-authenticate").lower()
            ):
                problem = "401 without WWW-Authenticate: Bearer"
        if problem:
            failed += 1
            key = f"{case.method} {case.path} [{who}] {problem[:60]}"
            failures.setdefault(key, f"{problem}\n{case.as_curl_command()}")

    for op in operations:
        modes = [GenerationMode.POSITIVE]
        if op.body:
            # Headers and path segments are strings, so an operation without a body has
            # nothing a negative case could break (schemathesis finds no such case).
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @fuzz_settings(PER_MODE)
            @given(case=op.as_strategy(generation_mode=mode), who=st.sampled_from(names))
            def run(case: Any, who: str) -> None:
                send(case, who)

            run()

    total = sum(tried.values())
    record_property("fuzz_cases", total)
    record_property("fuzz_failures", failed)
    print(
        f"\nfuzz: {total} cases over {len(tried)} operations, {failed} failures; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert total >= MIN_CASES, tried
    assert set(tried) == {f"{m} {p}" for m, p in served}
    # GET /cds-services takes no input and no credentials: one case per credential set.
    assert min(tried.values()) >= len(names), tried


# -- mutations of valid bodies ------------------------------------------------------------------
# Schema-generated bodies rarely get past input validation (a random subject is unknown, a
# random purpose is refused), so the deeper layers - scoring, consent, the ledger write, the
# FHIR and CDS adapters - are fuzzed by mutating one part of a valid body at a time.

MUTATIONS = 400
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 1.5]),
    st.floats(),  # NaN and infinity travel as the JSON extensions Python reads
    st.text(max_size=12),
    st.sampled_from(["\ud800", "x" * 5000, "", " ", "Patient/1", "direct_care"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def valid_bodies(
    service: dict[str, Any], seq: int, card_seq: int
) -> list[tuple[str, dict[str, Any]]]:
    """Return (path, body) pairs that each route accepts as they are (once: a case takes
    one decision, so the override and the card feedback name two predictions)."""
    rows = service["rows"]
    item = {"subject_id": "MRN-20", "purpose": "direct_care", "setting": "icu"}
    origin = service["predictor"].ledger.origin
    return [
        ("/v1/predict", item | {"features": rows[20]}),
        ("/v1/predict", {"items": [item | {"features": rows[21]}], "explain": True}),
        ("/v1/fhir/predict", item | {"bundle": ehr_bundle(ICU_SPEC, rows[22], "MRN-20")}),
        ("/v1/overrides", {"prediction_id": seq, "action": "override", "reason_code": "other"}),
        ("/v1/outcomes", {"prediction_ids": [seq], "outcome": 1}),
        (
            f"/cds-services/{SERVICE_ID}",
            {
                "hook": "patient-view",
                "hookInstance": "fuzz",
                "context": {"patientId": "MRN-23"},
                "prefetch": ehr_prefetch(ICU_SPEC, rows[23], "MRN-23"),
            },
        ),
        (
            f"/cds-services/{SERVICE_ID}/feedback",
            {
                "feedback": [
                    {
                        "card": card_uuid(origin, card_seq),
                        "outcome": "overridden",
                        "overrideReason": {"reason": {"system": REASON_SYSTEM, "code": "other"}},
                        "outcomeTimestamp": "2026-03-02T09:00:00Z",
                    }
                ]
            },
        ),
    ]


def paths_of(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every node below ``value`` (dict keys and list indexes)."""
    out = [at] if at else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_of(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths_of(v, (*at, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return (what changed, ``body`` with one node replaced, removed, or given an extra key)."""
    copy = json.loads(json.dumps(body))
    path = draw(st.sampled_from(paths_of(copy)))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    how = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "extra" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(LEAVES)
    else:
        how = "replace"
        parent[path[-1]] = draw(LEAVES)
    return f"{how} {'.'.join(map(str, path))}", copy


@pytest.mark.slow
def test_mutated_valid_bodies_never_fail_the_server(
    service: dict[str, Any], record_property: Any
) -> None:
    client = service["client"]
    creds = credentials(service)
    good = creds["all-roles"]
    assert good is not None
    first = client.post(
        "/v1/predict",
        headers=good,
        json={
            "subject_id": "MRN-19",
            "purpose": "direct_care",
            "setting": "icu",
            "features": service["rows"][19],
        },
    )
    assert first.status_code == 200, first.text
    second = client.post(
        "/v1/predict",
        headers=good,
        json={
            "subject_id": "MRN-18",
            "purpose": "direct_care",
            "setting": "icu",
            "features": service["rows"][18],
        },
    )
    assert second.status_code == 200, second.text
    bodies = valid_bodies(service, first.json()["audit_seq"], second.json()["audit_seq"])
    for path, body in bodies:  # the unmutated bodies are accepted
        response = client.post(path, headers=good, json=body)
        assert response.status_code in (200, 201), (path, response.text)
    tried: Counter[int] = Counter()
    failures: dict[str, str] = {}
    case = st.sampled_from(range(len(bodies))).flatmap(
        lambda i: st.tuples(st.just(i), mutated(bodies[i][1]))
    )

    @fuzz_settings(MUTATIONS)
    # Most mutations carry valid credentials so they reach the layers behind authentication.
    @given(case=case, who=st.sampled_from(["all-roles"] * 12 + sorted(creds)))
    def run(case: tuple[int, tuple[str, dict[str, Any]]], who: str) -> None:
        index, (change, body) = case
        path = bodies[index][0]
        headers = creds[who] or {}
        raw = json.dumps(body)  # NaN, Infinity and lone surrogates as Python writes them
        try:
            response = client.post(
                path, headers=headers | {"Content-Type": "application/json"}, content=raw
            )
        except Exception as exc:  # the test client re-raises what the app did not handle
            failures.setdefault(f"{path} {change}: {type(exc).__name__}", f"{exc}\n{raw[:300]}")
            tried[500] += 1
            return
        tried[response.status_code] += 1
        if response.status_code >= 500:
            failures.setdefault(f"{path} {change}: {response.status_code}", response.text)
        elif response.status_code >= 400:
            kind = response.headers.get("content-type", "")
            detail = response.json().get("detail") if "json" in kind else None
            if not detail:
                failures.setdefault(f"{path} {change}: unclear", response.text)

    run()
    total = sum(tried.values())
    record_property("mutation_cases", total)
    print(f"\nmutations: {total} cases, statuses {dict(sorted(tried.items()))}")
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert total >= MUTATIONS * 0.9
    assert tried[200] + tried[201] > 0 and sum(n for c, n in tried.items() if c >= 400) > 0


# -- what the fuzzers found, pinned ------------------------------------------------------------


def _fhir(service: dict[str, Any], change: Any) -> dict[str, Any]:
    bundle = ehr_bundle(ICU_SPEC, service["rows"][24], "MRN-24")
    change(bundle)
    return {"subject_id": "MRN-24", "purpose": "direct_care", "setting": "icu", "bundle": bundle}


def _predict(service: dict[str, Any], **change: Any) -> dict[str, Any]:
    body = {"subject_id": "MRN-25", "purpose": "direct_care", "setting": "icu"}
    return body | {"features": dict(service["rows"][25])} | change


FOUND: dict[str, tuple[str, Any, int, str]] = {
    # name: (path, body maker, status, text the body must contain)
    "unknown release card": ("/v1/models/no-such-release/card", None, 404, "ReleaseNotFound"),
    "seq beyond a database integer": (
        "/v1/outcomes",
        lambda s: {"prediction_ids": [2**63], "outcome": 1},
        404,
        "no prediction with audit seq",
    ),
    "card naming a seq beyond a database integer": (
        f"/cds-services/{SERVICE_ID}/feedback",
        lambda s: {
            "feedback": [
                {
                    "card": card_uuid(s["predictor"].ledger.origin, 2**64 - 1),
                    "outcome": "accepted",
                    "outcomeTimestamp": "2026-03-02T09:00:00Z",
                }
            ]
        },
        404,
        "no prediction with audit seq",
    ),
    "integer beyond a float": (
        "/v1/predict",
        lambda s: _predict(s, features=dict(s["rows"][25]) | {"age": 10**400}),
        422,
        "too large",
    ),
    "lone surrogate in the subject": (
        "/v1/predict",
        lambda s: _predict(s, subject_id="MRN-\ud800"),
        422,
        "subject_id",
    ),
    "lone surrogate in the purpose": (
        "/v1/predict",
        lambda s: {"items": [_predict(s, purpose="\ud800")]},
        422,
        "purpose",
    ),
    "lone surrogate in an undeclared feature name": (
        "/v1/predict",
        lambda s: _predict(s, features=dict(s["rows"][25]) | {"x\ud800": 1}),
        422,
        "not a feature of this task",
    ),
    "lone surrogate in an outcome time": (
        "/v1/outcomes",
        lambda s: {"prediction_ids": [0], "outcome": 1, "observed_at": "\ud800"},
        422,
        "observed_at",
    ),
    "FHIR entry that is not an object": (
        "/v1/fhir/predict",
        lambda s: _fhir(s, lambda b: b["entry"].append(1.5)),
        422,
        "must be an object holding a resource",
    ),
    "FHIR coding system that is a list": (
        "/v1/fhir/predict",
        lambda s: _fhir(
            s, lambda b: b["entry"][0]["resource"]["code"]["coding"][0].update(system=[1])
        ),
        422,
        "has no system",
    ),
    "FHIR quantity unit that is an object": (
        "/v1/fhir/predict",
        lambda s: _fhir(s, lambda b: b["entry"][0]["resource"]["valueQuantity"].update(unit={})),
        422,
        "valueQuantity",
    ),
    "FHIR quantity that is text": (
        "/v1/fhir/predict",
        lambda s: _fhir(s, lambda b: b["entry"][0]["resource"].update(valueQuantity="high")),
        422,
        "valueQuantity",
    ),
    "a number for a boolean (live schemathesis)": (
        "/v1/predict",
        lambda s: {"items": [_predict(s)], "explain": 0},
        422,
        "explain",
    ),
    "a boolean for an outcome (live schemathesis)": (
        "/v1/outcomes",
        lambda s: {"prediction_ids": [0], "outcome": True},
        422,
        "outcome",
    ),
    "a string for a prediction id (live schemathesis)": (
        "/v1/overrides",
        lambda s: {"prediction_id": "0", "action": "accept"},
        422,
        "prediction_id",
    ),
    "FHIR id with a lone surrogate": (
        "/v1/fhir/predict",
        lambda s: _fhir(s, lambda b: b["entry"][0]["resource"].update(id="\ud800")),
        422,
        "expected text (a non-empty id)",
    ),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_the_fuzzers_found_is_a_clear_4xx(service: dict[str, Any], name: str) -> None:
    path, make, status, text = FOUND[name]
    headers = credentials(service)["all-roles"] or {}
    if make is None:
        response = service["client"].get(path, headers=headers)
    else:
        raw = json.dumps(make(service))
        response = service["client"].post(
            path, headers=headers | {"Content-Type": "application/json"}, content=raw
        )
    assert response.status_code == status, response.text
    assert text in response.text and response.json()["detail"]


def test_a_token_whose_subject_has_no_text_form_is_refused(service: dict[str, Any]) -> None:
    odd = credentials(service)["odd-subject"] or {}
    response = service["client"].post(
        "/v1/predict", headers=odd, json=_predict(service, subject_id="MRN-26")
    )
    assert response.status_code == 401 and "'sub'" in response.json()["detail"]["message"]


# -- the live service: a real uvicorn process on loopback ---------------------------------------
# ``bench/api_fuzz.py`` starts ``clinical-mlops serve`` as an operator would (secret file,
# issuer, API keys with sites, a rollout site) and runs ``st run --checks all`` with every
# phase, stateful links included; here with few cases per operation, there with thousands.

LIVE_EXAMPLES = 12
#: a chunked body is sent until the service answers, or this much has gone
CHUNKED_CAP = 96 * 1024 * 1024


def _bench_module() -> Any:
    path = Path(__file__).resolve().parents[2] / "bench" / "api_fuzz.py"
    spec = importlib.util.spec_from_file_location("api_fuzz", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("api_fuzz", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live(
    served: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """``clinical-mlops serve`` over the served workspace, and the bench module driving it."""
    bench = _bench_module()
    folder = tmp_path_factory.mktemp("live")
    with bench.live_service(served["ws"].root, folder) as svc:
        yield bench, svc, folder


def test_the_live_service_checks_the_token_issuer(live: Any) -> None:
    _, svc, _ = live
    models = f"{svc.url}/v1/models"
    good = svc.token(["clinician"])
    assert httpx.get(models, headers={"Authorization": f"Bearer {good}"}).status_code == 200
    evil = svc.token(["clinician"], iss="https://evil.example")
    now = int(time.time())
    unnamed = jwt.encode(
        {"sub": "x", "aud": "clinical-mlops", "exp": now + 60, "roles": ["clinician"]},
        svc.secret,
        algorithm="HS256",
    )
    for token, words in ((evil, "issuer"), (unnamed, "'iss'")):
        r = httpx.get(models, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and words in r.json()["detail"]["message"], r.text


def _chunked(url: str, headers: dict[str, str]) -> tuple[int | None, int]:
    """POST a chunked body of spaces until the service answers or CHUNKED_CAP is sent;
    return the status it answered (None if none) and the bytes sent."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(
        (
            "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n{lines}\r\n"
        ).encode()
    )
    piece = 1024 * 1024
    chunk = f"{piece:x}\r\n".encode() + b" " * piece + b"\r\n"
    sock.setblocking(False)
    pending, sent = b"", 0
    try:
        while sent < CHUNKED_CAP:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable or not writable:
                break
            pending = pending or chunk
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending, sent = pending[n:], sent + n
        sock.setblocking(True)
        sock.settimeout(60)
        head = sock.recv(65536)
    except (ConnectionResetError, TimeoutError):
        head = b""
    finally:
        sock.close()
    found = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return (int(found.group(1)) if found else None), sent


def test_the_live_service_reads_no_chunked_body_past_the_limit(live: Any) -> None:
    _, svc, _ = live
    before = svc.rss_kib()
    status, sent = _chunked(svc.url, {})
    assert status == 401 and sent < CHUNKED_CAP, (status, sent)
    status, sent = _chunked(svc.url, {"Authorization": f"Bearer {svc.token(['clinician'])}"})
    assert status == 413 and sent < CHUNKED_CAP, (status, sent)
    grown = svc.rss_kib() - before
    assert grown < CHUNKED_CAP // 1024 // 2, f"the server grew by {grown} KiB"
    assert httpx.get(f"{svc.url}/cds-services").status_code == 200  # and it is still up


@pytest.mark.slow
def test_schemathesis_against_the_live_service_finds_no_failure(
    live: Any, record_property: Any
) -> None:
    bench, svc, folder = live
    figures = bench.run_schemathesis(svc, folder, max_examples=LIVE_EXAMPLES)
    record_property("live_fuzz_cases", figures["cases"])
    print(f"\nlive schemathesis: {json.dumps({k: v for k, v in figures.items() if k != 'output'})}")
    output = figures["output"]
    assert figures["server_errors"] == 0, output[-8000:]
    assert figures["unique_failures"] == 0 and figures["exit_code"] == 0, output[-8000:]
    assert figures["cases"] >= 10 * LIVE_EXAMPLES, output[-3000:]
    assert "Stateful" in output, output[-3000:]
    assert svc.proc.poll() is None  # the service stayed up
