"""FastAPI dependencies: the service state and per-route role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from clinical_mlops.serving.auth import AuthConfig, Principal, authorise
from clinical_mlops.serving.metrics import ServiceMetrics
from clinical_mlops.serving.predictor import Predictor

__all__ = ["ROUTE_ROLES", "Service", "require", "service"]

ALL_ROLES = ("clinician", "reviewer", "ml_engineer", "compliance", "auditor", "system")
#: (method, route) -> roles allowed; () means open. Every route is listed here.
ROUTE_ROLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/predict"): ("clinician", "system"),
    ("POST", "/v1/fhir/predict"): ("clinician", "system"),
    ("POST", "/v1/overrides"): ("clinician", "reviewer"),
    ("POST", "/v1/outcomes"): ("system", "reviewer"),
    ("GET", "/v1/models"): ALL_ROLES,
    ("GET", "/v1/models/{release}/card"): ALL_ROLES,
    ("GET", "/healthz"): ALL_ROLES,
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
        svc: Annotated[Service, Depends(service)],
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Principal:
        who = svc.auth.authenticate(authorization=authorization, api_key=x_api_key)
        return authorise(who, allowed=allowed, route=f"{method} {route}")

    return check
