"""The HTTP service: FastAPI app wiring the routers, error mapping and request metrics.

``create_app`` only wires: routers per resource (``serving.routers``), auth in
dependencies (``serving.deps``), one exception handler per library error, and a
small ASGI middleware counting requests and latency by route template. Access
logs are off on the hot path; every inference is in the audit ledger instead.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from clinical_mlops import __version__
from clinical_mlops.errors import (
    CaseAlreadyDecided,
    ClockBehindLedger,
    ConsentNotGranted,
    DuplicateRequest,
    InputInvalid,
    NotAuthenticated,
    NotAuthorised,
    OutcomeAlreadyRecorded,
    OverrideInvalid,
    PredictionNotFound,
    ReleaseNotFound,
    ReleaseNotServable,
    StoreUnavailable,
    SubjectNotFound,
)
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.deps import Service
from clinical_mlops.serving.metrics import ServiceMetrics
from clinical_mlops.serving.predictor import Predictor
from clinical_mlops.serving.routers import cds, models, oversight, predictions

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 8 * 1024 * 1024

_STATUS: dict[type[Exception], int] = {
    NotAuthenticated: 401,
    NotAuthorised: 403,
    ConsentNotGranted: 403,
    SubjectNotFound: 404,
    PredictionNotFound: 404,
    ReleaseNotFound: 404,
    DuplicateRequest: 409,
    CaseAlreadyDecided: 409,
    OutcomeAlreadyRecorded: 409,
    OverrideInvalid: 422,
    ReleaseNotServable: 503,
    # fail closed: no recommendation without its audit record
    StoreUnavailable: 503,
    ClockBehindLedger: 503,
}


class _Problem(JSONResponse):
    """An error body in ASCII JSON: it may quote request text that has no UTF-8 form."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _loc(path: str) -> list[str | int]:
    out: list[str | int] = ["body"]
    for part in path.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return out


class _Instrument:
    """ASGI middleware: request counts and latency by route template; body size limit."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                response = JSONResponse(
                    {
                        "detail": f"request body exceeds {MAX_BODY_BYTES} bytes; send smaller batches"
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(
                path, scope["method"], status["code"], time.perf_counter() - started
            )


def create_app(predictor: Predictor, auth: AuthConfig, *, base_url: str = "") -> FastAPI:
    """Return the service app for ``predictor`` with ``auth``; routes declare their roles."""
    app = FastAPI(
        title="clinical-mlops inference service",
        version=__version__,
        description=(
            "Governed clinical risk predictions with consent, intended-use guard, calibrated "
            "probability, conformal set, flags, explanations and one audit record per inference. "
            "Decision support only."
        ),
    )
    metrics = ServiceMetrics()
    metrics.watch_monitoring(predictor.workspace)
    app.state.service = Service(
        predictor=predictor, auth=auth, metrics=metrics, base_url=base_url.rstrip("/")
    )
    for module in (predictions, oversight, models, cds):
        app.include_router(module.router)

    @app.exception_handler(InputInvalid)
    async def _invalid(_: Request, exc: InputInvalid) -> JSONResponse:
        return _Problem(
            status_code=422,
            content={
                "detail": [
                    {"loc": _loc(path), "msg": msg, "type": "input_invalid"}
                    for path, msg in exc.problems
                ]
            },
        )

    for error, code in _STATUS.items():

        async def handler(_: Request, exc: Exception, code: int = code) -> JSONResponse:
            headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            return _Problem(
                status_code=code,
                content={"detail": {"code": type(exc).__name__, "message": str(exc)}},
                headers=headers,
            )

        app.add_exception_handler(error, handler)

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # A read that cannot reach its database (writes raise StoreUnavailable): fail closed.
        return _Problem(
            status_code=503,
            content={
                "detail": {
                    "code": "StoreUnavailable",
                    "message": f"a database of the service cannot be read now "
                    f"({getattr(exc, 'orig', exc)}); nothing was returned or written, retry later",
                }
            },
        )

    for failure in (sa.exc.OperationalError, sa.exc.InterfaceError):
        app.add_exception_handler(failure, _database)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _Problem(status_code=422, content={"detail": errors})

    app.add_middleware(_Instrument, metrics=metrics)
    return app
