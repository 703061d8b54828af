"""``POST /v1/predict`` (one request or a batch) and ``POST /v1/fhir/predict``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.clock import utc_iso
from clinical_mlops.serving.auth import Principal
from clinical_mlops.serving.deps import Json, Service, require, service
from clinical_mlops.serving.fhir import observations_to_features, risk_assessment
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest, PredictionResult

router = APIRouter(tags=["predictions"])


class PredictItem(BaseModel):
    """One prediction request; ``features`` holds the task's inputs by name."""

    model_config = ConfigDict(extra="forbid")
    request_id: str | None = Field(default=None, max_length=128)
    subject_id: str = Field(min_length=1, max_length=256, description="Patient identifier")
    purpose: str = Field(description="Why the prediction is asked for (consent purpose)")
    setting: str = Field(description="Care setting, e.g. icu")
    site: str | None = Field(default=None, max_length=128)
    hours_since_admission: float | None = None
    features: dict[str, Any] = Field(
        description='Value in the declared unit, or {"value": ..., "unit": ...}; null if not measured'
    )


class PredictBatch(BaseModel):
    """A batch of requests scored and audited in one transaction."""

    model_config = ConfigDict(extra="forbid")
    items: list[PredictItem] = Field(min_length=1, max_length=MAX_BATCH)
    explain: bool = True


def _request(item: PredictItem, who: Principal) -> PredictionRequest:
    return PredictionRequest(
        subject_id=item.subject_id,
        purpose=item.purpose,
        setting=item.setting,
        features=item.features,
        request_id=item.request_id,
        site=item.site or who.site,
        hours_since_admission=item.hours_since_admission,
    )


def _single(res: PredictionResult) -> JSONResponse:
    if res.refusal:
        return Json(status_code=res.http_status, content={"detail": res.refusal})
    return Json(content=res.to_json())


@router.post("/v1/predict", summary="Score one request, or a batch of up to 1000")
async def predict(
    body: Annotated[PredictItem | PredictBatch, Body()],
    who: Annotated[Principal, Depends(require("POST", "/v1/predict"))],
    request: Request,
) -> JSONResponse:
    svc: Service = request.app.state.service
    predictor = svc.predictor
    if isinstance(body, PredictItem):
        one = [_request(body, who)]
        results = await svc.score(
            lambda: predictor.predict_many(one, requester=who.actor, where=""), single=True
        )
        svc.metrics.observe_results(results)
        return _single(results[0])
    many = [_request(i, who) for i in body.items]
    results = await svc.score(
        lambda: predictor.predict_many(many, requester=who.actor, explain=body.explain),
        single=False,
    )
    svc.metrics.observe_results(results)
    return Json(content={"results": [r.to_json() for r in results]})


class FhirPredict(BaseModel):
    """A FHIR Bundle of Observations for one patient, with the request's purpose and setting."""

    model_config = ConfigDict(extra="forbid")
    subject_id: str = Field(min_length=1, max_length=256)
    purpose: str
    setting: str
    bundle: dict[str, Any]
    request_id: str | None = Field(default=None, max_length=128)
    hours_since_admission: float | None = None


@router.post(
    "/v1/fhir/predict", summary="Score a FHIR Bundle of Observations; a RiskAssessment back"
)
def predict_fhir(
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
        site=who.site,
        hours_since_admission=body.hours_since_admission,
    )
    res = svc.predictor.predict_many([req], requester=who.actor, where="")[0]
    svc.metrics.observe_results([res])
    if res.status != "scored":
        return _single(res) if res.refusal else JSONResponse(content=res.to_json())
    return JSONResponse(
        content=risk_assessment(
            res,
            spec=spec,
            patient_reference=f"Patient/{body.subject_id}",
            basis=refs,
            occurrence=utc_iso(svc.predictor.clock.now()),
            model_card_url=f"{svc.base_url}/v1/models/{res.release}/card",
        ),
        media_type="application/fhir+json",
    )
