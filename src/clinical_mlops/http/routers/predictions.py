"""``POST /v1/predict`` (one request or a batch) and ``POST /v1/fhir/predict``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.clock import utc_iso
from clinical_mlops.http.deps import (
    GuardedRoute,
    Json,
    Service,
    admit,
    read_json,
    require,
    service,
)
from clinical_mlops.serving.auth import Principal
from clinical_mlops.serving.fhir import assessment_bundle, observations_to_features
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest, PredictionResult
from clinical_mlops.serving.schemas import PredictItem

router = APIRouter(tags=["predictions"], route_class=GuardedRoute)


class PredictBatch(BaseModel):
    """A batch of requests scored and audited in one transaction."""

    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[PredictItem] = Field(min_length=1, max_length=MAX_BATCH)
    explain: bool = True


def _single(res: PredictionResult) -> JSONResponse:
    if res.refusal:
        return Json(status_code=res.http_status, content={"detail": res.refusal})
    return Json(content=res.to_json())


_caller = require("POST", "/v1/predict")


async def predict(
    body: Annotated[PredictItem | PredictBatch, Body()],
    who: Annotated[Principal, Depends(_caller)],
    request: Request,
) -> JSONResponse:
    svc: Service = request.app.state.service
    predictor = svc.predictor
    if isinstance(body, PredictItem):
        one = [body.to_request()]
        results = await svc.score(
            lambda: predictor.predict_many(one, requester=who.actor, where="", sites=who.sites),
            single=True,
        )
        svc.metrics.observe_results(results)
        return _single(results[0])
    many = [i.to_request() for i in body.items]
    results = await svc.score(
        lambda: predictor.predict_many(
            many, requester=who.actor, explain=body.explain, sites=who.sites
        ),
        single=False,
    )
    svc.metrics.observe_results(results)
    return Json(content={"results": [r.to_json() for r in results]})


class _PredictRoute(GuardedRoute):
    """``POST /v1/predict``, with a short way through for the request nearly every client sends.

    The caller is admitted first, from the headers, as on every route. A body sent as
    ``application/json`` that parses and validates then goes straight to :func:`predict`:
    what FastAPI's general request handling does, without its work of resolving the
    endpoint's signature on every request. Anything else — another content type, a body
    that does not parse or validate, dependency overrides — goes the general way, so every
    error is FastAPI's own.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        field, overrides = self.body_field, self.dependency_overrides_provider
        if field is None:
            return general

        async def handler(request: Request) -> Response:
            who = admit(request, "POST", "/v1/predict")
            if (
                who is None
                or request.headers.get("content-type") != "application/json"
                or getattr(overrides, "dependency_overrides", None)
            ):
                return await general(request)
            value = await read_json(request)
            if value is None:
                return await general(request)
            body, errors = field.validate(value, {}, loc=("body",))
            if errors:
                return await general(request)
            return await predict(body, who, request)

        return handler


router.add_api_route(
    "/v1/predict",
    predict,
    methods=["POST"],
    summary="Score one request, or a batch of up to 1000",
    route_class_override=_PredictRoute,
)


class FhirPredict(BaseModel):
    """A FHIR Bundle of Observations for one patient, with the request's purpose and setting."""

    model_config = ConfigDict(extra="forbid", strict=True)
    subject_id: str = Field(min_length=1, max_length=256)
    purpose: str
    setting: str
    bundle: dict[str, Any]
    request_id: str | None = Field(default=None, max_length=128)
    hours_since_admission: float | None = None


@router.post(
    "/v1/fhir/predict",
    summary="Score a FHIR Bundle of Observations; a Bundle of RiskAssessment and Provenance back",
)
async def predict_fhir(
    body: FhirPredict,
    who: Annotated[Principal, Depends(require("POST", "/v1/fhir/predict"))],
    svc: Annotated[Service, Depends(service)],
) -> JSONResponse:
    spec = svc.predictor.scorer(svc.predictor.default).spec
    features, refs = observations_to_features(body.bundle, spec)
    req = PredictionRequest(
        subject_id=body.subject_id,
        purpose=body.purpose,
        setting=body.setting,
        features=features,
        request_id=body.request_id,
        hours_since_admission=body.hours_since_admission,
    )
    predictor = svc.predictor
    res = (
        await svc.score(
            lambda: predictor.predict_many([req], requester=who.actor, where="", sites=who.sites),
            single=True,
        )
    )[0]
    svc.metrics.observe_results([res])
    if res.status != "scored":
        return _single(res) if res.refusal else JSONResponse(content=res.to_json())
    return JSONResponse(
        content=assessment_bundle(
            res,
            spec=spec,
            origin=predictor.ledger.origin,
            base_url=svc.base_url,
            patient_reference=f"Patient/{body.subject_id}",
            basis=refs,
            occurrence=utc_iso(svc.predictor.clock.now()),
            model_card_url=f"{svc.base_url}/v1/models/{res.release}/card",
            scale=svc.fhir_scale,
        ),
        media_type="application/fhir+json",
    )
