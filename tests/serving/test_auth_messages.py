"""A token that does not verify is refused (401) with a fixed sentence naming what is wrong,
never with the token library's internals (object reprs, key classes)."""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from clinical_mlops.errors import NotAuthenticated
from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig

SERVICE_KEY = ed25519.Ed25519PrivateKey.generate()
PUBLIC_PEM = (
    SERVICE_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
#: what a 401 must never show: Python object reprs, addresses, classes of the token library
INTERNALS = re.compile(r"<|object at|0x[0-9a-f]{6,}|generator|PublicKey|Algorithm\b|Expected one")


def _claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "dr.t",
        "aud": "clinical-mlops",
        "exp": now + 30 * 86400,
        "roles": ["clinician"],
    } | kw


def _config() -> AuthConfig:
    return AuthConfig(key=PUBLIC_PEM, algorithms=["EdDSA", "RS256", "ES256"], issuer="hospital-idp")


CASES = {
    # a token whose algorithm is accepted but does not fit the service's key type
    "ES256 for an Ed25519 key": (
        jwt.encode(
            _claims(iss="hospital-idp"), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
        ),
        "the token's signing algorithm does not fit this service's key "
        "(accepted: EdDSA, RS256, ES256, with the key type the service holds)",
    ),
    "RS256 for an Ed25519 key": (
        jwt.encode(
            _claims(iss="hospital-idp"),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
        ),
        "the token's signing algorithm does not fit this service's key "
        "(accepted: EdDSA, RS256, ES256, with the key type the service holds)",
    ),
    "HS256 where only public keys verify": (
        jwt.encode(_claims(iss="hospital-idp"), secrets.token_hex(32), algorithm="HS256"),
        "the token's signing algorithm is not accepted here (accepted: EdDSA, RS256, ES256)",
    ),
    "another Ed25519 key": (
        jwt.encode(
            _claims(iss="hospital-idp"),
            ed25519.Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
        ),
        "the token's signature does not verify with this service's key",
    ),
    "not a JWT": (
        "not-a-token",
        "the token is not a well-formed JWT (header.claims.signature, base64url)",
    ),
    "another issuer": (
        jwt.encode(_claims(iss="elsewhere"), SERVICE_KEY, algorithm="EdDSA"),
        "the token was issued by another issuer; this service accepts 'hospital-idp'",
    ),
    "no exp": (
        jwt.encode(
            {k: v for k, v in _claims(iss="hospital-idp").items() if k != "exp"},
            SERVICE_KEY,
            algorithm="EdDSA",
        ),
        "the token has no 'exp' claim",
    ),
    "not valid yet": (
        jwt.encode(
            _claims(iss="hospital-idp", nbf=int(time.time()) + 7 * 86400),
            SERVICE_KEY,
            algorithm="EdDSA",
        ),
        "the token is not valid yet (its nbf or iat is in the future)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_token_that_does_not_verify_is_refused_in_fixed_words(case: str) -> None:
    token, expected = CASES[case]
    with pytest.raises(NotAuthenticated) as caught:
        _config().authenticate(authorization=f"Bearer {token}", api_key=None)
    assert str(caught.value) == expected
    assert not INTERNALS.search(str(caught.value))


def test_a_good_token_still_verifies() -> None:
    token = jwt.encode(_claims(iss="hospital-idp"), SERVICE_KEY, algorithm="EdDSA")
    caller = _config().authenticate(authorization=f"Bearer {token}", api_key=None)
    assert caller.actor == "user:dr.t" and caller.roles == {"clinician"}


def test_the_401_body_of_the_api_shows_no_internals(served: dict[str, Any]) -> None:
    token = CASES["ES256 for an Ed25519 key"][0]

    async def get(app: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            return await c.get("/v1/models", headers={"Authorization": f"Bearer {token}"})

    with Predictor.open(served["ws"]) as predictor:
        app = create_app(predictor, _config())
        # on a thread of its own: a console test's Playwright may hold this thread's loop
        with ThreadPoolExecutor(1) as pool:
            r = pool.submit(anyio.run, get, app).result()
    assert r.status_code == 401
    assert "does not fit this service's key" in r.text
    assert not INTERNALS.search(r.text), r.text
