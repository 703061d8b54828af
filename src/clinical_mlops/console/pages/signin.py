"""Sign in, sign out, and the landing page of each role.

A sign-in from a client address that must wait (:mod:`clinical_mlops.console.throttle`)
is answered 429 with ``Retry-After``, its password unchecked; a wrong name or password
is 401 with the same words for both.

With single sign-on (:mod:`clinical_mlops.console.oidc`) the password form is closed:
``/oidc/start`` sends the browser to the provider and ``/oidc/callback`` takes its answer.
An answer with another state, one used before, a refused code or an ID token that does
not verify is refused (403/401) with the reason, and no session begins. Signing out of
such a session also signs out at the provider when it offers RP-initiated logout.
"""

from __future__ import annotations

import contextlib
import html
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clinical_mlops.console.deps import Console, Viewer, console, home_of, page, render
from clinical_mlops.console.oidc import pkce_pair
from clinical_mlops.console.session import COOKIE, FLOW_MAX_AGE
from clinical_mlops.errors import FormTokenInvalid, NotAuthenticated, SignInThrottled

router = APIRouter()

#: a per-browser random value echoed in the sign-in form (login CSRF)
LOGIN_COOKIE = "cm_login"
#: the signed state, nonce and PKCE verifier of a single sign-on in progress
FLOW_COOKIE = "cm_oidc"


def _safe_next(base: str, target: str | None) -> str | None:
    """Return ``target`` when it is a path inside the console (never another site)."""
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return None


def _login_page(
    request: Request,
    state: Console,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    next_: str | None = None,
    name: str = "",
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    response = render(
        None,
        "login.html",
        request=request,
        status=status,
        title="Sign in",
        error=error,
        notice=notice,
        next=next_ or "",
        name=name,
        login_nonce=nonce,
        no_users=state.oidc is None and not state.users.list(),
        oidc=state.oidc,
    )
    base = str(request.scope.get("root_path", "")).rstrip("/")
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=1800,
        path=(base or "") + "/login",
        httponly=True,
        samesite="strict",
        secure=state.cookie_secure(request),
    )
    response.headers.update(headers or {})
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    state: Annotated[Console, Depends(console)],
    next: str | None = None,
    why: str | None = None,
) -> HTMLResponse:
    return _login_page(request, state, notice=why, next_=next)


@router.post("/login")
def login(
    request: Request,
    state: Annotated[Console, Depends(console)],
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    login_nonce: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    if state.oidc is not None:
        return _login_page(
            request,
            state,
            status=403,
            error="This console signs people in through the hospital's identity provider; "
            "local passwords are not accepted",
        )
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not login_nonce or not secrets.compare_digest(cookie, login_nonce):
        return _login_page(
            request,
            state,
            status=403,
            error="The sign-in form was not sent from this page; try again.",
            name=name,
        )
    name = name.strip().lower()
    address = request.client.host if request.client else "unknown"
    assert state.throttle is not None
    try:
        state.throttle.check(name, address)
    except SignInThrottled as exc:
        return _login_page(
            request,
            state,
            status=429,
            error=str(exc),
            next_=next,
            name=name,
            headers={"Retry-After": str(exc.retry_after)},
        )
    try:
        user = state.users.authenticate(name, password)
    except NotAuthenticated as exc:
        state.throttle.failed(name, address)
        return _login_page(request, state, status=401, error=str(exc), next_=next, name=name)
    state.throttle.succeeded(name, address)
    base = str(request.scope.get("root_path", "")).rstrip("/")
    target = _safe_next(base, next) or base + home_of(user)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        state.sessions.issue(user.name, tag=user.session_tag),
        max_age=state.sessions.max_age,
        path=base or "/",
        httponly=True,
        samesite="strict",
        secure=state.cookie_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=(base or "") + "/login")
    return response


@router.get("/oidc/start")
def oidc_start(
    request: Request,
    state: Annotated[Console, Depends(console)],
    next: str | None = None,
) -> Response:
    if state.oidc is None:
        return _login_page(request, state, status=404, error="Single sign-on is not set up.")
    base = str(request.scope.get("root_path", "")).rstrip("/")
    flow_state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    try:
        target = state.oidc.authorization_url(
            state=flow_state, nonce=nonce, code_challenge=challenge
        )
    except NotAuthenticated as exc:
        return _login_page(request, state, status=503, error=str(exc))
    flow = {"state": flow_state, "nonce": nonce, "verifier": verifier}
    flow["next"] = _safe_next(base, next) or ""
    response = RedirectResponse(target, status_code=303)
    # Lax, not Strict: the provider's redirect back is a cross-site navigation
    response.set_cookie(
        FLOW_COOKIE,
        state.sessions.sign_flow(flow),
        max_age=FLOW_MAX_AGE,
        path=(base or "") + "/oidc",
        httponly=True,
        samesite="lax",
        secure=state.cookie_secure(request),
    )
    return response


@router.get("/oidc/callback")
def oidc_callback(
    request: Request,
    state: Annotated[Console, Depends(console)],
    code: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    if state.oidc is None:
        return _login_page(request, state, status=404, error="Single sign-on is not set up.")
    base = str(request.scope.get("root_path", "")).rstrip("/")
    try:
        flow = state.sessions.open_flow(
            request.cookies.get(FLOW_COOKIE), state=request.query_params.get("state")
        )
    except FormTokenInvalid as exc:
        return _login_page(request, state, status=403, error=str(exc))
    if error or not code:
        why = error_description or error or "no authorization code"
        return _login_page(
            request, state, status=401, error=f"The identity provider did not sign you in: {why}"
        )
    try:
        who = state.oidc.finish(code=code, code_verifier=flow["verifier"], nonce=flow["nonce"])
    except NotAuthenticated as exc:
        return _login_page(request, state, status=401, error=f"{exc}. Nothing was recorded")
    if not who.roles:
        return _login_page(
            request,
            state,
            status=403,
            error=f"{who.person} signed in at the identity provider, but no console role is "
            "mapped from their roles or groups; ask the administrator",
        )
    from clinical_mlops.console.users import ConsoleUser

    target = flow.get("next") or base + home_of(ConsoleUser(name=who.person, roles=who.roles))
    # a page of the console's own, not a redirect: the session cookie is SameSite=Strict and
    # would not be sent on a redirect chain that began at the provider
    response = _continue_page(target, "Signed in.")
    response.set_cookie(
        COOKIE,
        state.sessions.issue(
            who.person, tag="", issuer=who.issuer, subject=who.subject, roles=who.roles
        ),
        max_age=state.sessions.max_age,
        path=base or "/",
        httponly=True,
        samesite="strict",
        secure=state.cookie_secure(request),
    )
    response.delete_cookie(FLOW_COOKIE, path=(base or "") + "/oidc")
    return response


@router.post("/logout")
def logout(
    request: Request,
    state: Annotated[Console, Depends(console)],
) -> Response:
    from clinical_mlops.console.deps import signed_in
    from clinical_mlops.errors import SessionExpired

    base = str(request.scope.get("root_path", "")).rstrip("/")
    target = f"{base}/login?why=You+have+signed+out."
    try:
        _, session = signed_in(request, state)
        state.sessions.end(session)
        if session.issuer is not None and state.oidc is not None:
            # an unreachable provider: the console session has ended anyway
            with contextlib.suppress(NotAuthenticated):
                target = state.oidc.logout_url() or target
    except SessionExpired:
        pass
    response: Response
    if target.startswith(base + "/login"):
        response = RedirectResponse(target, status_code=303)
    else:
        # the provider's end-session page: reached from a page, as the console's forms may
        # post only to the console itself (Content-Security-Policy form-action 'self')
        response = _continue_page(target, "Signed out of the console; signing out at the provider.")
    response.delete_cookie(COOKIE, path=base or "/")
    return response


def _continue_page(target: str, words: str) -> HTMLResponse:
    """Return a page that goes on to ``target`` at once (a link for browsers that do not)."""
    return HTMLResponse(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={html.escape(target)}">'
        f"<title>{html.escape(words)}</title></head><body><p>{html.escape(words)} "
        f'<a href="{html.escape(target)}">Continue</a></p></body></html>',
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@router.get("/")
def home(viewer: Annotated[Viewer, Depends(page("/"))]) -> Response:
    return RedirectResponse(viewer.url(home_of(viewer.user)), status_code=303)
