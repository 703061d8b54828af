"""Release approval (R-L3 gate 4): the dossier of a release and a decision with a comment;
the risks it carries out of validation and their acknowledgement (gate 3).

The forms carry the dossier's fingerprint; a decision or an acknowledgement on a
release that changed since the page was loaded is refused (``ReleaseChanged``) and
nothing is recorded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application import governance as act
from clinical_mlops.application.dossier import PENDING_DECISION, release_dossier
from clinical_mlops.application.validation import external_validation_report
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import InputInvalid, NotAuthorised
from clinical_mlops.governance.risks import ACKNOWLEDGING_ROLES
from clinical_mlops.vocabulary import GATE_LABELS, Gate

router = APIRouter()


@router.get("/releases", response_class=HTMLResponse)
def releases(viewer: Annotated[Viewer, Depends(page("/releases"))]) -> HTMLResponse:
    registry = viewer.console.registry
    listed = list(reversed(registry.list()))
    pending = [r for r in listed if r.status in PENDING_DECISION]
    others = [r for r in listed if r.status not in PENDING_DECISION]
    return render(
        viewer,
        "releases.html",
        title="Releases",
        pending=pending,
        others=others,
        active={r.task: (a.version if (a := registry.active(r.task)) else None) for r in listed},
    )


@router.get("/releases/{version}", response_class=HTMLResponse)
def release(
    version: str,
    viewer: Annotated[Viewer, Depends(page("/releases/{version}"))],
    recorded: str | None = None,
) -> HTMLResponse:
    dossier = release_dossier(viewer.console.governance, version)
    decided = {a["person"] for a in dossier["approvals"]}
    return render(
        viewer,
        "release.html",
        title=f"Release {version}",
        d=dossier,
        version=version,
        recorded=recorded,
        roles=viewer.user.governance_roles,
        gate_labels=GATE_LABELS,
        gate_approvals=Gate.APPROVALS,
        already_decided=viewer.user.name in decided,
        acknowledging_roles=[r for r in viewer.user.governance_roles if r in ACKNOWLEDGING_ROLES],
    )


@router.get("/releases/{version}/validations/{validation_id}", response_class=HTMLResponse)
def external_report(
    version: str,
    validation_id: str,
    viewer: Annotated[Viewer, Depends(page("/releases/{version}/validations/{validation_id}"))],
) -> HTMLResponse:
    # The stored report, checked against the hash recorded with the validation.
    return HTMLResponse(
        external_validation_report(viewer.console.governance, version, validation_id),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.post("/releases/{version}/decision")
def decide(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/releases/{version}/decision"))],
    decision: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    fingerprint: Annotated[str, Form()] = "",
) -> RedirectResponse:
    if decision not in ("approve", "reject"):
        raise InputInvalid([("decision", "expected approve or reject")])
    if role not in viewer.user.governance_roles:
        raise NotAuthorised(
            f"{viewer.user.name} may decide as {', '.join(viewer.user.governance_roles) or 'no role'}"
            f", not as {role or 'no role'}"
        )
    chosen: Literal["approve", "reject"] = "approve" if decision == "approve" else "reject"
    (act.approve if chosen == "approve" else act.reject)(
        viewer.console.governance,
        version,
        fingerprint=fingerprint,
        person=viewer.user.name,
        role=role,
        why=comment,
        identity=viewer.identity,
    )
    return RedirectResponse(viewer.url(f"/releases/{version}?recorded={chosen}"), status_code=303)


@router.post("/releases/{version}/risks")
def acknowledge(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/releases/{version}/risks"))],
    risk: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    fingerprint: Annotated[str, Form()] = "",
) -> RedirectResponse:
    if role not in viewer.user.governance_roles:
        raise NotAuthorised(
            f"{viewer.user.name} may act as {', '.join(viewer.user.governance_roles) or 'no role'}"
            f", not as {role or 'no role'}"
        )
    act.acknowledge_risk(
        viewer.console.governance,
        version,
        risk=risk,
        actor=viewer.user.name,
        identity=viewer.identity,
        reason=reason,
        role=role,
        fingerprint=fingerprint,
    )
    return RedirectResponse(
        viewer.url(f"/releases/{version}?recorded=acknowledgement"), status_code=303
    )
