"""Periodic review checklist (R-H3): releases in service, due dates, and the checklist form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application.dossier import review_evidence
from clinical_mlops.application.governance import record_review
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.governance.reviews import CHECKLIST, review_status
from clinical_mlops.registry.registry import LIVE

router = APIRouter()

OUTCOMES = {
    "continue": "Continue in service",
    "continue_with_actions": "Continue, with actions (say which in the findings)",
    "suspend": "Suspend the release (it falls back to the clinical baseline)",
}
QUESTIONS = {
    "calibration": (
        "At each site, does the model still discriminate and is it still calibrated "
        "(predicted risks match observed outcomes)?"
    ),
    "fairness": "Are subgroup differences within the task's tolerance at each site?",
    "incidents": (
        "Have incidents and monitoring alerts on this release been contained, communicated "
        "and resolved, and do clinicians still accept its recommendations (override rate)?"
    ),
    "documentation": "Are the model card, validation report and gate evidence complete and current?",
}


@router.get("/reviews", response_class=HTMLResponse)
def reviews(
    viewer: Annotated[Viewer, Depends(page("/reviews"))], done: str | None = None
) -> HTMLResponse:
    registry = viewer.console.registry
    rows = [
        review_status(viewer.console.governance, r.version) | {"status": r.status, "task": r.task}
        for r in reversed(registry.list())
        if r.status in (*LIVE, "suspended")
    ]
    return render(viewer, "reviews.html", title="Periodic reviews", rows=rows, done=done)


@router.get("/reviews/{version}", response_class=HTMLResponse)
def review_form(
    version: str, viewer: Annotated[Viewer, Depends(page("/reviews/{version}"))]
) -> HTMLResponse:
    return render(
        viewer,
        "review.html",
        title=f"Review of {version}",
        version=version,
        e=review_evidence(viewer.console.governance, version),
        checklist=CHECKLIST,
        questions=QUESTIONS,
        outcomes=OUTCOMES,
    )


@router.post("/reviews/{version}")
def review(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/reviews/{version}"))],
    calibration: Annotated[str, Form()] = "",
    fairness: Annotated[str, Form()] = "",
    incidents: Annotated[str, Form()] = "",
    documentation: Annotated[str, Form()] = "",
    outcome: Annotated[str, Form()] = "",
) -> RedirectResponse:
    record_review(
        viewer.console.governance,
        version,
        reviewer=viewer.user.name,
        identity=viewer.identity,
        checklist={
            "calibration": calibration.strip(),
            "fairness": fairness.strip(),
            "incidents": incidents.strip(),
            "documentation": documentation.strip(),
        },
        outcome=outcome,
    )
    return RedirectResponse(viewer.url(f"/reviews?done={version}"), status_code=303)
