"""``POST /v1/overrides`` and ``POST /v1/outcomes``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.application.governance import decide_case, record_outcome
from clinical_mlops.http.deps import GuardedRoute, Service, require, service
from clinical_mlops.serving.auth import Principal

router = APIRouter(tags=["oversight"], route_class=GuardedRoute)


class OverrideBody(BaseModel):
    """A clinician's one-step response to a shown prediction (one decision per prediction)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prediction_id: int = Field(ge=0, description="The audit_seq returned with the prediction")
    action: Literal["accept", "override", "escalate"]
    reason_code: str | None = Field(default=None, description="A declared override reason code")
    comment: str | None = Field(default=None, max_length=2000)
    correction: bool = Field(
        default=False,
        description="Replace the prediction's recorded decision (needs correction_reason)",
    )
    correction_reason: str | None = Field(
        default=None, max_length=2000, description="Why the recorded decision is wrong"
    )


class OutcomeBody(BaseModel):
    """An observed outcome, linked to one or more predictions (one outcome per prediction)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prediction_ids: list[int] = Field(min_length=1, max_length=1000)
    outcome: int = Field(ge=0, le=1, description="1 if the outcome occurred, else 0")
    observed_at: str | None = None
    correction: bool = Field(
        default=False,
        description="Replace each prediction's recorded outcome (needs correction_reason)",
    )
    correction_reason: str | None = Field(
        default=None, max_length=2000, description="Why the recorded outcome is wrong"
    )


@router.post("/v1/overrides", status_code=201, summary="Record an override (R-H1)")
def override(
    body: OverrideBody,
    who: Annotated[Principal, Depends(require("POST", "/v1/overrides"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    made = decide_case(
        svc.predictor.ledger,
        body.prediction_id,
        action=body.action,
        reason_code=body.reason_code,
        comment=body.comment,
        actor=who.actor,
        source="api",
        correction=body.correction,
        correction_reason=body.correction_reason,
    )
    svc.metrics.overrides.labels(body.action, body.reason_code or "none").inc()
    return made.record


@router.post("/v1/outcomes", status_code=201, summary="Link an outcome to predictions (R-O1)")
def outcome(
    body: OutcomeBody,
    who: Annotated[Principal, Depends(require("POST", "/v1/outcomes"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    seqs = record_outcome(
        svc.predictor.ledger,
        prediction_seqs=body.prediction_ids,
        outcome=body.outcome,
        observed_at=body.observed_at,
        actor=who.actor,
        correction=body.correction,
        correction_reason=body.correction_reason,
    )
    svc.metrics.outcomes.inc(len(seqs))
    return {"outcome_seqs": seqs}
