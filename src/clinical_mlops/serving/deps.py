"""FastAPI dependencies: the service state, per-route role checks, the JSON response class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio.lowlevel
import anyio.to_thread
import orjson
from fastapi import Header, Request
from fastapi.responses import JSONResponse

from clinical_mlops.serving.auth import ROLES, AuthConfig, Principal, authorise
from clinical_mlops.serving.metrics import ServiceMetrics
from clinical_mlops.serving.predictor import Predictor

__all__ = ["ROUTE_ROLES", "Json", "Service", "require", "service"]

T = TypeVar("T")

#: (method, route) -> roles allowed; () means open. Every route is listed here.
ROUTE_ROLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/predict"): ("clinician", "system"),
    ("POST", "/v1/fhir/predict"): ("clinician", "system"),
    ("POST", "/v1/overrides"): ("clinician", "reviewer"),
    ("POST", "/v1/outcomes"): ("system", "reviewer"),
    ("GET", "/v1/models"): ROLES,
    ("GET", "/v1/models/{release}/card"): ROLES,
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
    #: scoring calls in flight in this process (see :meth:`score`)
    busy: int = 0

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


def require(method: str, route: str) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency authenticating the caller and checking the route's declared roles."""
    allowed = ROUTE_ROLES[(method, route)]

    async def check(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Principal:
        svc: Service = request.app.state.service
        who = svc.auth.authenticate(authorization=authorization, api_key=x_api_key)
        return authorise(who, allowed=allowed, route=f"{method} {route}")

    return check
