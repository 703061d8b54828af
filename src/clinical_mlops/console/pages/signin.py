"""Sign in, sign out, and the landing page of each role.

A sign-in from a client address that must wait (:mod:`clinical_mlops.console.throttle`)
is answered 429 with ``Retry-After``, its password unchecked; a wrong name or password
is 401 with the same words for both.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clinical_mlops.console.deps import Console, Viewer, console, home_of, page, render
from clinical_mlops.console.session import COOKIE
from clinical_mlops.errors import NotAuthenticated, SignInThrottled

router = APIRouter()

#: a per-browser random value echoed in the sign-in form (login CSRF)
LOGIN_COOKIE = "cm_login"


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
        no_users=not state.users.list(),
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


@router.post("/logout")
def logout(
    request: Request,
    state: Annotated[Console, Depends(console)],
) -> Response:
    from clinical_mlops.console.deps import signed_in
    from clinical_mlops.errors import SessionExpired

    base = str(request.scope.get("root_path", "")).rstrip("/")
    try:
        _, session = signed_in(request, state)
        state.sessions.end(session)
    except SessionExpired:
        pass
    response = RedirectResponse(f"{base}/login?why=You+have+signed+out.", status_code=303)
    response.delete_cookie(COOKIE, path=base or "/")
    return response


@router.get("/")
def home(viewer: Annotated[Viewer, Depends(page("/"))]) -> Response:
    return RedirectResponse(viewer.url(home_of(viewer.user)), status_code=303)
