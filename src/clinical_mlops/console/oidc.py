"""Single sign-on for the console: OpenID Connect authorization code flow with PKCE.

The console signs people in with local users (``console/users.json``) unless the workspace's
``console/sign-in.json`` says ``"method": "oidc"``; then it signs everyone in through the
hospital's OpenID provider and the local password form is closed::

    {"method": "oidc",
     "oidc": {"issuer": "https://idp.hospital.example/realms/icu",
              "client_id": "clinical-mlops-console",
              "client_secret_env": "CLINICAL_MLOPS_OIDC_CLIENT_SECRET",
              "redirect_url": "https://mlops.hospital.example/console/oidc/callback",
              "post_logout_redirect_url": "https://mlops.hospital.example/console/login",
              "person_claim": "preferred_username",
              "roles_claim": "roles", "groups_claim": "groups",
              "group_roles": {"icu-clinical-governance": ["reviewer"]}}}

The client secret is read from the named environment variable when the console starts; it
is never written to the workspace nor logged (a public client with PKCE needs none).

A sign-in sends the browser to the provider with a fresh ``state``, ``nonce`` and PKCE
``code_verifier`` (S256), kept in a short-lived signed cookie; the callback is accepted only
when its ``state`` is that cookie's and has not been used before, the code exchanges at the
provider's token endpoint, and the ID token verifies (the provider's published keys,
``iss``, ``aud`` = the client id, ``exp``, ``nonce``: :class:`~clinical_mlops.serving.oidc.OidcIssuer`).
The session then records the provider's issuer and subject, the person (the declared claim)
and the console roles the claims map to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from clinical_mlops.errors import NotAuthenticated, ServiceConfigInvalid
from clinical_mlops.serving.auth import ROLES
from clinical_mlops.serving.oidc import ClaimMapping, OidcIssuer

__all__ = ["CONSOLE_ROLES", "ConsoleOidc", "OidcSignIn", "load_sign_in", "pkce_pair"]

#: the roles a console session may hold (``system`` is for API keys only)
CONSOLE_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r != "system")


def pkce_pair() -> tuple[str, str]:
    """Return a fresh PKCE ``code_verifier`` and its S256 ``code_challenge``."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class OidcSignIn:
    """Who the provider says signed in: issuer, subject, person and console roles."""

    issuer: str
    subject: str
    person: str
    roles: tuple[str, ...]


@dataclass
class ConsoleOidc:
    """The console's OpenID provider settings (never holds the secret on disk)."""

    issuer: str
    client_id: str
    redirect_url: str
    client_secret: str | None = field(default=None, repr=False)
    post_logout_redirect_url: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "groups")
    mapping: ClaimMapping = field(
        default_factory=lambda: ClaimMapping(person_claim="preferred_username")
    )
    provider: OidcIssuer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.provider = OidcIssuer(self.issuer)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> ConsoleOidc:
        """Return the settings in ``data``; ``ServiceConfigInvalid`` naming a wrong field."""
        for key in ("issuer", "client_id", "redirect_url"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ServiceConfigInvalid(f"{where}.{key}: expected a non-empty string")
        secret = None
        env = data.get("client_secret_env")
        if "client_secret" in data:
            raise ServiceConfigInvalid(
                f"{where}.client_secret: the secret is never kept in the workspace; name the "
                "environment variable holding it in client_secret_env"
            )
        if env is not None:
            if not isinstance(env, str) or not env:
                raise ServiceConfigInvalid(
                    f"{where}.client_secret_env: expected an environment variable name"
                )
            secret = os.environ.get(env)
            if not secret:
                raise ServiceConfigInvalid(
                    f"{where}.client_secret_env: the environment variable {env} is not set"
                )
        scopes = data.get("scopes", ["openid", "profile", "groups"])
        if not isinstance(scopes, list) or "openid" not in scopes:
            raise ServiceConfigInvalid(f"{where}.scopes: expected a list including 'openid'")
        mapping_data = {"person_claim": "preferred_username"} | {
            k: data[k]
            for k in ("person_claim", "roles_claim", "groups_claim", "group_roles")
            if k in data
        }
        logout = data.get("post_logout_redirect_url")
        return cls(
            issuer=str(data["issuer"]),
            client_id=str(data["client_id"]),
            redirect_url=str(data["redirect_url"]),
            client_secret=secret,
            post_logout_redirect_url=str(logout) if logout else None,
            scopes=tuple(str(s) for s in scopes),
            mapping=ClaimMapping.from_json(mapping_data, where=where),
        )

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """Return where to send the browser to sign in at the provider."""
        endpoint = str(self.provider.metadata()["authorization_endpoint"])
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_url,
                "scope": " ".join(self.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def finish(self, *, code: str, code_verifier: str, nonce: str) -> OidcSignIn:
        """Return who signed in, exchanging ``code``; ``NotAuthenticated`` saying why not."""
        endpoint = str(self.provider.metadata()["token_endpoint"])
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "code_verifier": code_verifier,
        }
        auth = None
        if self.client_secret:
            auth = (self.client_id, self.client_secret)
        else:
            form["client_id"] = self.client_id
        try:
            response = httpx.post(endpoint, data=form, auth=auth, timeout=self.provider.timeout)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise NotAuthenticated(
                f"the identity provider's token endpoint could not be used ({type(exc).__name__})"
            ) from None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise NotAuthenticated(
                f"the identity provider refused the sign-in code ({error or response.status_code});"
                " a code is good for one sign-in only — start again"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise NotAuthenticated("the identity provider answered without an ID token")
        claims = self.provider.verify(id_token, audience=self.client_id, nonce=nonce)
        azp = claims.get("azp")
        if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and azp != self.client_id:
            raise NotAuthenticated("the ID token was issued to another client ('azp')")
        return OidcSignIn(
            issuer=self.provider.issuer,
            subject=str(claims["sub"]),
            person=self.mapping.person(claims),
            roles=tuple(sorted(self.mapping.roles(claims, known=CONSOLE_ROLES))),
        )

    def logout_url(self) -> str | None:
        """Return the provider's end-session URL for RP-initiated logout, if it has one."""
        endpoint = self.provider.metadata().get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        params = {"client_id": self.client_id}
        if self.post_logout_redirect_url:
            params["post_logout_redirect_uri"] = self.post_logout_redirect_url
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def load_sign_in(workspace: Any) -> ConsoleOidc | None:
    """Return the console's OpenID settings, or None when it signs in local users."""
    path = workspace.path("console_sign_in")
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServiceConfigInvalid(f"{path}: expected a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ServiceConfigInvalid(f"{path}: expected a JSON object")
    method = data.get("method", "local")
    if method == "local":
        return None
    if method != "oidc":
        raise ServiceConfigInvalid(f"{path}: method: expected 'local' or 'oidc', got {method!r}")
    if not isinstance(data.get("oidc"), dict):
        raise ServiceConfigInvalid(f"{path}: oidc: expected the provider's settings (an object)")
    return ConsoleOidc.from_json(data["oidc"], where=f"{path}: oidc")
