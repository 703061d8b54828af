"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /v1/health`` (operators).

The first two are open, for container and load-balancer probes, and say nothing a
caller without credentials should not know: liveness only that the process answers,
readiness which component is not ready and the kind of failure. ``/v1/health`` adds,
for any authenticated role, the release being served and its rollout.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from clinical_mlops.http.deps import Json, Service, require, service
from clinical_mlops.serving.auth import Principal
from clinical_mlops.serving.health import check_health

router = APIRouter(tags=["health"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "A component is not ready; the body names it"}
}


@router.get("/healthz", summary="Liveness: the process answers (open)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: ledger, identity vault and metadata usable, a release loaded (open)",
    responses=_NOT_READY,
)
def readyz(svc: Annotated[Service, Depends(service)]) -> Json:
    health = check_health(svc.predictor)
    return Json(health.to_json(), status_code=200 if health.ready else 503)


@router.get(
    "/v1/health",
    summary="Readiness with the release being served and its rollout",
    responses=_NOT_READY,
)
def health(
    _: Annotated[Principal, Depends(require("GET", "/v1/health"))],
    svc: Annotated[Service, Depends(service)],
) -> Json:
    p = svc.predictor
    found = check_health(p)
    body: dict[str, Any] = found.to_json() | {"task": p.task, "site": p.site}
    if found.checks["metadata"] == "ok":
        decision, release = p.decision(p.site)
        body |= {
            "release": release,
            "release_status": p.status_of(release) if release else None,
            "mode": decision.mode,
        }
    return Json(body, status_code=200 if found.ready else 503)
