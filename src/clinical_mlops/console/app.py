"""The console app: wiring only — routers per page, templates, static files, error pages.

:func:`create_console_app` is mounted by ``clinical-mlops serve`` at ``/console``;
:func:`standalone_app` wraps it for ``clinical-mlops console`` (same paths, ``/``
redirects to ``/console/``). Library errors become pages with the status and the
library's own message: 401 sends the user to sign in (a post never runs), 403 for a
missing role or an invalid form token, 404 for what does not exist, 409 for a
refused governance act or a decision already recorded, 410 for a case whose patient
was erased (nothing of theirs is shown), 422 for invalid input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from clinical_mlops import __version__
from clinical_mlops.application.services import Services
from clinical_mlops.clock import Clock, SystemClock
from clinical_mlops.console.deps import Console, Viewer, console, render, signed_in
from clinical_mlops.console.formatting import FILTERS
from clinical_mlops.console.oidc import load_sign_in
from clinical_mlops.console.session import DEFAULT_MAX_AGE, SessionManager, session_secret
from clinical_mlops.console.throttle import LoginThrottle
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.errors import (
    AlertNotFound,
    AlertTransitionInvalid,
    BundleInvalid,
    BundleSignatureInvalid,
    CaseAlreadyDecided,
    ClinicalMlopsError,
    EntryNotFound,
    EvidenceInvalid,
    EvidenceNotFound,
    FormTokenInvalid,
    GovernanceError,
    InputInvalid,
    NotAuthenticated,
    NotAuthorised,
    OverrideInvalid,
    PredictionNotFound,
    ReleaseNotFound,
    SessionExpired,
    SubjectErased,
    ValueInvalid,
)
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

__all__ = ["close_console", "create_console_app", "standalone_app"]

HERE = Path(__file__).parent
_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (NotAuthorised, 403, "Not available to your role"),
    (FormTokenInvalid, 403, "Form refused"),
    (PredictionNotFound, 404, "Not found"),
    (SubjectErased, 410, "Patient data erased"),
    (ReleaseNotFound, 404, "Not found"),
    (EvidenceNotFound, 404, "Not found"),
    (EvidenceInvalid, 409, "Evidence does not verify"),
    (EntryNotFound, 404, "Not found"),
    (CaseAlreadyDecided, 409, "Already recorded"),
    (GovernanceError, 409, "Refused"),
    (BundleSignatureInvalid, 409, "Release bundle does not verify"),
    (OverrideInvalid, 422, "Not accepted"),
    (InputInvalid, 422, "Not accepted"),
    (ValueInvalid, 422, "Not accepted"),
    (BundleInvalid, 422, "Not an audit bundle"),
    (AlertNotFound, 404, "Not found"),
    (AlertTransitionInvalid, 409, "Refused"),
)


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(FILTERS)
    templates.env.globals["app_version"] = __version__
    return templates


def create_console_app(
    workspace: Workspace,
    *,
    ledger: Ledger | None = None,
    registry: Registry | None = None,
    clock: Clock | None = None,
    session_max_age: int = DEFAULT_MAX_AGE,
    secure_cookies: bool | None = None,
) -> FastAPI:
    """Return the console for ``workspace``; pass ``ledger``/``registry`` to share open ones.

    ``secure_cookies`` forces the cookie's Secure flag on or off; by default it is
    set whenever the request came over TLS.
    """
    from clinical_mlops.console.pages import ROUTERS

    clock = clock or SystemClock()
    # the console's stores, opened once; a ledger or registry passed in stays its owner's
    services = Services.using(workspace, ledger=ledger, registry=registry, clock=clock)
    ledger, registry, governance = services.ledger, services.registry, services.governance
    owned: list[Any] = [services]
    app = FastAPI(
        title="clinical-mlops console",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = Console(
        workspace=workspace,
        ledger=ledger,
        registry=registry,
        governance=governance,
        users=UserDirectory.open(workspace, clock=clock),
        sessions=SessionManager(session_secret(workspace), max_age=session_max_age, clock=clock),
        clock=clock,
        templates=_templates(),
        secure_cookies=secure_cookies,
        throttle=LoginThrottle(clock),
        owned=owned,
        oidc=load_sign_in(workspace),
    )
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(SessionExpired)
    async def _expired(request: Request, exc: SessionExpired) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        if request.method == "GET":
            from urllib.parse import urlencode

            query = urlencode({"next": request.url.path, "why": str(exc)})
            return RedirectResponse(f"{base}/login?{query}", status_code=303)
        return render(
            None,
            "login.html",
            request=request,
            status=401,
            title="Sign in",
            error=f"{exc}. Nothing was recorded.",
            next=base + "/",
        )

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(request: Request, exc: NotAuthenticated) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(f"{base}/login", status_code=303)

    for error, code, heading in _STATUS:

        def handler(
            request: Request, exc: Exception, code: int = code, heading: str = heading
        ) -> HTMLResponse:
            return _problem(request, exc, code=code, heading=heading)

        app.add_exception_handler(error, handler)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        words = {404: "Not found", 405: "Not possible"}.get(exc.status_code, "Not possible")
        detail = "there is no such page in the console" if exc.status_code == 404 else exc.detail
        return _problem(request, ValueError(detail), code=exc.status_code, heading=words)

    @app.exception_handler(ClinicalMlopsError)
    async def _other(request: Request, exc: ClinicalMlopsError) -> HTMLResponse:
        return _problem(request, exc, code=400, heading="Not possible")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        fields = ", ".join(
            ".".join(str(p) for p in e.get("loc", ())[1:]) or "form" for e in exc.errors()
        )
        return _problem(
            request,
            ValueError(f"the form is missing or has invalid fields: {fields}"),
            code=422,
            heading="Not accepted",
        )

    return app


def _problem(request: Request, exc: Exception, *, code: int, heading: str) -> HTMLResponse:
    """Return the error page: what was refused and why, in the library's words."""
    state = console(request)
    viewer = None
    try:
        user, session = signed_in(request, state)
        viewer = Viewer(user=user, session=session, console=state, request=request)
    except ClinicalMlopsError:
        viewer = None
    back = _back(request) if request.method == "POST" else None
    decision = getattr(exc, "decision", None)
    return render(
        viewer,
        "problem.html",
        request=request,
        status=code,
        title=heading,
        heading=heading,
        message=str(exc),
        kind=type(exc).__name__,
        decision=decision,
        back=back,
        nothing_recorded=request.method == "POST",
    )


_ACTION_SEGMENTS = {"decision", "acknowledge", "review", "contain", "step", "resolve"}


def _back(request: Request) -> str:
    """Return the page a refused post came from (its path without the action segment)."""
    path = request.url.path
    head, _, last = path.rstrip("/").rpartition("/")
    if last in _ACTION_SEGMENTS:
        return head
    if "/audit/" in path:
        return path.split("/audit/")[0] + "/audit"
    return path


def close_console(app: FastAPI) -> None:
    """Close the ledger and registry the console opened itself."""
    for thing in app.state.console.owned:
        thing.close()


def standalone_app(workspace: Workspace, **kwargs: Any) -> FastAPI:
    """Return an app serving the console at ``/console`` (``/`` redirects there)."""
    inner = create_console_app(workspace, **kwargs)
    outer = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @outer.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    outer.mount("/console", inner)
    outer.state.inner = inner
    return outer
