"""A real OpenID Connect provider on loopback for the tests (imported by tests/conftest.py).

``tests/oidc_provider/server.js`` runs panva's ``oidc-provider`` (OpenID Certified, pinned in
``tests/oidc_provider/package-lock.json``): discovery, JWKS, authorization code with PKCE,
its own login page, ID tokens, RP-initiated logout, and client-credentials grants giving
JWT access tokens for the API (``resource`` = the service's audience). The Makefile's
``oidc-provider`` step runs ``npm ci`` there. The accounts, clients and signing keys are
made here and handed to the server, so a test can rotate the keys (:meth:`rotate`) and sign
tokens with the provider's own key that the provider would never issue (expired, for
another audience). When Node.js or the packages are missing the tests that need it FAIL,
never skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["ACCOUNTS", "API_AUDIENCE", "OidcProvider", "oidc_provider", "rsa_jwk"]

HERE = Path(__file__).parent / "oidc_provider"
API_AUDIENCE = "https://clinical-mlops.test/api"
#: username -> (sub, password, extra claims): the provider's people
ACCOUNTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "demo.dr.lena.ortiz": (
        "00u8f3k2-lena",
        "provider password for lena",
        {"name": "Dr Lena Ortiz", "groups": ["icu-clinical-governance"]},
    ),
    "dr.ada.clin": (
        "00u1a9x7-ada",
        "provider password for ada",
        {"name": "Dr Ada Clin", "groups": ["icu-clinicians"]},
    ),
    "no.roles.person": (
        "00u5n0r0-none",
        "provider password for nobody",
        {"name": "No Roles", "groups": ["visitors"]},
    ),
}


def rsa_jwk(kid: str) -> tuple[dict[str, Any], rsa.RSAPrivateKey]:
    """Return a private RS256 JWK named ``kid`` and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return jwk | {"kid": kid, "alg": "RS256", "use": "sig"}, key


@dataclass
class OidcProvider:
    """A running loopback OpenID provider and what the tests may change about it."""

    issuer: str
    admin_token: str
    keys: list[tuple[dict[str, Any], rsa.RSAPrivateKey]]
    clients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def signing_kid(self) -> str:
        """Return the key id the provider signs with now."""
        return str(self.keys[0][0]["kid"])

    def state(self) -> dict[str, Any]:
        return {
            "jwks": {"keys": [jwk for jwk, _ in self.keys]},
            "accounts": [
                {"sub": sub, "username": name, "password": pw, "claims": claims}
                for name, (sub, pw, claims) in ACCOUNTS.items()
            ],
            "clients": self.clients,
            "resource": {"audience": API_AUDIENCE, "ttl": 600},
        }

    def push(self) -> None:
        """Hand the current keys and clients to the running provider."""
        r = httpx.put(
            f"{self.issuer}/_test/state",
            json=self.state(),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        assert r.status_code == 204, r.text

    def add_client(self, metadata: dict[str, Any]) -> None:
        """Register (or replace) a client by its ``client_id``."""
        self.clients = [c for c in self.clients if c["client_id"] != metadata["client_id"]]
        self.clients.append(metadata)
        self.push()

    def rotate(self, *, keep_old: bool = False) -> str:
        """Sign with a fresh key from now on (the old one kept published or dropped)."""
        jwk, key = rsa_jwk(f"k-{secrets.token_hex(4)}")
        self.keys = [(jwk, key), *(self.keys if keep_old else [])]
        self.push()
        return str(jwk["kid"])

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        """Return ``claims`` signed RS256 with the provider's current key (or ``kid``'s)."""
        jwk, key = next(k for k in self.keys if kid in (None, k[0]["kid"]))
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"]})

    def client_credentials(self, client_id: str, secret: str) -> str:
        """Return a JWT access token for the API the provider issues to ``client_id``."""
        r = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": API_AUDIENCE, "scope": "api"},
            auth=(client_id, secret),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """Yield a fresh OpenID provider on 127.0.0.1 (one per test module), stopped at the end."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "the test OpenID provider needs Node.js and its pinned packages; run `make sysdeps "
            "oidc-provider` (apt-get install nodejs npm; npm ci in tests/oidc_provider). These "
            "tests never skip."
        )
    provider = OidcProvider(issuer="", admin_token=secrets.token_urlsafe(24), keys=[rsa_jwk("k-1")])
    folder = tmp_path_factory.mktemp("oidc")
    state_file = folder / "state.json"
    log = (folder / "provider.log").open("w", encoding="utf-8")
    state_file.write_text(json.dumps(provider.state()), encoding="utf-8")
    proc = subprocess.Popen(
        [node, str(HERE / "server.js")],
        cwd=HERE,
        env={
            "PATH": os.environ.get("PATH", ""),
            "OIDC_STATE": str(state_file),
            "OIDC_ADMIN_TOKEN": provider.admin_token,
            "NODE_ENV": "test",
        },
        stdout=subprocess.PIPE,
        stderr=log,  # a file, not a pipe: the provider's warnings never fill a buffer
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            log.flush()
            why = (folder / "provider.log").read_text(encoding="utf-8")[-2000:]
            pytest.fail(f"the test OpenID provider did not start: {why}")
        provider.issuer = json.loads(line)["issuer"]
        discovery = httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=30)
        assert discovery.status_code == 200, discovery.text
        assert discovery.json()["issuer"] == provider.issuer
        yield provider
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
