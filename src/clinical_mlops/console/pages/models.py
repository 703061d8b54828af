"""Model status: the active release and rollout per site; suspend, resume and roll back,
each behind a confirmation page (role-gated, with a reason and the release's fingerprint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import InputInvalid
from clinical_mlops.governance.dossier import (
    release_fingerprint,
    resume_release,
    rollback_release,
    service_status,
    suspend_release,
)

router = APIRouter()

#: action -> (library call, heading, what happens, past tense)
ACTIONS: dict[str, tuple[Callable[..., Any], str, str, str]] = {
    "suspend": (
        suspend_release,
        "Suspend",
        "The model stops being used at every site where this release runs: requests get the "
        "clinical baseline score, marked as a fallback, instead of a model prediction. "
        "Resuming needs the compliance role.",
        "suspended",
    ),
    "resume": (
        resume_release,
        "Resume",
        "The release goes back to the status it was suspended from and is used again where "
        "its rollout says.",
        "resumed",
    ),
    "rollback": (
        rollback_release,
        "Roll back to",
        "This earlier approved release becomes the active release at every site in full mode; "
        "the release it replaces keeps its status but stops being served.",
        "rolled back to",
    ),
}


@router.get("/models", response_class=HTMLResponse)
def models(
    viewer: Annotated[Viewer, Depends(page("/models"))], done: str | None = None
) -> HTMLResponse:
    return render(
        viewer,
        "models.html",
        title="Model status",
        tasks=service_status(viewer.console.registry),
        done=done,
    )


@router.get("/models/{version}/card", response_class=HTMLResponse)
def model_card(
    version: str, viewer: Annotated[Viewer, Depends(page("/models/{version}/card"))]
) -> HTMLResponse:
    bundle = viewer.console.registry.bundle(version)
    return HTMLResponse(
        (bundle.path / "model_card.html").read_text(encoding="utf-8"),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _confirm(viewer: Viewer, version: str, action: str) -> HTMLResponse:
    registry = viewer.console.registry
    rel = registry.get(version)
    _, heading, effect, _ = ACTIONS[action]
    manifest = registry.deployment_manifest(rel.task)
    return render(
        viewer,
        "confirm.html",
        title=f"{heading} {version}",
        action=action,
        heading=heading,
        effect=effect,
        release=rel,
        manifest=manifest,
        fingerprint=release_fingerprint(registry, version),
    )


def _act(
    viewer: Viewer, version: str, action: str, why: str, confirm: str, fingerprint: str
) -> RedirectResponse:
    if confirm != "yes":
        raise InputInvalid([("confirm", "tick the box to confirm; nothing was changed")])
    if not why.strip():
        raise InputInvalid([("why", "say why; the reason is recorded in the audit ledger")])
    call, _, _, past = ACTIONS[action]
    call(
        viewer.console.registry,
        version,
        fingerprint=fingerprint,
        actor=viewer.user.name,
        why=why.strip(),
    )
    return RedirectResponse(
        viewer.url(f"/models?done={past.replace(' ', '+')}+{version}"), status_code=303
    )


Why = Annotated[str, Form()]


@router.get("/models/{version}/suspend", response_class=HTMLResponse)
def suspend_page(
    version: str, viewer: Annotated[Viewer, Depends(page("/models/{version}/suspend"))]
) -> HTMLResponse:
    return _confirm(viewer, version, "suspend")


@router.post("/models/{version}/suspend")
def suspend(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/models/{version}/suspend"))],
    why: Why = "",
    confirm: Why = "",
    fingerprint: Why = "",
) -> RedirectResponse:
    return _act(viewer, version, "suspend", why, confirm, fingerprint)


@router.get("/models/{version}/resume", response_class=HTMLResponse)
def resume_page(
    version: str, viewer: Annotated[Viewer, Depends(page("/models/{version}/resume"))]
) -> HTMLResponse:
    return _confirm(viewer, version, "resume")


@router.post("/models/{version}/resume")
def resume(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/models/{version}/resume"))],
    why: Why = "",
    confirm: Why = "",
    fingerprint: Why = "",
) -> RedirectResponse:
    return _act(viewer, version, "resume", why, confirm, fingerprint)


@router.get("/models/{version}/rollback", response_class=HTMLResponse)
def rollback_page(
    version: str, viewer: Annotated[Viewer, Depends(page("/models/{version}/rollback"))]
) -> HTMLResponse:
    return _confirm(viewer, version, "rollback")


@router.post("/models/{version}/rollback")
def rollback(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/models/{version}/rollback"))],
    why: Why = "",
    confirm: Why = "",
    fingerprint: Why = "",
) -> RedirectResponse:
    return _act(viewer, version, "rollback", why, confirm, fingerprint)
