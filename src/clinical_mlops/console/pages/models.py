"""Model status: the active release and rollout per site; suspend, resume and roll back,
each behind a confirmation page (role-gated, with a reason and the release's fingerprint)."""

# No ``from __future__ import annotations`` here: the routes below are made in a loop and
# FastAPI must see their dependency annotations as objects, not as strings to resolve.
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from clinical_mlops.application import governance as act
from clinical_mlops.application.dossier import release_fingerprint, service_status
from clinical_mlops.application.releases import model_card as model_card_as_of_now
from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import InputInvalid

router = APIRouter()

#: action -> (library call, heading, what happens, past tense)
ACTIONS: dict[str, tuple[Callable[..., Any], str, str, str]] = {
    "suspend": (
        act.suspend,
        "Suspend",
        "The model stops being used at every site where this release runs: requests get the "
        "clinical baseline score, marked as a fallback, instead of a model prediction. "
        "Resuming needs the compliance role.",
        "suspended",
    ),
    "resume": (
        act.resume,
        "Resume",
        "The release goes back to the status it was suspended from and is used again where "
        "its rollout says.",
        "resumed",
    ),
    "rollback": (
        act.rollback,
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
        tasks=service_status(viewer.console.governance),
        done=done,
    )


@router.get("/models/{version}/card", response_class=HTMLResponse)
def model_card(
    version: str, viewer: Annotated[Viewer, Depends(page("/models/{version}/card"))]
) -> HTMLResponse:
    # The signed card, opened by its status and approvals as of this request.
    return HTMLResponse(
        model_card_as_of_now(viewer.console.governance, version, fmt="html"),
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
        fingerprint=release_fingerprint(viewer.console.governance, version),
    )


def _add_routes(action: str) -> None:
    """Add the confirmation page (GET) and the act (POST) of ``action`` to the router."""
    route = f"/models/{{version}}/{action}"

    def confirm_page(version: str, viewer: Annotated[Viewer, Depends(page(route))]) -> HTMLResponse:
        return _confirm(viewer, version, action)

    def act(
        version: str,
        viewer: Annotated[Viewer, Depends(posted(route))],
        why: Annotated[str, Form()] = "",
        confirm: Annotated[str, Form()] = "",
        fingerprint: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        if confirm != "yes":
            raise InputInvalid([("confirm", "tick the box to confirm; nothing was changed")])
        call, _, _, past = ACTIONS[action]
        call(
            viewer.console.governance,
            version,
            fingerprint=fingerprint,
            actor=viewer.user.name,
            why=why,
            identity=viewer.identity,
        )
        done = f"{past.replace(' ', '+')}+{version}"
        return RedirectResponse(viewer.url(f"/models?done={done}"), status_code=303)

    router.add_api_route(
        route, confirm_page, methods=["GET"], response_class=HTMLResponse, name=f"{action}_page"
    )
    router.add_api_route(route, act, methods=["POST"], name=action)


for _action in ACTIONS:
    _add_routes(_action)
