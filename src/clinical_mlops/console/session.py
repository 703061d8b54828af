"""Console sessions and one-time form tokens.

A session is a cookie signed with ``itsdangerous`` (HMAC-SHA-256) holding the user
name, a random session id, the issue time and the user's session tag (which changes
with their password, see :mod:`clinical_mlops.console.users`); it expires ``max_age``
seconds after sign-in, and ends earlier when the password changes or the user is
removed, in every console process, because the tag is checked against the user file
on each request. The signing secret is 32 random bytes kept in ``console/session-key.json``
*wrapped* by the workspace key provider (local keyring or Vault), so no secret is a
constant in the code and rotating the provider's wrap key keeps sessions readable.

Every form carries a token signed for the session (salt ``console-form``) with a
random nonce. A post is accepted only when the token verifies, belongs to the
current session, is younger than the session and has not been used before: a
forged post (no token, a token from another session, a tampered token) and a
replayed one (the same token twice) are refused with ``FormTokenInvalid`` before
anything runs. Used nonces and signed-out sessions are remembered in memory until
they would have expired anyway; with several server processes, each remembers its
own (a limit stated in docs/CONSOLE.md).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from clinical_mlops.clock import Clock, SystemClock
from clinical_mlops.errors import FormTokenInvalid, SessionExpired
from clinical_mlops.privacy.keys import provider_for_workspace

__all__ = ["COOKIE", "DEFAULT_MAX_AGE", "Session", "SessionManager", "session_secret"]

COOKIE = "cm_console"
DEFAULT_MAX_AGE = 8 * 3600
#: seconds a single sign-on flow (a trip to the provider and back) may take
FLOW_MAX_AGE = 600
_AAD = b"clinical-mlops/console-session-key/v1"


def session_secret(workspace: Any) -> bytes:
    """Return the console's session-signing secret, creating it (wrapped) on first use."""
    provider = provider_for_workspace(workspace)
    path = workspace.path("session_key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key_id, wrapped = provider.wrap(secrets.token_bytes(32), aad=_AAD)
        body = json.dumps(
            {
                "format": "clinical-mlops/console-session-key/v1",
                "key_id": key_id,
                "wrapped": base64.b64encode(wrapped).decode("ascii"),
            }
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body + "\n")
    data = json.loads(path.read_text(encoding="utf-8"))
    return provider.unwrap(data["key_id"], base64.b64decode(data["wrapped"]), aad=_AAD)


@dataclass(frozen=True)
class Session:
    """A signed-in session: who, its id, when it was issued (UNIX seconds), under which tag.

    A session signed in through the OpenID provider also carries the provider's ``issuer``
    and ``subject`` and the console ``roles`` its claims mapped to when it began.
    """

    user: str
    sid: str
    issued: float
    tag: str = ""
    issuer: str | None = None
    subject: str | None = None
    roles: tuple[str, ...] = ()


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        n, unit = seconds // 3600, "hour"
    elif seconds % 60 == 0:
        n, unit = seconds // 60, "minute"
    else:
        n, unit = seconds, "second"
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _signer_on(clock: Clock) -> type[TimestampSigner]:
    """Return a signer class whose timestamps come from ``clock`` (tests move time)."""

    class _Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock.now().timestamp())

    return _Signer


class _Expiring:
    """A set of strings, each remembered until its own expiry time."""

    def __init__(self, clock: Clock) -> None:
        self._items: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def add_if_absent(self, item: str, *, until: float) -> bool:
        now = self._clock.now().timestamp()
        with self._lock:
            if len(self._items) > 10_000:
                self._items = {k: v for k, v in self._items.items() if v > now}
            if self._items.get(item, 0.0) > now:
                return False
            self._items[item] = until
            return True

    def __contains__(self, item: object) -> bool:
        with self._lock:
            return (
                isinstance(item, str) and self._items.get(item, 0.0) > self._clock.now().timestamp()
            )


class SessionManager:
    """Issues and checks session cookies and form tokens with one secret."""

    def __init__(
        self, secret: bytes, *, max_age: int = DEFAULT_MAX_AGE, clock: Clock | None = None
    ):
        if len(secret) < 32:
            raise ValueError("the session secret needs at least 32 bytes")
        self.max_age = max_age
        self.clock: Clock = clock or SystemClock()
        signer = _signer_on(self.clock)
        self._sessions = URLSafeTimedSerializer(secret, salt="console-session", signer=signer)
        self._forms = URLSafeTimedSerializer(secret, salt="console-form", signer=signer)
        self._flows = URLSafeTimedSerializer(secret, salt="console-oidc-flow", signer=signer)
        self._ended = _Expiring(self.clock)
        self._used = _Expiring(self.clock)

    # -- sessions ------------------------------------------------------------------------
    def issue(
        self,
        user: str,
        *,
        tag: str,
        issuer: str | None = None,
        subject: str | None = None,
        roles: tuple[str, ...] = (),
    ) -> str:
        """Return a new signed session cookie value for ``user`` under their session ``tag``.

        ``issuer``, ``subject`` and ``roles`` bind a single sign-on session to the provider's
        account (the cookie is signed, so none of them can be changed by the browser).
        """
        data: dict[str, Any] = {"u": user, "sid": secrets.token_urlsafe(16), "g": tag}
        if issuer is not None:
            data |= {"i": issuer, "s": subject, "r": list(roles)}
        return self._sessions.dumps(data)

    def load(self, cookie: str | None) -> Session:
        """Return the session in ``cookie``; ``SessionExpired`` when absent, invalid or old."""
        if not cookie:
            raise SessionExpired("you are not signed in")
        try:
            data, issued = self._sessions.loads(cookie, max_age=self.max_age, return_timestamp=True)
        except SignatureExpired:
            raise SessionExpired(
                f"your session expired (sessions last {_duration(self.max_age)}); "
                "sign in again — nothing was recorded"
            ) from None
        except BadSignature:
            raise SessionExpired("the session cookie does not verify; sign in again") from None
        session = Session(
            user=str(data["u"]),
            sid=str(data["sid"]),
            issued=issued.timestamp(),
            tag=str(data.get("g", "")),
            issuer=str(data["i"]) if data.get("i") else None,
            subject=str(data["s"]) if data.get("s") else None,
            roles=tuple(str(r) for r in data.get("r", ())),
        )
        if session.sid in self._ended:
            raise SessionExpired("you signed out of this session; sign in again")
        return session

    def end(self, session: Session) -> None:
        """Remember that ``session`` was signed out, until it would have expired."""
        self._ended.add_if_absent(session.sid, until=session.issued + self.max_age)

    # -- single sign-on flows -------------------------------------------------------------
    def sign_flow(self, data: dict[str, str]) -> str:
        """Return ``data`` (state, nonce, PKCE verifier, next page) signed for the browser."""
        return self._flows.dumps(data)

    def open_flow(self, token: str | None, *, state: str | None) -> dict[str, str]:
        """Return the sign-in flow ``token`` holds when ``state`` is its own, used once only.

        ``FormTokenInvalid`` when there is no flow, it is older than ``FLOW_MAX_AGE``, it
        does not verify, ``state`` differs, or that state was already used.
        """
        if not token:
            raise FormTokenInvalid(
                "no sign-in was started from this browser (or it was finished already); "
                "start again from the sign-in page"
            )
        try:
            data = self._flows.loads(token, max_age=FLOW_MAX_AGE)
        except SignatureExpired:
            raise FormTokenInvalid("the sign-in took too long; start again") from None
        except BadSignature:
            raise FormTokenInvalid("the sign-in cookie does not verify; start again") from None
        if not state or not secrets.compare_digest(str(data.get("state", "")), state):
            raise FormTokenInvalid(
                "the provider's answer does not carry this sign-in's state (a forged or "
                "crossed-over answer); nothing was recorded"
            )
        until = self.clock.now().timestamp() + FLOW_MAX_AGE
        if not self._used.add_if_absent("flow:" + state, until=until):
            raise FormTokenInvalid(
                "this sign-in answer was already used once; start again — nothing was recorded"
            )
        return {str(k): str(v) for k, v in data.items()}

    # -- form tokens ---------------------------------------------------------------------
    def form_token(self, session: Session) -> str:
        """Return a one-time token for one form of ``session``."""
        return self._forms.dumps({"sid": session.sid, "n": secrets.token_urlsafe(12)})

    def check_form(self, session: Session, token: str | None) -> None:
        """Accept ``token`` once for ``session``; raise ``FormTokenInvalid`` otherwise."""
        if not token:
            raise FormTokenInvalid(
                "the form has no security token, so it was not sent from this console; "
                "nothing was recorded"
            )
        try:
            data = self._forms.loads(token, max_age=self.max_age)
        except SignatureExpired:
            raise FormTokenInvalid(
                "the form is older than a session; reload the page — nothing was recorded"
            ) from None
        except BadSignature:
            raise FormTokenInvalid(
                "the form's security token does not verify; nothing was recorded"
            ) from None
        if data.get("sid") != session.sid:
            raise FormTokenInvalid(
                "the form belongs to another session; reload the page — nothing was recorded"
            )
        until = self.clock.now().timestamp() + self.max_age
        if not self._used.add_if_absent(str(data.get("n")), until=until):
            raise FormTokenInvalid(
                "this form was already submitted once; nothing was recorded again — "
                "reload the page to see the current state"
            )
