"""What every console route needs: the console state, the signed-in user, role checks,
one-time form tokens, and rendering a page.

:data:`PAGE_ROLES` lists every route with the roles that may use it; a route that
is not listed cannot be declared (``page`` and ``posted`` look it up), and a test
checks the table against the app's routes for every role. A clinician has no
route to approvals, suspension, rollback, reviews, incidents or the audit search.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from clinical_mlops.clock import Clock
from clinical_mlops.console.oidc import ConsoleOidc
from clinical_mlops.console.session import COOKIE, Session, SessionManager
from clinical_mlops.console.throttle import LoginThrottle
from clinical_mlops.console.users import ConsoleUser, UserDirectory
from clinical_mlops.errors import NotAuthenticated, NotAuthorised, SessionExpired
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

__all__ = [
    "NAV",
    "PAGE_ROLES",
    "PUBLIC_ROUTES",
    "Console",
    "Viewer",
    "console",
    "home_of",
    "page",
    "posted",
    "render",
    "signed_in",
]

PEOPLE = ("clinician", "reviewer", "ml_engineer", "compliance", "auditor")
CLINICAL = ("clinician", "reviewer")
GOVERN = ("reviewer", "compliance", "ml_engineer")
#: (method, route) -> console roles allowed. Every route of the console is listed here.
PAGE_ROLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/"): PEOPLE,
    ("GET", "/queue"): CLINICAL,
    ("GET", "/queue/next"): CLINICAL,
    ("GET", "/cases/{seq}"): CLINICAL,
    ("POST", "/cases/{seq}/decision"): CLINICAL,
    ("GET", "/alerts"): (*GOVERN, "clinician"),
    ("GET", "/alerts/{alert_id}"): (*GOVERN, "clinician"),
    ("POST", "/alerts/{alert_id}/acknowledge"): GOVERN,
    ("POST", "/alerts/{alert_id}/review"): ("reviewer", "compliance"),
    ("GET", "/releases"): GOVERN,
    ("GET", "/releases/{version}"): GOVERN,
    ("POST", "/releases/{version}/decision"): GOVERN,
    ("POST", "/releases/{version}/risks"): ("reviewer", "compliance"),
    ("GET", "/releases/{version}/validations/{validation_id}"): GOVERN,
    ("GET", "/releases/{version}/evidence"): (*GOVERN, "auditor"),
    ("POST", "/releases/{version}/evidence"): ("compliance", "ml_engineer"),
    ("GET", "/releases/{version}/evidence/files/{name}"): (*GOVERN, "auditor"),
    ("GET", "/models"): PEOPLE,
    ("GET", "/models/{version}/card"): PEOPLE,
    ("GET", "/models/{version}/suspend"): GOVERN,
    ("POST", "/models/{version}/suspend"): GOVERN,
    ("GET", "/models/{version}/resume"): ("compliance",),
    ("POST", "/models/{version}/resume"): ("compliance",),
    ("GET", "/models/{version}/rollback"): ("reviewer", "ml_engineer"),
    ("POST", "/models/{version}/rollback"): ("reviewer", "ml_engineer"),
    ("GET", "/reviews"): ("reviewer", "compliance"),
    ("GET", "/reviews/{version}"): ("reviewer", "compliance"),
    ("POST", "/reviews/{version}"): ("reviewer", "compliance"),
    ("GET", "/incidents"): (*GOVERN, "auditor"),
    ("POST", "/incidents"): GOVERN,
    ("GET", "/incidents/{incident_id}"): (*GOVERN, "auditor"),
    ("POST", "/incidents/{incident_id}/contain"): GOVERN,
    ("POST", "/incidents/{incident_id}/step"): GOVERN,
    ("POST", "/incidents/{incident_id}/resolve"): ("reviewer", "compliance"),
    ("GET", "/audit"): ("auditor", "compliance"),
    ("GET", "/audit/entries/{seq}"): ("auditor", "compliance"),
    ("POST", "/audit/verify"): ("auditor", "compliance"),
    ("POST", "/audit/export"): ("auditor", "compliance"),
    ("POST", "/audit/verify-bundle"): ("auditor", "compliance"),
}
#: routes anyone may use (signing in and out)
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/oidc/start"),
        ("GET", "/oidc/callback"),
    }
)
#: (label, route) of the navigation, shown to the roles that may open the route
NAV: tuple[tuple[str, str], ...] = (
    ("Escalation queue", "/queue"),
    ("Alerts", "/alerts"),
    ("Releases", "/releases"),
    ("Model status", "/models"),
    ("Reviews", "/reviews"),
    ("Incidents", "/incidents"),
    ("Audit", "/audit"),
)
#: the page each role lands on after signing in (first match in this order)
HOME: tuple[tuple[str, str], ...] = (
    ("clinician", "/queue"),
    ("reviewer", "/releases"),
    ("compliance", "/releases"),
    ("ml_engineer", "/models"),
    ("auditor", "/audit"),
)


@dataclass
class Console:
    """The state of one console app."""

    workspace: Workspace
    ledger: Ledger
    registry: Registry
    governance: Governance
    users: UserDirectory
    sessions: SessionManager
    clock: Clock
    templates: Jinja2Templates
    secure_cookies: bool | None = None
    throttle: LoginThrottle | None = None
    owned: list[Any] = field(default_factory=list)
    #: the hospital's OpenID provider, when the console signs people in through it
    oidc: ConsoleOidc | None = None

    def cookie_secure(self, request: Request) -> bool:
        """Return whether cookies get the Secure flag (always over TLS, or when forced)."""
        if self.secure_cookies is not None:
            return self.secure_cookies
        return request.url.scheme == "https"


def console(request: Request) -> Console:
    """Return the console state of the app handling ``request``."""
    state: Console = request.app.state.console
    return state


@dataclass
class Viewer:
    """The signed-in user making this request, with what a page needs to render."""

    user: ConsoleUser
    session: Session
    console: Console
    request: Request

    @property
    def base(self) -> str:
        """Return the path the console is mounted at (``/console``, or '' standalone)."""
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    def may(self, method: str, route: str) -> bool:
        """Return whether the user may use ``route``."""
        return self.user.has(*PAGE_ROLES[(method, route)])

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def identity(self) -> VerifiedIdentity:
        """Return who this session proved to be: the provider's account, or the local user.

        A single sign-on session names the OpenID provider's issuer and subject (``sub``)
        and the person its declared claim names; a local session names the console user.
        """
        if self.session.issuer is not None and self.session.subject is not None:
            return VerifiedIdentity(
                person=self.user.name,
                method="oidc",
                subject=self.session.subject,
                issuer=self.session.issuer,
            )
        return VerifiedIdentity(
            person=self.user.name, method="console-password", subject=self.user.name
        )


def signed_in(request: Request, state: Console) -> tuple[ConsoleUser, Session]:
    """Return the user and session of ``request``; ``SessionExpired`` when there is none.

    The user is read from the user file on every request, so a password changed or a
    user removed by another process (``clinical-mlops console user ...``) ends the
    session here at once.
    """
    session = state.sessions.load(request.cookies.get(COOKIE))
    if session.issuer is not None:
        # a single sign-on session: the provider vouched for the person and roles at sign-in
        if state.oidc is None or state.oidc.issuer != session.issuer:
            raise SessionExpired(
                "the console no longer signs people in through the provider that began this "
                "session; sign in again"
            )
        return ConsoleUser(name=session.user, roles=session.roles), session
    if state.oidc is not None:
        raise SessionExpired("this console signs people in through the hospital's provider")
    try:
        user = state.users.get(session.user)
    except NotAuthenticated:
        raise SessionExpired(f"the user {session.user!r} no longer exists; sign in again") from None
    if not hmac.compare_digest(session.tag, user.session_tag):
        raise SessionExpired(
            f"the password of {user.name!r} was changed since this session began; sign in again"
        )
    return user, session


def _authorised(user: ConsoleUser, method: str, route: str) -> None:
    allowed = PAGE_ROLES[(method, route)]
    if not user.has(*allowed):
        raise NotAuthorised(
            f"this page needs one of the roles {', '.join(allowed)}; {user.name} holds "
            f"{', '.join(user.roles) or 'none'}"
        )


def page(route: str) -> Callable[..., Viewer]:
    """Return a dependency: the signed-in user, allowed to GET ``route``."""
    PAGE_ROLES[("GET", route)]  # a KeyError here is a route missing from the table

    def check(request: Request, state: Annotated[Console, Depends(console)]) -> Viewer:
        user, session = signed_in(request, state)
        _authorised(user, "GET", route)
        return Viewer(user=user, session=session, console=state, request=request)

    return check


def posted(route: str) -> Callable[..., Viewer]:
    """Return a dependency: the signed-in user, allowed to POST ``route``, with a valid form.

    The one-time form token is checked after the role, before the route runs.
    """
    PAGE_ROLES[("POST", route)]

    def check(
        request: Request,
        state: Annotated[Console, Depends(console)],
        csrf_token: Annotated[str | None, Form()] = None,
    ) -> Viewer:
        user, session = signed_in(request, state)
        _authorised(user, "POST", route)
        state.sessions.check_form(session, csrf_token)
        return Viewer(user=user, session=session, console=state, request=request)

    return check


def home_of(user: ConsoleUser) -> str:
    """Return the route a user lands on after signing in."""
    return next((route for role, route in HOME if role in user.roles), "/models")


def render(
    viewer: Viewer | None,
    template: str,
    *,
    request: Request | None = None,
    status: int = 200,
    title: str = "",
    **context: Any,
) -> HTMLResponse:
    """Return ``template`` rendered for ``viewer`` (or an anonymous ``request``).

    Templates get the user, the navigation they may use, ``url(path)`` for links
    under the mount point and ``csrf()``, a hidden input with a fresh one-time
    form token.
    """
    req = viewer.request if viewer is not None else request
    assert req is not None
    state = console(req)
    base = str(req.scope.get("root_path", "")).rstrip("/")

    def csrf() -> Any:
        from markupsafe import Markup

        if viewer is None:
            return Markup("")
        token = state.sessions.form_token(viewer.session)
        return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)

    nav = []
    if viewer is not None:
        nav = [
            (label, base + route, req.url.path.startswith(base + route))
            for label, route in NAV
            if viewer.may("GET", route)
        ]
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    }
    return state.templates.TemplateResponse(
        req,
        template,
        {
            "viewer": viewer,
            "user": viewer.user if viewer else None,
            "nav": nav,
            "base": base,
            "url": lambda path: base + path,
            "quote": lambda s: quote(str(s), safe=""),
            "csrf": csrf,
            "title": title,
            "now": state.clock.now(),
        }
        | context,
        status_code=status,
        headers=headers,
    )
