"""API bearer tokens verified with the hospital OpenID provider's published keys (JWKS).

Against a real provider on loopback (tests/oidc_provider.py): a token the provider issues
passes and its caller is a verified identity (subject and issuer); an expired token, one from
another issuer, one for another audience, one whose key id the provider does not publish and
an unsigned one (``alg: none``) are each refused 401 with the reason; after the provider
rotates its signing key, a token signed with the new key is accepted.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from clinical_mlops.errors import NotAuthenticated
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.oidc import OidcIssuer
from oidc_provider import API_AUDIENCE, OidcProvider, rsa_jwk

SECRET = secrets.token_urlsafe(32)
GROUPS = {"icu-ml-engineering": ["ml_engineer"], "icu-audit": ["auditor"]}


@pytest.fixture(scope="module")
def provider(oidc_provider: OidcProvider) -> OidcProvider:
    oidc_provider.add_client(
        {
            "client_id": "ward-dashboard",
            "client_secret": SECRET,
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
            "groups": ["icu-audit", "visitors"],
        }
    )
    return oidc_provider


def _config(provider: OidcProvider, tmp_path: Path) -> AuthConfig:
    mapping = tmp_path / "claims.json"
    mapping.write_text(json.dumps({"person_claim": "sub", "group_roles": GROUPS}))
    return AuthConfig.from_files(
        oidc_issuer=provider.issuer, audience=API_AUDIENCE, claim_mapping_file=mapping
    )


def _claims(provider: OidcProvider, **kw: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": provider.issuer,
        "sub": "00u8f3k2-lena",
        "aud": API_AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "groups": ["icu-ml-engineering"],
    } | kw


def _refused(cfg: AuthConfig, token: str) -> str:
    with pytest.raises(NotAuthenticated) as err:
        cfg.authenticate(authorization=f"Bearer {token}", api_key=None)
    return str(err.value)


def test_a_token_the_provider_issues_passes_and_names_a_verified_subject(
    provider: OidcProvider, tmp_path: Path
) -> None:
    token = provider.client_credentials("ward-dashboard", SECRET)
    caller = _config(provider, tmp_path).authenticate(authorization=f"Bearer {token}", api_key=None)
    assert caller.actor == "user:ward-dashboard"
    assert caller.roles == {"auditor"}  # icu-audit -> auditor; "visitors" maps to nothing
    assert caller.identity == VerifiedIdentity(
        person="ward-dashboard",
        method="api-bearer",
        subject="ward-dashboard",
        issuer=provider.issuer,
    )


def test_bad_tokens_are_refused_each_with_its_reason(
    provider: OidcProvider, tmp_path: Path
) -> None:
    cfg = _config(provider, tmp_path)
    now = int(time.time())
    stranger_jwk, stranger_key = rsa_jwk("k-not-published")
    cases = {
        "expired": (
            provider.sign(_claims(provider, iat=now - 7200, exp=now - 3600)),
            "the token has expired",
        ),
        "foreign issuer": (
            provider.sign(_claims(provider, iss="https://idp.other-hospital.example")),
            "issued by 'https://idp.other-hospital.example'",
        ),
        "wrong audience": (
            provider.sign(_claims(provider, aud="https://billing.example/api")),
            f"the token is for another audience; this service is {API_AUDIENCE!r}",
        ),
        "kid not in the JWKS": (
            jwt.encode(
                _claims(provider),
                stranger_key,
                algorithm="RS256",
                headers={"kid": stranger_jwk["kid"]},
            ),
            "key id 'k-not-published' is not among the identity provider's published keys",
        ),
        "alg none": (
            jwt.encode(_claims(provider), None, algorithm="none"),
            "signing algorithm 'none' is not accepted",
        ),
        "HS256 keyed with the provider's public key": (
            jwt.encode(
                _claims(provider),
                json.dumps(provider.keys[0][0]["n"]).encode() * 2,
                algorithm="HS256",
                headers={"kid": provider.signing_kid},
            ),
            "signing algorithm 'HS256' is not accepted",
        ),
        "no exp": (
            provider.sign({k: v for k, v in _claims(provider).items() if k != "exp"}),
            "the token has no 'exp' claim",
        ),
    }
    for name, (token, reason) in cases.items():
        assert reason in _refused(cfg, token), name
    # the provider's own key with good claims still passes: each refusal was its one fault
    good = cfg.authenticate(
        authorization=f"Bearer {provider.sign(_claims(provider))}", api_key=None
    )
    assert good.roles == {"ml_engineer"} and good.subject == "00u8f3k2-lena"


def test_the_api_answers_401_with_the_reason_and_200_for_a_good_token(
    provider: OidcProvider, served: dict[str, Any], tmp_path: Path
) -> None:
    cfg = _config(provider, tmp_path)
    foreign = provider.sign(_claims(provider, iss="https://idp.other-hospital.example"))
    good = provider.client_credentials("ward-dashboard", SECRET)

    async def get(app: Any) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            return [
                await c.get("/v1/models", headers={"Authorization": f"Bearer {t}"})
                for t in (foreign, good)
            ]

    with Predictor.open(served["ws"]) as predictor:
        app = create_app(predictor, cfg)
        # on a thread of its own: a console test's Playwright may hold this thread's loop
        with ThreadPoolExecutor(1) as pool:
            refused, passed = pool.submit(anyio.run, get, app).result()
    assert refused.status_code == 401
    assert "issued by 'https://idp.other-hospital.example'" in refused.text
    assert passed.status_code == 200, passed.text
    assert passed.json()["releases"]


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_token_signed_with_the_rotated_key_is_accepted(
    provider: OidcProvider, tmp_path: Path
) -> None:
    clock = _Clock()
    cfg = _config(provider, tmp_path)
    cfg.oidc = OidcIssuer(provider.issuer, refetch_interval=60, monotonic=clock)
    before = provider.client_credentials("ward-dashboard", SECRET)
    assert cfg.authenticate(authorization=f"Bearer {before}", api_key=None).roles == {"auditor"}

    old_kid, (old_jwk, old_key) = provider.signing_kid, provider.keys[0]
    new_kid = provider.rotate()  # the old key is no longer published
    after = provider.client_credentials("ward-dashboard", SECRET)
    assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid
    # a new key id within the refetch interval is not fetched for (no hammering the provider)
    assert "is not among the identity provider's published keys" in _refused(cfg, after)
    clock.t += 61
    caller = cfg.authenticate(authorization=f"Bearer {after}", api_key=None)
    assert caller.roles == {"auditor"} and caller.issuer == provider.issuer
    # a new token still signed with the withdrawn key is refused once the keys were fetched again
    stale = jwt.encode(
        _claims(provider), old_key, algorithm="RS256", headers={"kid": old_jwk["kid"]}
    )
    assert f"key id {old_kid!r} is not among" in _refused(cfg, stale)
