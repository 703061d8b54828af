"""``POST /v1/predict`` (one request or a batch) and ``POST /v1/fhir/predict``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.application.scoring import score_fhir_bundle
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
from clinical_mlops.serving.fhir import risk_assessment
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionResult
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
    """One patient's FHIR Bundle as the EHR sends it, with the request's purpose.

    The patient comes from the Bundle's Patient (``subject_id``, when sent, must name it),
    the setting and times from its Encounter (``encounter`` picks one of several).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    purpose: str
    bundle: dict[str, Any]
    subject_id: str | None = Field(default=None, min_length=1, max_length=256)
    encounter: str | None = Field(default=None, min_length=1, max_length=256)
    setting: str | None = None
    request_id: str | None = Field(default=None, max_length=128)


@router.post("/v1/fhir/predict", summary="Score one patient's FHIR Bundle; a RiskAssessment back")
async def predict_fhir(
    body: FhirPredict,
    who: Annotated[Principal, Depends(require("POST", "/v1/fhir/predict"))],
    svc: Annotated[Service, Depends(service)],
) -> JSONResponse:
    predictor = svc.predictor
    done = await svc.score(
        lambda: score_fhir_bundle(
            predictor,
            body.bundle,
            requester=who.actor,
            purpose=body.purpose,
            sites=who.sites,
            subject=body.subject_id,
            encounter=body.encounter,
            setting=body.setting,
            request_id=body.request_id,
            identifier_system=svc.fhir_identifier_system,
        ),
        single=True,
    )
    res = done.result
    svc.metrics.observe_results([res])
    if res.status != "scored":
        return _single(res) if res.refusal else JSONResponse(content=res.to_json())
    return JSONResponse(
        content=risk_assessment(
            res,
            spec=done.spec,
            patient_reference=done.reading.patient_reference
            or f"Patient/{done.reading.subject_id}",
            basis=done.reading.basis,
            occurrence=utc_iso(predictor.clock.now()),
            model_card_url=f"{svc.base_url}/v1/models/{res.release}/card",
        ),
        media_type="application/fhir+json",
    )
