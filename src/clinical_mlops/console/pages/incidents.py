"""Incident workflow (R-H4): open with named leads, contain (suspend or roll back),
communicate, decide on patient notification, resolve with the root cause."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application.governance import (
    add_incident_step,
    contain_incident,
    open_incident,
    resolve_incident,
)
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.governance.incidents import INCIDENT_ROLES, get_incident, list_incidents

router = APIRouter()
Field = Annotated[str, Form()]
SEVERITIES = ("low", "moderate", "high", "critical")
STEP_KINDS = {
    "communication": "Communication (who was told what)",
    "patient_notification": "Patient notification (who was notified, or 'not required: why')",
    "note": "Note",
}
ROLE_LABELS = {
    "incident_lead": "Incident lead",
    "clinical_lead": "Clinical lead",
    "communications_lead": "Communications lead",
}


@router.get("/incidents", response_class=HTMLResponse)
def incidents(
    viewer: Annotated[Viewer, Depends(page("/incidents"))], release: str = ""
) -> HTMLResponse:
    registry = viewer.console.registry
    if not release:
        active = [a.version for r in registry.list() if (a := registry.active(r.task))]
        release = active[0] if active else ""
    return render(
        viewer,
        "incidents.html",
        title="Incidents",
        incidents=list(reversed(list_incidents(viewer.console.governance))),
        releases=[r.version for r in reversed(registry.list())],
        people=sorted(viewer.console.governance.people()),
        chosen=release,
        severities=SEVERITIES,
        roles=INCIDENT_ROLES,
        role_labels=ROLE_LABELS,
        may_open=viewer.may("POST", "/incidents"),
    )


@router.post("/incidents")
def open_(
    viewer: Annotated[Viewer, Depends(posted("/incidents"))],
    release: Field = "",
    severity: Field = "",
    summary: Field = "",
    incident_lead: Field = "",
    clinical_lead: Field = "",
    communications_lead: Field = "",
) -> RedirectResponse:
    inc = open_incident(
        viewer.console.governance,
        release,
        actor=viewer.user.name,
        identity=viewer.identity,
        summary=summary.strip(),
        severity=severity,
        roles={
            "incident_lead": incident_lead.strip(),
            "clinical_lead": clinical_lead.strip(),
            "communications_lead": communications_lead.strip(),
        },
    )
    return RedirectResponse(viewer.url(f"/incidents/{inc['id']}"), status_code=303)


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident(
    incident_id: str, viewer: Annotated[Viewer, Depends(page("/incidents/{incident_id}"))]
) -> HTMLResponse:
    registry = viewer.console.registry
    inc = get_incident(viewer.console.governance, incident_id)
    rel = registry.get(inc["version"])
    rollback_targets = [
        r.version
        for r in registry.list(task=rel.task)
        if r.status == "approved" and r.version != (registry.active(rel.task) or rel).version
    ]
    return render(
        viewer,
        "incident.html",
        title=f"Incident {incident_id}",
        inc=inc,
        rollback_targets=rollback_targets,
        step_kinds=STEP_KINDS,
        role_labels=ROLE_LABELS,
        may_act=viewer.may("POST", "/incidents/{incident_id}/step"),
        may_resolve=viewer.may("POST", "/incidents/{incident_id}/resolve"),
    )


@router.post("/incidents/{incident_id}/contain")
def contain_(
    incident_id: str,
    viewer: Annotated[Viewer, Depends(posted("/incidents/{incident_id}/contain"))],
    action: Field = "",
    rollback_to: Field = "",
    why: Field = "",
) -> RedirectResponse:
    contain_incident(
        viewer.console.governance,
        incident_id,
        actor=viewer.user.name,
        identity=viewer.identity,
        action=action,
        why=why.strip(),
        rollback_to=rollback_to or None,
    )
    return RedirectResponse(viewer.url(f"/incidents/{incident_id}"), status_code=303)


@router.post("/incidents/{incident_id}/step")
def step(
    incident_id: str,
    viewer: Annotated[Viewer, Depends(posted("/incidents/{incident_id}/step"))],
    kind: Field = "",
    detail: Field = "",
) -> RedirectResponse:
    add_incident_step(
        viewer.console.governance,
        incident_id,
        actor=viewer.user.name,
        identity=viewer.identity,
        kind=kind,
        detail=detail.strip(),
    )
    return RedirectResponse(viewer.url(f"/incidents/{incident_id}"), status_code=303)


@router.post("/incidents/{incident_id}/resolve")
def resolve_(
    incident_id: str,
    viewer: Annotated[Viewer, Depends(posted("/incidents/{incident_id}/resolve"))],
    root_cause: Field = "",
) -> RedirectResponse:
    resolve_incident(
        viewer.console.governance,
        incident_id,
        actor=viewer.user.name,
        identity=viewer.identity,
        root_cause=root_cause.strip(),
    )
    return RedirectResponse(viewer.url(f"/incidents/{incident_id}"), status_code=303)
