"""The service's hot path: where scoring runs, the JSON encoder, batches and concurrent requests."""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from unittest import mock

import anyio
import httpx
import jwt
import pytest
from fastapi.responses import JSONResponse

from clinical_mlops.errors import NotAuthenticated
from clinical_mlops.http.app import create_app
from clinical_mlops.http.deps import Json, Service
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.predictor import PredictionRequest

T = TypeVar("T")


@pytest.fixture(scope="module")
def service(served: dict[str, Any]) -> Any:
    predictor = Predictor.open(served["ws"])
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    key = "cmk_" + secrets.token_hex(16)
    auth.add_api_key(key, name="ehr-interface", roles=["system"])
    yield {
        "app": create_app(predictor, auth),
        "auth": auth,
        "predictor": predictor,
        "headers": {"X-API-Key": key},
    } | served
    predictor.close()


def item(served: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": served["rows"][i],
    }


def strict_json(body: bytes) -> Any:
    """Parse ``body`` as RFC 8259 JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON body")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Return ``anyio.run(main)`` from a thread of its own.

    The console tests keep a sync Playwright (an asyncio loop) running in the main thread
    of their test worker for the whole session; a new loop cannot start in that thread.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, main).result()


def test_single_rows_alone_score_on_the_event_loop_and_together_in_threads() -> None:
    svc = Service(predictor=None, auth=None, metrics=None, base_url="")  # type: ignore[arg-type]
    ran_on: dict[str, int] = {}

    def work(tag: str) -> str:
        ran_on[tag] = threading.get_ident()
        time.sleep(0.02)  # blocks, as a commit does
        return tag

    async def main() -> int:
        loop_thread = threading.get_ident()
        assert await svc.score(functools.partial(work, "alone"), single=True) == "alone"
        async with anyio.create_task_group() as tg:
            for k in range(4):
                tg.start_soon(
                    functools.partial(svc.score, single=True), functools.partial(work, str(k))
                )
        assert await svc.score(functools.partial(work, "batch"), single=False) == "batch"
        with pytest.raises(ZeroDivisionError):
            await svc.score(lambda: 1 // 0, single=True)
        return loop_thread

    loop_thread = run_async(main)
    assert ran_on["alone"] == loop_thread
    # requests that arrive together are all scored in the thread pool, where the ledger
    # commits them as one group; a batch never holds up the event loop
    on_loop = [k for k in ("0", "1", "2", "3", "batch") if ran_on[k] == loop_thread]
    assert on_loop == []
    assert svc.busy == 0


def test_json_bodies_match_the_standard_encoder_and_are_never_nan(
    service: dict[str, Any],
) -> None:
    res = service["predictor"].predict(
        PredictionRequest(
            subject_id="MRN-20",
            purpose="direct_care",
            setting="icu",
            features=service["rows"][20],
        ),
        requester="system:test",
    )
    assert res.status == "scored"
    ours = strict_json(Json(content=res.to_json()).body)
    assert ours == strict_json(JSONResponse(content=res.to_json()).body)
    assert isinstance(ours["probability"], float) and ours["contributions"]
    odd = {"p": float("nan"), "hi": float("inf"), "lo": float("-inf"), 3: "é"}
    assert strict_json(Json(content=odd).body) == {"p": None, "hi": None, "lo": None, "3": "é"}


def test_batches_and_concurrent_single_rows_each_get_their_own_audit_record(
    service: dict[str, Any],
) -> None:
    predictor = service["predictor"]
    before = predictor.ledger.size()

    async def main() -> tuple[httpx.Response, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=service["app"])
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            batch = await c.post(
                "/v1/predict",
                headers=service["headers"],
                json={"items": [item(service, i) for i in range(30, 33)], "explain": False},
            )
            singles: list[httpx.Response] = []

            async def one(i: int) -> None:
                singles.append(
                    await c.post("/v1/predict", headers=service["headers"], json=item(service, i))
                )

            async with anyio.create_task_group() as tg:
                for i in range(40, 48):
                    tg.start_soon(one, i)
            return batch, singles

    batch, singles = run_async(main)
    assert batch.status_code == 200 and batch.headers["content-type"] == "application/json"
    results = strict_json(batch.content)["results"]
    assert [r["status"] for r in results] == ["scored"] * 3
    assert all(r["contributions"] == [] for r in results)
    assert all(r.status_code == 200 for r in singles)
    docs = [strict_json(r.content) for r in singles]
    assert all(d["status"] == "scored" and d["contributions"] for d in docs)
    answered = results + docs
    assert len({d["audit_seq"] for d in answered}) == 11
    assert predictor.ledger.size() >= before + 11  # escalations add their own entries
    for d in answered:
        view = predictor.ledger.read(d["audit_seq"])
        assert view.entry.type == "inference" and view.payload is not None
        assert view.payload["request_id"] == d["request_id"] and d["audit_seq"] >= before


def test_a_remembered_token_still_expires_and_is_role_checked_per_route(
    service: dict[str, Any],
) -> None:
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    token = auth.issue(subject="dr.t", roles=["clinician"], ttl_seconds=60)
    header = "Bearer " + token
    first = auth.authenticate(authorization=header, api_key=None)
    assert first.actor == "user:dr.t" and first.roles == {"clinician"}
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    with mock.patch.object(AuthConfig, "_verify", side_effect=AssertionError("verified again")):
        assert auth.authenticate(authorization=header, api_key=None) is first
        # expiry is checked on every request, by PyJWT's rule: expired once exp <= now
        auth.now = lambda: exp - 0.001
        assert auth.authenticate(authorization=header, api_key=None) is first
        auth.now = lambda: float(exp)
        with pytest.raises(NotAuthenticated, match="expired"):
            auth.authenticate(authorization=header, api_key=None)
    auth.now = lambda: float(exp)
    with pytest.raises(NotAuthenticated, match="expired"):  # as PyJWT answers an expired token
        auth._verify(auth.issue(subject="dr.t", roles=["clinician"], ttl_seconds=-1))
    # a change of verifier (here the audience) forgets what was remembered
    auth.now = lambda: exp - 30.0
    auth.audience = "another-service"
    with pytest.raises(NotAuthenticated, match="another audience"):
        auth.authenticate(authorization=header, api_key=None)
    # the same token signed with another key is a different token: verified, and refused
    forged = AuthConfig.from_secret(secrets.token_hex(32)).issue(subject="dr.t", roles=["system"])
    with pytest.raises(NotAuthenticated, match="does not verify"):
        service["auth"].authenticate(authorization="Bearer " + forged, api_key=None)

    # through the service: a remembered clinician token still meets each route's roles
    clinician = {
        "Authorization": "Bearer " + service["auth"].issue(subject="dr.t", roles=["clinician"])
    }

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=service["app"])
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            return [
                (
                    await c.post("/v1/predict", headers=clinician, json=item(service, 50))
                ).status_code,
                (await c.get("/metrics", headers=clinician)).status_code,
                (
                    await c.post("/v1/predict", headers=clinician, json=item(service, 51))
                ).status_code,
                (await c.get("/metrics", headers=clinician)).status_code,
            ]

    assert run_async(main) == [200, 403, 200, 403]


def test_the_short_way_through_answers_exactly_as_fastapi_does(service: dict[str, Any]) -> None:
    """``application/json`` bodies take the route's short way; ``...; charset=utf-8`` FastAPI's
    general way: every answer must be the same, down to the bytes of each error."""
    from fastapi import routing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
        from fastapi.testclient import TestClient

    client = TestClient(service["app"])
    auth = service["auth"]
    clinician = "Bearer " + auth.issue(subject="dr.t", roles=["clinician"])
    auditor = "Bearer " + auth.issue(subject="dr.a", roles=["auditor"])
    ok = item(service, 60)
    bad_type = item(service, 61) | {"features": service["rows"][61] | {"lactate": "high"}}
    cases: list[tuple[str | None, bytes]] = [
        (None, json.dumps(ok).encode()),
        (auditor, json.dumps(ok).encode()),
        ("Bearer not.a.token", b"{"),
        (clinician, b"{"),
        (clinician, b"null"),
        (clinician, b""),
        (clinician, b"[" * 50_000),
        (clinician, b'{"subject_id": "\xff"}'),
        (clinician, json.dumps(ok | {"unexpected": 1}).encode()),
        (clinician, json.dumps(bad_type).encode()),
        (clinician, json.dumps({"items": [ok] * 1001}).encode()),
        (clinician, json.dumps({"items": []}).encode()),
        (clinician, json.dumps(ok | {"subject_id": "MRN-NOCONSENT"}).encode()),
        (clinician, json.dumps(ok).encode()),
        (clinician, json.dumps({"items": [item(service, 62), item(service, 63)]}).encode()),
    ]
    general = 0
    solve = routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal general
        general += 1
        return await solve(*args, **kwargs)

    def answer(credentials: str | None, body: bytes, content_type: str) -> tuple[int, Any]:
        headers = {"Content-Type": content_type} | (
            {"Authorization": credentials} if credentials else {}
        )
        r = client.post("/v1/predict", content=body, headers=headers)
        if r.status_code not in (200, 403) or b"audit_seq" not in r.content:
            return r.status_code, r.content
        doc = strict_json(r.content)
        for d in doc.get("results", [doc.get("detail", doc)]):
            d.pop("audit_seq"), d.pop("request_id", None)  # differ between any two requests
        return r.status_code, doc

    with mock.patch.object(routing, "solve_dependencies", counted):
        short = [answer(c, b, "application/json") for c, b in cases]
        # the general way resolves the signature once the body parses (FastAPI refuses a body
        # that does not before it): on the short way, only for bodies that do not validate
        assert general == 5
        long = [answer(c, b, "application/json; charset=utf-8") for c, b in cases]
        # ... and on the general way for every admitted caller whose body parses
        assert general == 5 + len(cases) - 6
    assert short == long
    # credentials are checked before the body is read (401, 403 whatever the body); a body
    # too deep to read or not UTF-8 is a 422 naming the rule, like every other bad body
    statuses = [401, 403, 401, 422, 422, 422, 422, 422, 422, 422, 422, 422, 403, 200, 200]
    assert [status for status, _ in short] == statuses
    for _, body in short[5:8]:
        assert strict_json(body)["detail"][0]["loc"] == ["body"], body
