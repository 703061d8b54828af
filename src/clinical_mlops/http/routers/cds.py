"""CDS Hooks 2.0: discovery (open), the patient-view service, feedback."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.application.bedside import PatientView, answer_patient_view
from clinical_mlops.application.governance import decide_cases
from clinical_mlops.errors import PredictionNotFound
from clinical_mlops.http.deps import GuardedRoute, Service, require, service
from clinical_mlops.serving.auth import Principal
from clinical_mlops.serving.cds_hooks import card_for, discovery, feedback_requests, refusal_card
from clinical_mlops.serving.fhir_client import prefetch_templates

router = APIRouter(tags=["cds-hooks"], route_class=GuardedRoute)


class HookRequest(BaseModel):
    """A CDS Hooks call (patient-view)."""

    model_config = ConfigDict(strict=True)

    hook: Literal["patient-view"]
    hookInstance: str = Field(min_length=1, max_length=128)
    context: dict[str, Any]
    prefetch: dict[str, Any] = Field(default_factory=dict)
    fhirServer: str | None = Field(default=None, max_length=2000)
    fhirAuthorization: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ConfigDict(strict=True)
    system: str = Field(max_length=500)
    code: str = Field(max_length=200)
    display: str | None = Field(default=None, max_length=500)


class OverrideReason(BaseModel):
    model_config = ConfigDict(strict=True)
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(strict=True)
    id: str = Field(max_length=128)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(strict=True)
    card: str = Field(max_length=64)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] = Field(default_factory=list, max_length=20)
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(max_length=64)


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
        prefetch=prefetch_templates(spec),
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
    call = PatientView(
        hook_instance=body.hookInstance,
        context=body.context,
        prefetch=body.prefetch,
        fhir_server=body.fhirServer,
        fhir_authorization=body.fhirAuthorization,
    )
    # not ``single``: reading the EHR's FHIR server blocks, so it runs off the event loop
    scored = await svc.score(
        lambda: answer_patient_view(
            p,
            call,
            requester=who.actor,
            sites=who.sites,
            fhir_servers=svc.fhir_servers,
            identifier_system=svc.fhir_identifier_system,
        ),
        single=False,
    )
    res = scored.result
    svc.metrics.observe_results([res])
    card = card_for(
        res,
        origin=p.ledger.origin,
        model_card_url=f"{svc.base_url}/v1/models/{res.release}/card",
        outcome_words=spec.words().risk_words,
    )
    card = refusal_card(res, risk_words=spec.words().risk_words) or card
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
    requests = feedback_requests(ledger.origin, [item.model_dump() for item in body.feedback])
    # One transaction: feedback on a card already decided refuses the whole post (409).
    made = decide_cases(ledger, requests, actor=who.actor, source="cds-hooks")
    for d in made:
        svc.metrics.overrides.labels(d.action, d.reason_code or "none").inc()
    return {"override_seqs": [d.seq for d in made]}
