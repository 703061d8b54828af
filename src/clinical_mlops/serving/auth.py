"""Who is calling, and may they: JWT bearer tokens with roles, API keys for systems.

A JWT must verify with the service's key (HS256 shared secret, or an EdDSA/RS256
public key), name this service in ``aud``, carry ``sub`` and ``exp`` and a
``roles`` claim listing roles from :data:`ROLES`. With single sign-on
(``serve --oidc-issuer``) the keys are instead the hospital OpenID provider's, found
through its discovery document and fetched again when it rotates them
(:mod:`clinical_mlops.serving.oidc`); ``iss`` and ``aud`` are then required and the
person and roles come from the declared claims or group mapping. A system (an EHR interface,
Prometheus) may instead send ``X-API-Key``; keys are stored as SHA-256 hashes
with a name, roles and the sites the system serves, never in clear. Missing or
unverifiable credentials are 401; verified credentials without a role the route
declares are 403. The actor written into the ledger is ``user:<sub>`` or
``system:<key name>``.

The rollout site a request is scored under comes from the credential: the token's
``site`` claim, or the sites declared with the API key (a system serving several
sites may name one of them per request). A credential naming no site is scored at
the service's own site (``serve --site``). ``*`` is the rollout's wildcard, never a
site: a token or key naming it is refused. When the service is given an issuer
(``serve --jwt-issuer``), a token's ``iss`` must be that issuer.

A verified token is remembered by its SHA-256 until its ``exp`` (at most
:data:`VERIFIED_TOKENS` of them), so a caller sending the same token again is not
verified from scratch. Expiry is still checked on every request, the roles are still
checked against each route, and a change of key, audience, issuer or algorithms
forgets every remembered token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from clinical_mlops.errors import (
    NotAuthenticated,
    NotAuthorised,
    ServiceConfigInvalid,
    ValueInvalid,
)
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.hashing import is_text
from clinical_mlops.serving.oidc import ALGORITHMS, ClaimMapping, OidcIssuer

__all__ = ["ROLES", "AuthConfig", "Principal", "hash_api_key", "new_api_key"]

ROLES: tuple[str, ...] = ("clinician", "reviewer", "ml_engineer", "compliance", "auditor", "system")
DEFAULT_AUDIENCE = "clinical-mlops"
#: how many verified bearer tokens are remembered (the oldest is forgotten first)
VERIFIED_TOKENS = 4096


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who, with which roles, and at which rollout sites.

    A bearer-token caller also carries the verified ``subject`` (the token's ``sub``) and
    ``issuer`` (its ``iss``, None for a token without one); an API-key system has neither.
    """

    actor: str
    roles: frozenset[str]
    #: the sites the credential names, its home site first; () = the service's own site
    sites: tuple[str, ...] = ()
    subject: str | None = None
    issuer: str | None = None

    @property
    def site(self) -> str | None:
        """Return the credential's home site, or None when it names none."""
        return self.sites[0] if self.sites else None

    @property
    def identity(self) -> VerifiedIdentity | None:
        """Return the verified person behind a bearer token (None for an API-key system)."""
        if self.subject is None or not self.actor.startswith("user:"):
            return None
        return VerifiedIdentity(
            person=self.actor.removeprefix("user:"),
            method="api-bearer",
            subject=self.subject,
            issuer=self.issuer,
        )


def _site_problem(site: object) -> str | None:
    """Return why ``site`` cannot be a credential's site, or None."""
    if not isinstance(site, str) or not is_text(site) or not site.strip():
        return "a site must be non-empty text"
    if site == "*":
        return "'*' is the rollout's wildcard for every site, not a site"
    return None


class _SiteInvalid(ValueError):
    """A site an API key is declared with that cannot be one."""


def hash_api_key(key: str) -> str:
    """Return the SHA-256 hex digest an API key is stored as."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """Return a fresh random API key (256 bits, URL-safe)."""
    return "cmk_" + secrets.token_urlsafe(32)


@dataclass
class AuthConfig:
    """How tokens and keys are verified; build with :meth:`from_secret` or :meth:`from_files`."""

    key: Any
    algorithms: list[str]
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = None
    #: SHA-256 of a key -> (system name, roles, sites)
    api_keys: dict[str, tuple[str, frozenset[str], tuple[str, ...]]] = field(default_factory=dict)
    #: the OpenID provider whose published keys verify tokens (instead of ``key``)
    oidc: OidcIssuer | None = None
    #: how an OpenID provider's claims name the person and their roles
    claim_mapping: ClaimMapping = field(default_factory=ClaimMapping)
    #: seconds since the epoch, as PyJWT reads them; replaced in tests
    now: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    # token SHA-256 -> (what it was verified under, caller, verified at, exp)
    _verified: OrderedDict[bytes, tuple[tuple[Any, ...], Principal, float, int]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    _verified_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @classmethod
    def from_secret(
        cls, secret: str | bytes, *, audience: str = DEFAULT_AUDIENCE, issuer: str | None = None
    ) -> AuthConfig:
        """Return a config verifying HS256 tokens signed with ``secret`` (at least 32 bytes)."""
        if len(secret) < 32:
            raise ServiceConfigInvalid("the JWT secret needs at least 32 bytes")
        return cls(key=secret, algorithms=["HS256"], audience=audience, issuer=issuer)

    @classmethod
    def from_oidc(
        cls,
        issuer: str,
        *,
        audience: str = DEFAULT_AUDIENCE,
        claim_mapping: ClaimMapping | None = None,
    ) -> AuthConfig:
        """Return a config verifying tokens of the OpenID provider ``issuer`` (keys from JWKS)."""
        return cls(
            key=None,
            algorithms=list(ALGORITHMS),
            audience=audience,
            issuer=issuer,
            oidc=OidcIssuer(issuer),
            claim_mapping=claim_mapping or ClaimMapping(),
        )

    @classmethod
    def from_files(
        cls,
        *,
        secret_file: Path | None = None,
        public_key_file: Path | None = None,
        api_keys_file: Path | None = None,
        audience: str = DEFAULT_AUDIENCE,
        issuer: str | None = None,
        oidc_issuer: str | None = None,
        claim_mapping_file: Path | None = None,
    ) -> AuthConfig:
        """Return a config from a secret or public-key file and an API-key file (hashes only).

        ``oidc_issuer`` verifies tokens with that OpenID provider's published keys instead;
        ``claim_mapping_file`` (JSON: person_claim, roles_claim, groups_claim, group_roles)
        says how its claims name the person and roles.
        """
        if oidc_issuer is not None:
            if public_key_file is not None or secret_file is not None:
                raise ServiceConfigInvalid(
                    "give either --oidc-issuer (the provider's published keys) or a JWT key "
                    "file, not both"
                )
            mapping = ClaimMapping()
            if claim_mapping_file is not None:
                try:
                    data = json.loads(claim_mapping_file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ServiceConfigInvalid(
                        f"{claim_mapping_file}: expected a JSON object ({exc})"
                    ) from None
                if not isinstance(data, dict):
                    raise ServiceConfigInvalid(f"{claim_mapping_file}: expected a JSON object")
                mapping = ClaimMapping.from_json(data, where=str(claim_mapping_file))
            cfg = cls.from_oidc(oidc_issuer, audience=audience, claim_mapping=mapping)
        elif public_key_file is not None:
            cfg = cls(
                key=public_key_file.read_text(encoding="utf-8"),
                algorithms=["EdDSA", "RS256", "ES256"],
                audience=audience,
                issuer=issuer,
            )
        elif secret_file is not None:
            cfg = cls.from_secret(
                secret_file.read_text(encoding="utf-8").strip(), audience=audience, issuer=issuer
            )
        else:
            raise ServiceConfigInvalid(
                "the service needs a key to verify bearer tokens: give --jwt-secret-file "
                "(HS256 shared secret) or --jwt-public-key (EdDSA/RS256/ES256 PEM)"
            )
        if api_keys_file is not None:
            where = str(api_keys_file)
            try:
                data = json.loads(api_keys_file.read_text(encoding="utf-8"))
                entries = data["keys"]
                for i, entry in enumerate(entries):
                    if not isinstance(entry, dict) or not {"sha256", "name", "roles"} <= set(entry):
                        raise ServiceConfigInvalid(
                            f"{where}: keys[{i}] must be an object with sha256, name, roles "
                            "and optionally sites"
                        )
                    sites = entry.get("sites", [])
                    if not isinstance(sites, list):
                        raise ServiceConfigInvalid(
                            f"{where}: keys[{i}].sites: expected a list of site names"
                        )
                    try:
                        cfg.add_api_key_hash(
                            str(entry["sha256"]),
                            name=str(entry["name"]),
                            roles=list(entry["roles"]),
                            sites=sites,
                        )
                    except _SiteInvalid as exc:
                        raise ServiceConfigInvalid(f"{where}: keys[{i}].sites: {exc}") from None
                    except ValueError as exc:
                        raise ServiceConfigInvalid(f"{where}: keys[{i}].roles: {exc}") from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ServiceConfigInvalid(
                    f'{where}: expected JSON {{"keys": [{{"name", "sha256", "roles", "sites"}}]}} '
                    f"({exc})"
                ) from None
        return cfg

    def add_api_key_hash(
        self, digest: str, *, name: str, roles: list[str], sites: Sequence[str] = ()
    ) -> None:
        """Accept the API key whose SHA-256 is ``digest`` as system ``name`` with ``roles``.

        ``sites`` are the rollout sites the system serves, its home site first; a key
        with none is scored at the service's own site.
        """
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueInvalid(
                f"roles: unknown roles {sorted(unknown)}; expected some of {', '.join(ROLES)}"
            )
        for site in sites:
            problem = _site_problem(site)
            if problem:
                raise _SiteInvalid(f"{site!r}: {problem}")
        self.api_keys[digest] = (name, frozenset(roles), tuple(dict.fromkeys(sites)))

    def add_api_key(
        self, key: str, *, name: str, roles: list[str], sites: Sequence[str] = ()
    ) -> None:
        """Accept ``key`` (kept only as its hash) as system ``name`` with ``roles`` at ``sites``."""
        self.add_api_key_hash(hash_api_key(key), name=name, roles=roles, sites=sites)

    # -- verification --------------------------------------------------------------------------
    def authenticate(self, *, authorization: str | None, api_key: str | None) -> Principal:
        """Return the caller; raise ``NotAuthenticated`` for missing or unverifiable credentials."""
        if api_key:
            digest = hash_api_key(api_key)
            for known, (name, roles, sites) in self.api_keys.items():
                if hmac.compare_digest(known, digest):
                    return Principal(actor=f"system:{name}", roles=roles, sites=sites)
            raise NotAuthenticated("the API key is not recognised")
        if not authorization:
            raise NotAuthenticated("no credentials: send Authorization: Bearer <JWT> or X-API-Key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("the Authorization header must be 'Bearer <JWT>'")
        token = token.strip()
        token_sha = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        verifier = (self.key, tuple(self.algorithms), self.audience, self.issuer, id(self.oidc))
        remembered = self._verified.get(token_sha)
        if remembered is not None and remembered[0] == verifier:
            _, caller, verified_at, expires = remembered
            now = self.now()
            if now >= expires:  # PyJWT's rule: expired once exp <= now
                raise NotAuthenticated("the token has expired; obtain a new one")
            if now >= verified_at:  # a clock stepped back is verified from scratch
                return caller
        caller, expires = self._verify(token)
        with self._verified_lock:
            self._verified[token_sha] = (verifier, caller, self.now(), expires)
            while len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return caller

    def _verify(self, token: str) -> tuple[Principal, int]:
        """Return the caller a bearer token names and its ``exp``; raise ``NotAuthenticated``."""
        if self.oidc is not None:
            return self._verify_oidc(token, self.oidc)
        required = ["exp", "sub", "aud"] + (["iss"] if self.issuer is not None else [])
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": required},
            )
        except jwt.InvalidAudienceError:
            raise NotAuthenticated(
                f"the token is for another audience; this service is {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise NotAuthenticated(
                f"the token was issued by another issuer; this service accepts {self.issuer!r}"
            ) from None
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("the token has expired; obtain a new one") from None
        except jwt.PyJWTError as exc:
            # PyJWT's own messages can carry library internals (object reprs, key classes):
            # the caller gets a fixed sentence for the kind of failure instead.
            raise NotAuthenticated(_why_not(exc, self.algorithms)) from None
        claimed = claims.get("roles")
        if not isinstance(claimed, list) or not all(isinstance(r, str) for r in claimed):
            raise NotAuthenticated("the token carries no 'roles' list")
        site = claims.get("site")
        if not is_text(claims["sub"]) or (site is not None and not is_text(site)):
            # the actor and site are written to the audit ledger, which stores UTF-8 text
            raise NotAuthenticated("the token's 'sub' and 'site' claims must be text")
        problem = None if site is None else _site_problem(site)
        if problem:
            raise NotAuthenticated(f"the token's 'site' claim {site!r} is refused: {problem}")
        principal = Principal(
            actor=f"user:{claims['sub']}",
            roles=frozenset(r for r in claimed if r in ROLES),
            sites=(site,) if site is not None else (),
            subject=str(claims["sub"]),
            issuer=claims.get("iss") if isinstance(claims.get("iss"), str) else None,
        )
        return principal, int(claims["exp"])

    def _verify_oidc(self, token: str, provider: OidcIssuer) -> tuple[Principal, int]:
        """Return the caller a provider's token names (person and roles mapped) and its ``exp``."""
        claims = provider.verify(token, audience=self.audience)
        person = self.claim_mapping.person(claims)
        site = claims.get("site")
        problem = None if site is None else _site_problem(site)
        if problem:
            raise NotAuthenticated(f"the token's 'site' claim {site!r} is refused: {problem}")
        principal = Principal(
            actor=f"user:{person}",
            roles=self.claim_mapping.roles(claims, known=ROLES),
            sites=(site,) if site is not None else (),
            subject=str(claims["sub"]),
            issuer=provider.issuer,
        )
        return principal, int(claims["exp"])

    def issue(
        self,
        *,
        subject: str,
        roles: list[str],
        ttl_seconds: int = 3600,
        audience: str | None = None,
        site: str | None = None,
    ) -> str:
        """Return a signed HS256 token (tests and the demo; production tokens come from the IdP)."""
        import time

        if self.algorithms != ["HS256"]:
            raise ValueError("only a shared-secret config can issue tokens")
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "roles": roles,
            "aud": audience or self.audience,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        if self.issuer:
            claims["iss"] = self.issuer
        if site:
            claims["site"] = site
        return jwt.encode(claims, self.key, algorithm="HS256")


def _why_not(exc: Exception, algorithms: list[str]) -> str:
    """Return what is wrong with a token that failed verification, in fixed words."""
    accepted = ", ".join(algorithms)
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (its nbf or iat is in the future)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify with this service's key"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"the token's signing algorithm is not accepted here (accepted: {accepted})"
    if isinstance(exc, jwt.InvalidKeyError):
        return (
            "the token's signing algorithm does not fit this service's key "
            f"(accepted: {accepted}, with the key type the service holds)"
        )
    if isinstance(exc, jwt.DecodeError):
        return "the token is not a well-formed JWT (header.claims.signature, base64url)"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "the token's iat claim is not a time"
    return "the token does not verify"


def authorise(principal: Principal, *, allowed: tuple[str, ...], route: str) -> Principal:
    """Return ``principal`` when it holds one of ``allowed``; raise ``NotAuthorised`` otherwise."""
    if not principal.roles & set(allowed):
        raise NotAuthorised(
            f"{route} needs one of the roles {', '.join(allowed)}; "
            f"{principal.actor} holds {', '.join(sorted(principal.roles)) or 'none'}"
        )
    return principal
