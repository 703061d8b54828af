"""The HTTP service: FastAPI app wiring the routers, error mapping and request metrics.

``create_app`` only wires: routers per resource (``http.routers``), auth before
the body is read (``http.deps``), one exception handler per library error, the
OpenAPI document (``http.openapi``), and a small ASGI middleware counting
requests and latency by route template and holding bodies to
:data:`MAX_BODY_BYTES`. Access logs are off on the hot path; every inference is in
the audit ledger instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from clinical_mlops import __version__
from clinical_mlops.errors import (
    CaseAlreadyDecided,
    ClockBehindLedger,
    ConsentNotGranted,
    DuplicateRequest,
    FhirDataUnavailable,
    InputInvalid,
    KeyProviderUnavailable,
    LedgerCorrupted,
    NotAuthenticated,
    NotAuthorised,
    OutcomeAlreadyRecorded,
    OverrideInvalid,
    PredictionNotFound,
    ReleaseNotFound,
    ReleaseNotServable,
    StoreUnavailable,
    SubjectErased,
    SubjectNotFound,
)
from clinical_mlops.http.deps import Service
from clinical_mlops.http.openapi import document
from clinical_mlops.http.routers import cds, health, models, oversight, predictions
from clinical_mlops.monitoring.gauges import MonitoringCollector
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.inputs import split_path
from clinical_mlops.serving.metrics import ServiceMetrics
from clinical_mlops.serving.predictor import Predictor

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 8 * 1024 * 1024
_TOO_LARGE = f"request body exceeds {MAX_BODY_BYTES} bytes; send smaller batches"
_BUNDLE_TOO_LARGE = (
    f"FHIR Bundle refused: the request body exceeds the {MAX_BODY_BYTES} bytes "
    f"({MAX_BODY_BYTES // (1024 * 1024)} MiB) one patient's Bundle may take; send the "
    "encounter's resources only, or only the codes the task declares"
)


def _too_large(scope: Any) -> str:
    path = str(scope.get("path", ""))
    return _BUNDLE_TOO_LARGE if path.startswith(("/v1/fhir/", "/cds-services/")) else _TOO_LARGE


_STATUS: dict[type[Exception], int] = {
    NotAuthenticated: 401,
    NotAuthorised: 403,
    ConsentNotGranted: 403,
    SubjectNotFound: 404,
    # the patient was erased: the prediction exists but nothing more is recorded against it
    SubjectErased: 410,
    PredictionNotFound: 404,
    ReleaseNotFound: 404,
    DuplicateRequest: 409,
    CaseAlreadyDecided: 409,
    OutcomeAlreadyRecorded: 409,
    OverrideInvalid: 422,
    # CDS Hooks 2.0: the service could not obtain the FHIR data it needs
    FhirDataUnavailable: 412,
    ReleaseNotServable: 503,
    # fail closed: no recommendation without its audit record
    StoreUnavailable: 503,
    # the key server (Transit) cannot wrap or sign: nothing is written, nothing returned
    KeyProviderUnavailable: 503,
    ClockBehindLedger: 503,
    # a damaged record (e.g. the prediction an override names): nothing is built on it
    LedgerCorrupted: 503,
}


class _Problem(JSONResponse):
    """An error body in ASCII JSON: it may quote request text that has no UTF-8 form."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _loc(path: str) -> list[str | int]:
    return ["body", *split_path(path)]


class BodyTooLarge(HTTPException):
    """A request body past :data:`MAX_BODY_BYTES`, found while it streams in (413)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=_TOO_LARGE)


class _Instrument:
    """ASGI middleware: request counts and latency by route template; body size limit.

    A body declaring a ``Content-Length`` past the limit is refused before anything else;
    the server delivers no more than a declared length. A body without one (chunked) is
    counted as it arrives and refused the moment it passes the limit, so the service never
    holds more than :data:`MAX_BODY_BYTES` of one request.
    """

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = True
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                counted = False
                if value.isdigit() and int(value) > MAX_BODY_BYTES:
                    await _Problem({"detail": _too_large(scope)}, status_code=413)(
                        scope, receive, send
                    )
                    return
        if counted:
            receive = _counting(receive)
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BodyTooLarge:
            if status["sent"]:  # the response has started: nothing else can be sent
                raise
            status["code"] = 413
            await _Problem({"detail": _too_large(scope)}, status_code=413)(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(
                path, scope["method"], status["code"], time.perf_counter() - started
            )


def _counting(receive: Any) -> Any:
    """Return ``receive`` raising :class:`BodyTooLarge` once the body passes the limit."""
    received = 0

    async def counting() -> Any:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > MAX_BODY_BYTES:
            raise BodyTooLarge
        return message

    return counting


def create_app(
    predictor: Predictor,
    auth: AuthConfig,
    *,
    base_url: str = "",
    fhir_servers: Sequence[str] = (),
    fhir_identifier_system: str | None = None,
) -> FastAPI:
    """Return the service app for ``predictor`` with ``auth``; routes declare their roles.

    ``fhir_servers``: the base URLs of the EHR FHIR servers CDS Hooks calls may be read
    from (``fhirServer``); none by default, so only prefetched data is used.
    ``fhir_identifier_system`` (default ``CLINICAL_MLOPS_FHIR_IDENTIFIER_SYSTEM``): the
    ``Patient.identifier`` system FHIR Bundles name patients by; unset, ``Patient.id``.
    """
    app = FastAPI(
        title="clinical-mlops inference service",
        version=__version__,
        description=(
            "Governed clinical risk predictions with consent, intended-use guard, calibrated "
            "probability, conformal set, flags, explanations and one audit record per inference. "
            "Decision support only."
        ),
        # operation ids are the endpoint names, which the document's links refer to
        generate_unique_id_function=lambda route: route.name,
    )
    metrics = ServiceMetrics()
    # the monitoring gauges (``clinical_mlops_monitor_*``) are scraped from the same /metrics
    metrics.registry.register(MonitoringCollector(predictor.workspace))
    app.state.service = Service(
        predictor=predictor,
        auth=auth,
        metrics=metrics,
        base_url=base_url.rstrip("/"),
        fhir_servers=tuple(fhir_servers),
        fhir_identifier_system=fhir_identifier_system
        or os.environ.get("CLINICAL_MLOPS_FHIR_IDENTIFIER_SYSTEM")
        or None,
    )
    for module in (predictions, oversight, models, health, cds):
        app.include_router(module.router)
    document(app, predictor)

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
