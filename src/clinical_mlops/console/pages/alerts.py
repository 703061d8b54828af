"""Alerts inbox: monitoring alerts with a drill-down plot; acknowledge, open a review,
or go to the (confirmed, role-gated) suspension of the alert's release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application.dossier import open_alert_review
from clinical_mlops.application.monitoring import acknowledge_alert
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.console.plots import series_svg
from clinical_mlops.errors import InputInvalid
from clinical_mlops.monitoring.alerts import (
    KINDS,
    STATUSES,
    alert_series,
    get_alert,
    list_alerts,
)

router = APIRouter()

KIND_WORDS = {
    "data": "Data drift (inputs or scores)",
    "concept": "Concept drift (outcome-linked performance)",
    "workflow": "Workflow drift (overrides, volume)",
    "fairness": "Fairness (subgroup gaps)",
}
ACTION_WORDS = {
    "open_review": "Open a review",
    "escalate": "Escalate cases to human review",
    "suspend": "Suspend the release",
}


@router.get("/alerts", response_class=HTMLResponse)
def alerts(
    viewer: Annotated[Viewer, Depends(page("/alerts"))], status: str = "active", kind: str = ""
) -> HTMLResponse:
    if status not in ("active", "all", *STATUSES):
        raise InputInvalid([("status", f"expected active, all or one of {', '.join(STATUSES)}")])
    if kind and kind not in KINDS:
        raise InputInvalid([("kind", f"expected one of {', '.join(KINDS)}")])
    wanted = {"active": ("open", "acknowledged"), "all": None}.get(status, status)
    items = list_alerts(viewer.console.workspace, status=wanted, kind=kind or None)
    return render(
        viewer,
        "alerts.html",
        title="Alerts",
        items=items,
        filters={"status": status, "kind": kind},
        kinds=KIND_WORDS,
        statuses=STATUSES,
        actions=ACTION_WORDS,
    )


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert(
    alert_id: str,
    viewer: Annotated[Viewer, Depends(page("/alerts/{alert_id}"))],
    done: str | None = None,
) -> HTMLResponse:
    ws = viewer.console.workspace
    item = get_alert(ws, alert_id)
    series = alert_series(ws, alert_id)
    return render(
        viewer,
        "alert.html",
        title=f"Alert {alert_id}",
        a=item,
        series=series,
        plot=series_svg(
            series["points"],
            title=f"{series.get('quantity') or item.rule} over time for alert {alert_id}",
            threshold=series.get("threshold"),
            marker=item.opened_at,
        ),
        kinds=KIND_WORDS,
        actions=ACTION_WORDS,
        done=done,
        may_ack=viewer.may("POST", "/alerts/{alert_id}/acknowledge"),
        may_review=viewer.may("POST", "/alerts/{alert_id}/review"),
        may_suspend=viewer.may("GET", "/models/{version}/suspend"),
    )


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    alert_id: str,
    viewer: Annotated[Viewer, Depends(posted("/alerts/{alert_id}/acknowledge"))],
    comment: Annotated[str, Form()] = "",
) -> RedirectResponse:
    acknowledge_alert(
        viewer.console.workspace,
        alert_id,
        actor=viewer.user.actor,
        comment=comment.strip() or None,
        clock=viewer.console.clock,
        identity=viewer.identity,
    )
    return RedirectResponse(viewer.url(f"/alerts/{alert_id}?done=acknowledged"), status_code=303)


@router.post("/alerts/{alert_id}/review")
def review(
    alert_id: str,
    viewer: Annotated[Viewer, Depends(posted("/alerts/{alert_id}/review"))],
) -> RedirectResponse:
    noted = open_alert_review(
        viewer.console.workspace, alert_id, actor=viewer.user.actor, clock=viewer.console.clock
    )
    release = noted.get("release")
    target = f"/reviews/{release}" if release else f"/alerts/{alert_id}?done=review+opened"
    return RedirectResponse(viewer.url(target), status_code=303)
