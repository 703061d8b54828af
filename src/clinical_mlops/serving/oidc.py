"""The hospital's OpenID Connect provider: discovery, its signing keys, and verifying its tokens.

An :class:`OidcIssuer` is built from the issuer URL alone. Its discovery document
(``<issuer>/.well-known/openid-configuration``) must name the same issuer; the signing keys
come from the document's ``jwks_uri``. Keys are cached; a token naming a key id the cache
does not hold makes the keys be fetched again (the provider rotated them), at most once per
:attr:`OidcIssuer.refetch_interval` seconds, so tokens with made-up key ids cannot make the
service hammer the provider.

:meth:`OidcIssuer.verify` accepts a token only when, in this order: its algorithm is on the
allow-list (asymmetric only: never ``none``, never an HMAC algorithm, which would let anyone
holding the public key sign); its ``iss`` is this issuer (checked before any key is fetched);
its ``kid`` is among the provider's published keys; the signature verifies; ``aud`` names the
expected audience; ``exp`` is in the future and ``nbf``/``iat`` not in the future, each with
:data:`LEEWAY` seconds of clock skew; and, for an ID token, ``nonce`` matches. Every refusal
is a :class:`~clinical_mlops.errors.NotAuthenticated` naming what was wrong. A provider that
cannot be reached refuses too (fail closed).

:class:`ClaimMapping` turns verified claims into a person and roles: the person from a
declared claim (``preferred_username``, ``email`` or ``sub``), the roles from a declared
claim listing role names and/or a group claim mapped group by group to roles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from clinical_mlops.errors import NotAuthenticated, ServiceConfigInvalid
from clinical_mlops.hashing import is_text

__all__ = ["ALGORITHMS", "LEEWAY", "ClaimMapping", "OidcIssuer"]

#: signing algorithms accepted from a provider (asymmetric only)
ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
)
#: seconds of clock skew allowed on exp, nbf and iat
LEEWAY = 30


@dataclass(frozen=True)
class ClaimMapping:
    """How a provider's claims name a person and their roles."""

    #: the claim naming the person (the registry's name for them)
    person_claim: str = "sub"
    #: a claim listing role names directly (None: not used)
    roles_claim: str | None = "roles"
    #: a claim listing the person's groups (None: not used)
    groups_claim: str | None = "groups"
    #: group -> the roles its members hold
    group_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> ClaimMapping:
        """Return the mapping in ``data`` (keys as the fields); ``ServiceConfigInvalid`` if wrong."""
        groups = data.get("group_roles", {})
        if not isinstance(groups, Mapping) or not all(
            isinstance(v, list) and all(isinstance(r, str) for r in v) for v in groups.values()
        ):
            raise ServiceConfigInvalid(
                f"{where}.group_roles: expected an object mapping each group to a list of roles"
            )
        out: dict[str, Any] = {}
        for key in ("person_claim", "roles_claim", "groups_claim"):
            if key in data:
                value = data[key]
                nullable = key != "person_claim"
                if not (isinstance(value, str) and value) and not (nullable and value is None):
                    raise ServiceConfigInvalid(f"{where}.{key}: expected a claim name")
                out[key] = value
        return cls(group_roles={str(g): tuple(r) for g, r in groups.items()}, **out)

    def person(self, claims: Mapping[str, Any]) -> str:
        """Return the person the claims name; ``NotAuthenticated`` when the claim is missing."""
        value = claims.get(self.person_claim)
        if not isinstance(value, str) or not value.strip() or not is_text(value):
            raise NotAuthenticated(
                f"the identity provider's token has no {self.person_claim!r} claim naming "
                "the person"
            )
        return value.strip()

    def roles(self, claims: Mapping[str, Any], *, known: Iterable[str]) -> frozenset[str]:
        """Return the roles among ``known`` that the claims give (direct and through groups)."""
        found: set[str] = set()
        if self.roles_claim is not None:
            found |= set(_strings(claims.get(self.roles_claim)))
        if self.groups_claim is not None:
            for group in _strings(claims.get(self.groups_claim)):
                found |= set(self.group_roles.get(group, ()))
        return frozenset(found & set(known))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class OidcIssuer:
    """One OpenID provider: discovery and signing keys, fetched lazily and cached."""

    def __init__(
        self,
        issuer: str,
        *,
        algorithms: Iterable[str] = ALGORITHMS,
        leeway: int = LEEWAY,
        refetch_interval: float = 60.0,
        timeout: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if not issuer.startswith(("https://", "http://")):
            raise ServiceConfigInvalid(f"issuer: expected the provider's URL, got {issuer!r}")
        algorithms = tuple(algorithms)
        unsafe = [a for a in algorithms if a not in ALGORITHMS]
        if unsafe:
            raise ServiceConfigInvalid(
                f"algorithms: {', '.join(unsafe)} not accepted from an identity provider "
                f"(accepted: {', '.join(ALGORITHMS)})"
            )
        # compared exactly, as OpenID Connect Discovery requires (no trailing-slash guessing)
        self.issuer = issuer
        self.algorithms = algorithms
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    # -- discovery and keys ---------------------------------------------------------------
    def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise NotAuthenticated(
                f"the identity provider's {what} could not be read from {url} "
                f"({type(exc).__name__}); nothing is accepted until it can"
            ) from None
        if not isinstance(data, dict):
            raise NotAuthenticated(f"the identity provider's {what} at {url} is not a JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """Return the provider's discovery document (fetched once, then cached)."""
        with self._lock:
            if self._metadata is None:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                data = self._get(url, "discovery document")
                if data.get("issuer") != self.issuer:
                    raise NotAuthenticated(
                        f"the discovery document at {url} names the issuer "
                        f"{data.get('issuer')!r}, not {self.issuer!r}"
                    )
                if not isinstance(data.get("jwks_uri"), str):
                    raise NotAuthenticated(f"the discovery document at {url} has no jwks_uri")
                self._metadata = data
            return self._metadata

    def _refresh_keys(self) -> None:
        """Fetch the published keys, unless they were fetched less than the interval ago."""
        uri = str(self.metadata()["jwks_uri"])
        with self._lock:
            now = self._monotonic()
            if self._fetched_at is not None and now - self._fetched_at < self.refetch_interval:
                return
            self._fetched_at = now
        data = self._get(uri, "signing keys (JWKS)")
        keys: dict[str, jwt.PyJWK] = {}
        for raw in data.get("keys", []) if isinstance(data.get("keys"), list) else []:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig" or "kid" not in raw:
                continue
            try:
                keys[str(raw["kid"])] = jwt.PyJWK(raw)
            except jwt.PyJWTError:
                continue  # a key type this service cannot use is not one it will trust
        with self._lock:
            self._keys = keys

    def key(self, kid: str) -> jwt.PyJWK:
        """Return the provider's published key ``kid``, fetching the keys again if it is new."""
        with self._lock:
            found = self._keys.get(kid)
        if found is None:
            self._refresh_keys()
            with self._lock:
                found = self._keys.get(kid)
        if found is None:
            raise NotAuthenticated(
                f"the token's key id {kid!r} is not among the identity provider's published "
                "keys (JWKS)"
            )
        return found

    # -- verification ---------------------------------------------------------------------
    def verify(
        self,
        token: str,
        *,
        audience: str,
        nonce: str | None = None,
        required: Iterable[str] = ("exp", "iat", "iss", "aud", "sub"),
    ) -> dict[str, Any]:
        """Return the verified claims of ``token``; raise ``NotAuthenticated`` saying why not."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise NotAuthenticated(
                "the token is not a well-formed JWT (header.claims.signature, base64url)"
            ) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise NotAuthenticated(
                f"the token's signing algorithm {alg!r} is not accepted here "
                f"(accepted: {', '.join(self.algorithms)})"
            )
        if unverified.get("iss") != self.issuer:
            raise NotAuthenticated(
                f"the token was issued by {unverified.get('iss')!r}; this service accepts "
                f"only {self.issuer!r}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise NotAuthenticated("the token names no key id ('kid') in its header")
        key = self.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(required)},
            )
        except jwt.InvalidAudienceError:
            raise NotAuthenticated(
                f"the token is for another audience; this service is {audience!r}"
            ) from None
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("the token has expired; obtain a new one") from None
        except jwt.ImmatureSignatureError:
            raise NotAuthenticated(
                "the token is not valid yet (its nbf or iat is in the future)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise NotAuthenticated(
                f"the token's signature does not verify with the provider's key {kid!r}"
            ) from None
        except jwt.PyJWTError:
            raise NotAuthenticated(
                f"the token does not verify with the provider's key {kid!r} ({alg})"
            ) from None
        if "sub" in claims and not is_text(claims["sub"]):
            raise NotAuthenticated("the token's 'sub' claim must be text")
        if nonce is not None and claims.get("nonce") != nonce:
            raise NotAuthenticated(
                "the ID token's nonce does not match this sign-in (a replayed or substituted token)"
            )
        return claims
