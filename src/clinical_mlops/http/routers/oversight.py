"""``GET /v1/cases``, ``GET /v1/cases/next``, ``GET /v1/cases/{prediction_id}``,
``POST /v1/overrides`` and ``POST /v1/outcomes``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.application.governance import (
    case_queue,
    decide_case,
    next_case,
    open_case,
    record_outcome,
)
from clinical_mlops.governance.queue import DEFAULT_SORT, ESCALATION_REASONS, QUEUE_SORTS
from clinical_mlops.http.deps import GuardedRoute, Service, require, service
from clinical_mlops.serving.auth import Principal

router = APIRouter(tags=["oversight"], route_class=GuardedRoute)
#: the escalation reasons a queue can be filtered by, as the query parameter accepts them
Reason = Enum("Reason", {key: key for key in ESCALATION_REASONS}, type=str)  # type: ignore[misc]
#: the orders a queue can be listed in, as the query parameter accepts them
Sort = Enum("Sort", {key: key for key in QUEUE_SORTS}, type=str)  # type: ignore[misc]
_SORT_HELP = "How the cases are ordered: " + "; ".join(f"{k}: {v}" for k, v in QUEUE_SORTS.items())


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


@router.get("/v1/cases", summary="The escalation queue: one row per case, with the total (R-H2)")
def cases(
    who: Annotated[Principal, Depends(require("GET", "/v1/cases"))],
    svc: Annotated[Service, Depends(service)],
    state: Literal["open", "decided", "all"] = "open",
    reason: Annotated[Reason | None, Query(description="Why the case was escalated")] = None,
    site: str | None = None,
    release: Annotated[str | None, Query(description="A release or model version")] = None,
    min_age_hours: Annotated[float | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=0, le=1000)] = 100,
    sort: Annotated[Sort, Query(description=_SORT_HELP)] = Sort[DEFAULT_SORT],
) -> dict[str, Any]:
    """One row per case (the escalated predictions of one patient and encounter while it
    is open, with ``prediction_count``), highest risk first unless ``sort`` says otherwise;
    ``total`` counts every case matching the filters, beyond ``limit``."""
    found = case_queue(
        svc.predictor.ledger,
        now=svc.predictor.clock.now(),
        state=state,
        reason=None if reason is None else str(reason.value),
        site=site,
        release=release,
        min_age_hours=min_age_hours,
        limit=limit,
        sort=str(sort.value),
    )
    return found.to_json() | {"sort": str(sort.value)}


@router.get(
    "/v1/cases/next",
    summary="The next open case to review in the queue's order (R-H2)",
    responses={404: {"description": "No open case waits (the body says so)"}},
)
def case_next(
    who: Annotated[Principal, Depends(require("GET", "/v1/cases/next"))],
    svc: Annotated[Service, Depends(service)],
    sort: Annotated[Sort, Query(description=_SORT_HELP)] = Sort[DEFAULT_SORT],
    reason: Annotated[Reason | None, Query(description="Why the case was escalated")] = None,
    site: str | None = None,
    release: Annotated[str | None, Query(description="A release or model version")] = None,
    skip: Annotated[
        list[int] | None, Query(description="Cases passed over (any of their predictions)")
    ] = None,
) -> Any:
    """The first open case, in the order ``sort`` names, that nobody sent to senior review;
    404 with ``{"detail": {"code": "NoCaseWaiting", ...}}`` when none waits."""
    found = next_case(
        svc.predictor.ledger,
        now=svc.predictor.clock.now(),
        sort=str(sort.value),
        reason=None if reason is None else str(reason.value),
        site=site,
        release=release,
        skip=skip or [],
    )
    if found is None:
        return JSONResponse(
            status_code=404,
            content={
                "detail": {
                    "code": "NoCaseWaiting",
                    "message": "no open case waits in the queue for these filters "
                    "(cases sent to senior review or skipped are not offered)",
                }
            },
        )
    return found.to_json()


@router.get("/v1/cases/{prediction_id}", summary="The case a prediction is in (R-H1)")
def case(
    prediction_id: int,
    who: Annotated[Principal, Depends(require("GET", "/v1/cases/{prediction_id}"))],
    svc: Annotated[Service, Depends(service)],
) -> dict[str, Any]:
    """The case of any of its predictions' ``audit_seq``, with its decisions."""
    return open_case(svc.predictor.ledger, prediction_id, now=svc.predictor.clock.now()).to_json()


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
