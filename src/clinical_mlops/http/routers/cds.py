"""CDS Hooks 2.0: discovery (open), the patient-view service, feedback."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.application.governance import decide_cases
from clinical_mlops.errors import PredictionNotFound
from clinical_mlops.governance.oversight import OverrideRequest
from clinical_mlops.http.deps import GuardedRoute, Service, require, service
from clinical_mlops.serving.auth import Principal
from clinical_mlops.serving.cds_hooks import card_for, discovery, seq_from_card_uuid
from clinical_mlops.serving.fhir import observations_to_features
from clinical_mlops.serving.predictor import PredictionRequest

router = APIRouter(tags=["cds-hooks"], route_class=GuardedRoute)


class HookRequest(BaseModel):
    """A CDS Hooks call (patient-view)."""

    model_config = ConfigDict(strict=True)

    hook: Literal["patient-view"]
    hookInstance: str = Field(min_length=1, max_length=128)
    context: dict[str, Any]
    prefetch: dict[str, Any] = Field(default_factory=dict)
    fhirServer: str | None = None
    fhirAuthorization: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ConfigDict(strict=True)
    system: str | None = None
    code: str
    display: str | None = None


class OverrideReason(BaseModel):
    model_config = ConfigDict(strict=True)
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    card: str
    outcome: Literal["accepted", "overridden"]
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str | None = None


class Feedback(BaseModel):
    model_config = ConfigDict(strict=True)
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


def _not_found(service_id: str, svc: Service) -> None:
    served = svc.predictor.scorer(svc.predictor.default).spec.words().service_id
    if service_id != served:
        raise PredictionNotFound(f"no CDS service {service_id!r}; discovery lists {served!r}")


@router.get("/cds-services", summary="CDS Hooks discovery (open)")
def cds_discovery(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    spec = svc.predictor.scorer(svc.predictor.default).spec
    words = spec.words()
    return discovery(
        service_id=words.service_id,
        title=words.title,
        description=words.description,
        population=spec.intended_use.population,
    )


@router.post("/cds-services/{service_id}", summary="patient-view: one risk card")
async def cds_call(
    service_id: str,
    body: HookRequest,
    who: Annotated[Principal, Depends(require("POST", "/cds-services/{service_id}"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    _not_found(service_id, svc)
    p = svc.predictor
    spec = p.scorer(p.default).spec
    patient = body.context.get("patientId")
    observations = body.prefetch.get("observations")
    if not isinstance(patient, str) or not isinstance(observations, dict):
        from clinical_mlops.errors import InputInvalid

        raise InputInvalid(
            [
                (where, f"{what} is required")
                for where, what, given in (
                    ("context.patientId", "a patientId (text)", isinstance(patient, str)),
                    (
                        "prefetch.observations",
                        "an Observation Bundle (object)",
                        isinstance(observations, dict),
                    ),
                )
                if not given
            ]
        )
    features, _ = observations_to_features(observations, spec)
    req = PredictionRequest(
        subject_id=patient,
        purpose="direct_care",
        setting=spec.cohort.setting,
        features=features,
        request_id=f"cds-{body.hookInstance}",
    )
    res = (
        await svc.score(
            lambda: p.predict_many([req], requester=who.actor, where="", sites=who.sites),
            single=True,
        )
    )[0]
    svc.metrics.observe_results([res])
    card = card_for(
        res,
        origin=p.ledger.origin,
        model_card_url=f"{svc.base_url}/v1/models/{res.release}/card",
        outcome_words=spec.words().risk_words,
    )
    if res.refusal:
        card = {
            "summary": f"Risk model not run: {res.refusal['code'].replace('_', ' ')}"[:139],
            "indicator": "info",
            "detail": res.refusal["message"],
            "source": {"label": "clinical-mlops"},
        }
    return {"cards": [card] if card else []}


@router.post("/cds-services/{service_id}/feedback", summary="Card feedback: accepted or overridden")
def cds_feedback(
    service_id: str,
    body: Feedback,
    who: Annotated[Principal, Depends(require("POST", "/cds-services/{service_id}/feedback"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    _not_found(service_id, svc)
    ledger = svc.predictor.ledger
    requests = []
    for item in body.feedback:
        seq = seq_from_card_uuid(ledger.origin, item.card)
        if seq is None:
            raise PredictionNotFound(f"card {item.card!r} was not issued by this service")
        reason = item.overrideReason
        requests.append(
            OverrideRequest(
                prediction_seq=seq,
                action="accept" if item.outcome == "accepted" else "override",
                reason_code=reason.reason.code if reason and reason.reason else None,
                comment=reason.userComment if reason else None,
            )
        )
    # One transaction: feedback on a card already decided refuses the whole post (409).
    made = decide_cases(ledger, requests, actor=who.actor, source="cds-hooks")
    for d in made:
        svc.metrics.overrides.labels(d.action, d.reason_code or "none").inc()
    return {"override_seqs": [d.seq for d in made]}
