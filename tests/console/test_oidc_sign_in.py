"""Single sign-on: the console signs people in through a real OpenID provider on loopback.

A reviewer signs in at the provider's own login page in headless Chromium and approves a
release; the ``approval`` ledger entry names the provider's subject and issuer, method
``oidc``. Answers that must not sign anyone in: a callback with another state, an
authorization code used a second time, an ID token whose nonce is not this sign-in's; each
is refused with the reason, no session begins and nothing is recorded. The password form is
closed while single sign-on is on.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from console_world import NOW, PASSWORD, REVIEWER, LiveConsole, ledger_size

from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import NotAuthenticated
from clinical_mlops.ledger import Ledger
from oidc_provider import ACCOUNTS, OidcProvider

pytestmark = pytest.mark.slow

CLIENT_ID = "clinical-mlops-console"
SECRET_ENV = "CLINICAL_MLOPS_TEST_OIDC_SECRET"
GROUP_ROLES = {"icu-clinical-governance": ["reviewer"], "icu-clinicians": ["clinician"]}


@pytest.fixture(scope="module")
def sso(world: dict[str, Any], oidc_provider: OidcProvider) -> Iterator[dict[str, Any]]:
    """The console of the world, signing in through the provider; its URL and the provider."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    secret = secrets.token_urlsafe(32)
    oidc_provider.add_client(
        {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "redirect_uris": [f"{url}/console/oidc/callback"],
            "post_logout_redirect_uris": [f"{url}/console/login"],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
        }
    )
    settings = {
        "method": "oidc",
        "oidc": {
            "issuer": oidc_provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret_env": SECRET_ENV,
            "redirect_url": f"{url}/console/oidc/callback",
            "post_logout_redirect_url": f"{url}/console/login",
            "person_claim": "preferred_username",
            "group_roles": GROUP_ROLES,
        },
    }
    path = world["ws"].root / "console" / "sign-in.json"
    path.write_text(json.dumps(settings), encoding="utf-8")
    os.environ[SECRET_ENV] = secret
    try:
        with LiveConsole(world["ws"], clock=FixedClock(NOW), sock=sock) as server:
            yield {"url": url, "provider": oidc_provider, "server": server}
    finally:
        os.environ.pop(SECRET_ENV, None)
        sock.close()
    assert secret not in path.read_text(encoding="utf-8")


def _approval_identities(ws: Any, version: str) -> list[dict[str, Any]]:
    with Ledger.open(ws) as led:
        entries = [led.read(s) for s in range(led.size()) if led.entry(s).type == "approval"]
    return [e.payload.get("identity") for e in entries if e.payload["release"] == version]


def test_a_reviewer_signs_in_at_the_provider_and_approves_a_release(
    sso: dict[str, Any], world: dict[str, Any], browser: Any
) -> None:
    url, provider = sso["url"], sso["provider"]
    sub, password, _ = ACCOUNTS[REVIEWER]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto(f"{url}/console/login")
        page.get_by_role("link", name="Sign in with the hospital's identity provider").click()
        page.wait_for_url(f"{provider.issuer}/interaction/**")
        page.get_by_label("Username").fill(REVIEWER)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{url}/console/releases")
        page.get_by_role("link", name=world["v2"]).first.click()
        page.wait_for_url(f"**/console/releases/{world['v2']}")
        page.get_by_label("Comment (required").fill("Signed in through the hospital provider.")
        page.get_by_role("button", name="Approve").click()
        page.wait_for_url("**?recorded=approve")
        assert page.get_by_role("status").filter(has_text="was recorded").is_visible()

        identities = _approval_identities(world["ws"], world["v2"])
        assert identities[-1] == {
            "person": REVIEWER,
            "method": "oidc",
            "subject": sub,
            "issuer": provider.issuer,
        }

        # signing out ends the console session and goes on to the provider's end-session page
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{provider.issuer}/session/end**")
        page.goto(f"{url}/console/releases")
        assert "/console/login" in page.url
    finally:
        context.close()


# -- answers that must not sign anyone in --------------------------------------------------------


def _code_answer(url: str, client: httpx.Client, name: str) -> str:
    """Start a sign-in on ``client``, sign ``name`` in at the provider; return the callback URL."""
    r = client.get(f"{url}/console/oidc/start", follow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    for _ in range(10):
        if location.startswith(f"{url}/console/oidc/callback"):
            return location
        r = client.get(location, follow_redirects=False)
        if r.status_code == 200 and "Hospital sign-in" in r.text:
            action = re.search(r'action="([^"]+)"', r.text)
            assert action
            issuer = f"{urlsplit(location).scheme}://{urlsplit(location).netloc}"
            r = client.post(
                issuer + action.group(1),
                data={"username": name, "password": ACCOUNTS[name][1]},
                follow_redirects=False,
            )
        assert r.status_code in (302, 303), r.text
        location = r.headers["location"]
        if location.startswith("/"):
            location = f"{urlsplit(str(r.url)).scheme}://{urlsplit(str(r.url)).netloc}{location}"
    raise AssertionError("the provider never answered to the callback")


def _signed_out(url: str, client: httpx.Client) -> bool:
    r = client.get(f"{url}/console/releases", follow_redirects=False)
    return r.status_code == 303 and "/console/login" in r.headers["location"]


def test_an_answer_with_another_state_is_refused(
    sso: dict[str, Any], world: dict[str, Any]
) -> None:
    url = sso["url"]
    before = ledger_size(world["ws"])
    with httpx.Client(timeout=30) as client:
        answer = _code_answer(url, client, REVIEWER)
        query = parse_qs(urlsplit(answer).query)
        forged = {k: v[0] for k, v in query.items()} | {"state": secrets.token_urlsafe(24)}
        r = client.get(f"{url}/console/oidc/callback?{urlencode(forged)}")
        assert r.status_code == 403
        assert "does not carry this sign-in" in r.text
        assert "cm_console" not in r.headers.get("set-cookie", "")
        assert _signed_out(url, client)
    assert ledger_size(world["ws"]) == before


def test_a_code_used_a_second_time_is_refused(sso: dict[str, Any], world: dict[str, Any]) -> None:
    url = sso["url"]
    before = ledger_size(world["ws"])
    with httpx.Client(timeout=30) as first:
        answer = _code_answer(url, first, REVIEWER)
        r = first.get(answer)
        assert r.status_code == 200 and "Signed in" in r.text
        assert not _signed_out(url, first)
        # the same answer again: its state was used
        r = first.get(answer)
        assert r.status_code == 403
        assert "start again" in r.text
    with httpx.Client(timeout=30) as second:
        # a fresh sign-in of its own, answered with the old code: the provider refuses it
        fresh = parse_qs(urlsplit(_code_answer(url, second, REVIEWER)).query)
        old = parse_qs(urlsplit(answer).query)
        replay = {k: v[0] for k, v in fresh.items()} | {"code": old["code"][0]}
        r = second.get(f"{url}/console/oidc/callback?{urlencode(replay)}")
        assert r.status_code == 401
        assert "refused the sign-in code (invalid_grant)" in r.text, re.findall(
            r'role="alert">([^<]*)', r.text
        )
        assert "cm_console" not in r.headers.get("set-cookie", "")
        assert _signed_out(url, second)
    assert ledger_size(world["ws"]) == before


def test_an_id_token_with_another_nonce_is_refused(sso: dict[str, Any]) -> None:
    url = sso["url"]
    oidc = sso["server"].app.state.inner.state.console.oidc
    with httpx.Client(timeout=30) as client:
        answer = _code_answer(url, client, REVIEWER)
        flow_cookie = client.cookies.get("cm_oidc")
        assert flow_cookie
    # the flow cookie is signed, not secret: the browser may read its own PKCE verifier
    from itsdangerous import URLSafeTimedSerializer

    flow = URLSafeTimedSerializer(b"x" * 32).loads_unsafe(flow_cookie)[1]
    code = parse_qs(urlsplit(answer).query)["code"][0]
    with pytest.raises(NotAuthenticated, match="nonce does not match"):
        oidc.finish(code=code, code_verifier=flow["verifier"], nonce="another sign-in's nonce")


def test_the_password_form_is_closed_under_single_sign_on(sso: dict[str, Any]) -> None:
    url = sso["url"]
    with httpx.Client(timeout=30) as client:
        page = client.get(f"{url}/console/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', page.text)
        assert "Sign in with the hospital" in page.text and nonce is None
        client.cookies.set("cm_login", "x")
        r = client.post(
            f"{url}/console/login",
            data={"name": REVIEWER, "password": PASSWORD, "login_nonce": "x"},
            follow_redirects=False,
        )
        assert r.status_code == 403
        assert "local passwords are not accepted" in r.text
        assert _signed_out(url, client)
