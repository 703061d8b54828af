"""Console users: names, roles and scrypt password hashes, kept in the workspace.

A console user is the same identity the HTTP API knows: the name is the JWT
``sub`` (the ledger actor is ``user:<name>``), the roles come from
:data:`clinical_mlops.serving.auth.ROLES`, and for governance acts (approvals,
suspensions, reviews, incidents) the name is the registry person whose registry
roles (clinical, compliance, engineering) the registry checks itself.

The directory is one JSON file, ``console/users.json`` (mode 0600), written
atomically. Passwords are stored only as ``hashlib.scrypt`` hashes (N=2^14, r=8,
p=1, 16-byte random salt) and compared in constant time; an unknown user costs
the same hash as a known one, so timing does not reveal who exists.

Each user's :attr:`ConsoleUser.session_tag` is derived from their stored hash, which
gets a fresh salt whenever the password is set. A session carries the tag it was
issued under and is checked against the file on every request, so changing a
password, or removing a user (even re-adding the same name), ends every session of
that user in every console process at its next request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.errors import ConsoleUserInvalid, NotAuthenticated
from clinical_mlops.serving.auth import ROLES
from clinical_mlops.vocabulary import Role

__all__ = [
    "GOVERNANCE_ROLE",
    "MIN_PASSWORD_LENGTH",
    "ConsoleUser",
    "UserDirectory",
    "hash_password",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 12
#: console role -> the registry role it acts in for governance (the registry checks it holds it)
GOVERNANCE_ROLE: dict[str, str] = {
    "reviewer": Role.CLINICAL,
    "compliance": Role.COMPLIANCE,
    "ml_engineer": Role.ENGINEERING,
}
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_LOCK = threading.Lock()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Return ``scrypt$N$r$p$salt$hash`` (base64) for ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT
    )
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
        f"{b64(salt).decode()}${b64(digest).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
    """Return True when ``password`` hashes to ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=64 * 1024 * 1024,
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


# A hash no password matches, checked for unknown users so that they cost the same time.
_DUMMY = hash_password(secrets.token_urlsafe(24))


def _session_tag(stored: str) -> str:
    """Return the credential generation of a stored hash: it changes with every password set."""
    digest = hashlib.sha256(b"clinical-mlops/console-session-tag/v1\0" + stored.encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class ConsoleUser:
    """A console user (never carries the password hash out of the directory).

    ``session_tag`` names the user's current password (a one-way digest of its salted
    hash, not the hash): sessions issued under another tag are no longer accepted.
    """

    name: str
    roles: tuple[str, ...]
    site: str | None = None
    created: str | None = None
    session_tag: str = field(default="", repr=False, compare=False)

    @property
    def actor(self) -> str:
        """Return the ledger actor for clinical acts (``user:<name>``, as the API writes)."""
        return f"user:{self.name}"

    @property
    def governance_roles(self) -> list[str]:
        """Return the registry roles this user may act in (clinical, compliance, engineering)."""
        return [GOVERNANCE_ROLE[r] for r in self.roles if r in GOVERNANCE_ROLE]

    def has(self, *roles: str) -> bool:
        """Return True when the user holds one of ``roles``."""
        return bool(set(self.roles) & set(roles))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "roles": list(self.roles),
            "site": self.site,
            "created": self.created,
        }


class UserDirectory:
    """The console users of one workspace (``console/users.json``)."""

    def __init__(self, path: Path, *, clock: Clock | None = None):
        self.path = path
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def open(cls, workspace: Any, *, clock: Clock | None = None) -> UserDirectory:
        """Return the directory of ``workspace`` (the file is created on the first ``add``)."""
        return cls(workspace.path("console_users"), clock=clock)

    # -- storage -------------------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        users = data.get("users", {})
        if data.get("format") != "clinical-mlops/console-users/v1" or not isinstance(users, dict):
            raise ConsoleUserInvalid(f"{self.path}: not a console user directory")
        return users

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"format": "clinical-mlops/console-users/v1", "users": users}, indent=1, sort_keys=True
        )
        fd, tmp = tempfile.mkstemp(prefix=".users-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- management ----------------------------------------------------------------------
    def add(
        self, name: str, *, roles: list[str], password: str, site: str | None = None
    ) -> ConsoleUser:
        """Return the user after adding (or replacing) ``name`` with ``roles`` and ``password``.

        Raises ``ConsoleUserInvalid`` for a malformed name, an unknown role, no role,
        or a password shorter than :data:`MIN_PASSWORD_LENGTH` characters.
        """
        if not _NAME.fullmatch(name or ""):
            raise ConsoleUserInvalid(
                f"user name {name!r}: use 1-64 lower-case letters, digits and . _ @ - "
                "(the same name as the token's sub claim)"
            )
        unknown = sorted(set(roles) - set(ROLES))
        if unknown or not roles:
            raise ConsoleUserInvalid(
                f"roles {unknown or roles}: give at least one of {', '.join(ROLES)}"
            )
        if "system" in roles:
            raise ConsoleUserInvalid(
                "the system role is for API keys of machines, not for people signing in"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ConsoleUserInvalid(
                f"the password for {name!r} is shorter than {MIN_PASSWORD_LENGTH} characters"
            )
        entry = {
            "roles": sorted(set(roles), key=ROLES.index),
            "site": site or None,
            "password": hash_password(password),
            "created": utc_iso(self.clock.now()),
        }
        with _LOCK:
            users = self._read()
            users[name] = entry
            self._write(users)
        return self.get(name)

    def set_password(self, name: str, password: str) -> ConsoleUser:
        """Return the user after giving ``name`` a new password; roles and site are kept.

        Every open console session of the user ends at its next request. Raises
        ``ConsoleUserInvalid`` for an unknown user or a password shorter than
        :data:`MIN_PASSWORD_LENGTH` characters.
        """
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ConsoleUserInvalid(
                f"the password for {name!r} is shorter than {MIN_PASSWORD_LENGTH} characters"
            )
        with _LOCK:
            users = self._read()
            if name not in users:
                raise ConsoleUserInvalid(f"no console user {name!r}")
            users[name] = users[name] | {"password": hash_password(password)}
            self._write(users)
        return self.get(name)

    def remove(self, name: str) -> None:
        """Remove ``name`` (their open sessions end); ``ConsoleUserInvalid`` when there is none."""
        with _LOCK:
            users = self._read()
            if name not in users:
                raise ConsoleUserInvalid(f"no console user {name!r}")
            del users[name]
            self._write(users)

    def get(self, name: str) -> ConsoleUser:
        """Return user ``name``; ``NotAuthenticated`` when there is none."""
        entry = self._read().get(name)
        if entry is None:
            raise NotAuthenticated(f"no console user {name!r}")
        return ConsoleUser(
            name=name,
            roles=tuple(r for r in entry["roles"] if r in ROLES),
            site=entry.get("site"),
            created=entry.get("created"),
            session_tag=_session_tag(str(entry.get("password", ""))),
        )

    def list(self) -> list[ConsoleUser]:
        """Return every user, by name."""
        return [self.get(n) for n in sorted(self._read())]

    def authenticate(self, name: str, password: str) -> ConsoleUser:
        """Return the user when ``password`` is theirs; ``NotAuthenticated`` otherwise.

        The message is the same for an unknown user and a wrong password.
        """
        entry = self._read().get(name or "")
        stored = entry["password"] if entry else _DUMMY
        if not verify_password(password or "", stored) or entry is None:
            raise NotAuthenticated("the user name or password is not correct")
        return self.get(name)
