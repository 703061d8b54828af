"""FastAPI dependencies: the service state, per-route role checks, the JSON response class.

Every route is a :class:`GuardedRoute`: the caller is authenticated from the request's
headers and its roles checked against :data:`ROUTE_ROLES` before the body is read, so a
request without valid credentials gets 401 (and one without a role 403) whatever its
body; a JSON body is then parsed once, refusing duplicate keys, before FastAPI validates
it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio.lowlevel
import anyio.to_thread
import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from clinical_mlops.errors import InputInvalid
from clinical_mlops.serving.auth import ROLES, AuthConfig, Principal, authorise
from clinical_mlops.serving.fhir import Scale, probability_scale
from clinical_mlops.serving.inputs import loads_json
from clinical_mlops.serving.metrics import ServiceMetrics
from clinical_mlops.serving.predictor import Predictor

__all__ = ["ROUTE_ROLES", "GuardedRoute", "Json", "Service", "require", "service"]

#: where the authenticated caller of a request is kept in its ASGI scope
PRINCIPAL = "clinical_mlops.principal"

T = TypeVar("T")

#: (method, route) -> roles allowed; () means open. Every route is listed here.
ROUTE_ROLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/predict"): ("clinician", "system"),
    ("POST", "/v1/fhir/predict"): ("clinician", "system"),
    ("GET", "/v1/cases"): ("clinician", "reviewer"),
    ("GET", "/v1/cases/next"): ("clinician", "reviewer"),
    ("GET", "/v1/cases/{prediction_id}"): ("clinician", "reviewer"),
    ("POST", "/v1/overrides"): ("clinician", "reviewer"),
    ("POST", "/v1/outcomes"): ("system", "reviewer"),
    ("GET", "/v1/models"): ROLES,
    # open: CDS cards link to it for a clinician's browser; it holds no patient data
    ("GET", "/v1/models/{release}/card"): (),
    ("GET", "/healthz"): (),
    ("GET", "/readyz"): (),
    ("GET", "/v1/health"): ROLES,
    ("GET", "/metrics"): ("ml_engineer", "compliance", "auditor", "system"),
    ("GET", "/cds-services"): (),
    ("POST", "/cds-services/{service_id}"): ("clinician", "system"),
    ("POST", "/cds-services/{service_id}/feedback"): ("clinician", "system"),
}


@dataclass
class Service:
    """What every route needs: the predictor, the auth config, metrics, the public base URL."""

    predictor: Predictor
    auth: AuthConfig
    metrics: ServiceMetrics
    base_url: str
    #: base URLs of the EHR FHIR servers a CDS Hooks call may be read from
    fhir_servers: tuple[str, ...] = ()
    #: the Patient.identifier system FHIR Bundles name patients by (None: Patient.id)
    fhir_identifier_system: str | None = None
    #: scoring calls in flight in this process (see :meth:`score`)
    busy: int = 0
    #: the ``probabilityDecimal`` scale, read once at start (a bad setting stops the start)
    fhir_scale: Scale = field(default_factory=probability_scale)

    async def score(self, work: Callable[[], T], *, single: bool) -> T:
        """Return ``work()``, a blocking scoring call, without stalling the service.

        A single row with nothing else in flight runs right here on the event loop: a
        round trip through the thread pool (two thread wake-ups and the interpreter lock
        handed over twice) costs about as much as the HTTP layer itself. As soon as other
        scoring calls are in flight — requests arriving together meet at the checkpoint
        below — every call goes to the thread pool, so concurrent requests overlap their
        database commits and the ledger commits them as one group. Batches always go to
        the thread pool: they must not hold up the event loop.
        """
        self.busy += 1
        try:
            if single:
                await anyio.lowlevel.checkpoint()
                if self.busy == 1:
                    return work()
            return await anyio.to_thread.run_sync(work)
        finally:
            self.busy -= 1


class Json(JSONResponse):
    """A JSON body encoded by orjson: UTF-8, compact, and never NaN or infinity.

    orjson writes a non-finite float as ``null``, so the body is always valid JSON
    (the standard library would write ``NaN``, which JSON parsers reject).
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


async def service(request: Request) -> Service:
    """Return the service state of the app handling ``request``.

    Dependencies are ``async``: they do not block, and a plain ``def`` dependency would cost
    every request a hop to the thread pool and back.
    """
    svc: Service = request.app.state.service
    return svc


def admit(request: Request, method: str, route: str) -> Principal | None:
    """Return the caller of ``request`` once its credentials and roles pass ``route``'s rule.

    Reads only headers. An open route (no roles declared) admits anyone and returns None.
    Raises ``NotAuthenticated`` (401) or ``NotAuthorised`` (403). The caller is kept in
    the request's scope, so it is verified once per request.
    """
    scope = request.scope
    known: Principal | None = scope.get(PRINCIPAL)
    if known is not None:
        return known
    allowed = ROUTE_ROLES[(method, route)]
    if not allowed:
        return None
    svc: Service = request.app.state.service
    headers = request.headers
    who = svc.auth.authenticate(
        authorization=headers.get("authorization"), api_key=headers.get("x-api-key")
    )
    scope[PRINCIPAL] = authorise(who, allowed=allowed, route=f"{method} {route}")
    return scope[PRINCIPAL]


async def read_json(request: Request) -> Any:
    """Return the request's JSON body, parsed once with duplicate keys refused, or None.

    None when the body is empty or does not parse: FastAPI then reports where it fails.
    Raises ``InputInvalid`` (422) naming a key sent twice, a body that is not UTF-8, or one
    nested too deeply to read. The value is kept where Starlette's ``Request.json`` keeps
    it, so FastAPI does not parse the body again.
    """
    raw = await request.body()
    if not raw:
        return None
    try:
        value = loads_json(raw)
    except UnicodeDecodeError:
        raise InputInvalid([("", "the body is not JSON text in UTF-8")]) from None
    except RecursionError:
        raise InputInvalid([("", "the body nests lists or objects too deeply to read")]) from None
    except ValueError:
        return None
    request._json = value
    return value


class GuardedRoute(APIRoute):
    """A route whose caller is admitted (:func:`admit`) before its body is read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        (method,) = self.methods or {"GET"}
        route, reads_body = self.path, self.body_field is not None
        ROUTE_ROLES[(method, route)]  # every route declares its roles: a KeyError otherwise

        async def handler(request: Request) -> Response:
            admit(request, method, route)
            if reads_body:
                await read_json(request)
            return await general(request)

        return handler


def require(method: str, route: str) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency giving the caller :func:`admit` let through ``route``."""
    if not ROUTE_ROLES[(method, route)]:
        raise ValueError(f"{method} {route} is open: it has no caller to give")

    async def check(request: Request) -> Principal:
        return cast(Principal, admit(request, method, route))

    return check
