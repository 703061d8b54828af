"""``GET /v1/models``, the model card and ``GET /metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from clinical_mlops.http.deps import GuardedRoute, Service, require, service
from clinical_mlops.serving.auth import Principal

router = APIRouter(tags=["models"], route_class=GuardedRoute)


@router.get("/v1/models", summary="Releases of the task, their status and where they run")
def models(
    _: Annotated[Principal, Depends(require("GET", "/v1/models"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    return {"task": svc.predictor.task, "releases": svc.predictor.models()}


@router.get(
    "/v1/models/{release}/card",
    summary="The model card of a release (HTML, open)",
    response_class=HTMLResponse,
)
def model_card(release: str, svc: Annotated[Service, Depends(service)]) -> HTMLResponse:
    """Open to any caller: CDS cards link here, and a clinician's browser sends no token.

    The card describes the model (intended use, validation, limits) and holds no patient
    data; it is the document a clinician must be able to read before relying on a score.
    """
    scorer = svc.predictor.scorer(release)
    return HTMLResponse((scorer.bundle.path / "model_card.html").read_text(encoding="utf-8"))


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(
    _: Annotated[Principal, Depends(require("GET", "/metrics"))],
    svc: Annotated[Service, Depends(service)],
) -> Response:
    svc.metrics.set_status(svc.predictor.models())
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
