"""Proof of who made a governed act on the command line: a signature by the person's own key.

A person registers the public half of an SSH Ed25519 key (``registry person key add``); one
key belongs to one person, held by the store. A governed act made at a shell is then a
*statement* naming exactly that act — action, person, release, role, reason, the workspace,
a one-time nonce and the time it was made — signed with the person's private key in the
SSHSIG format of ``ssh-keygen -Y sign -n clinical-mlops`` (OpenSSH ``PROTOCOL.sshsig``).
The library checks, before anything is recorded, that the statement names the act being
made and this workspace, that it is recent (:data:`WINDOW`), that the signature verifies and
that the key is registered to the acting person; the nonce is then spent, so the same
signature cannot be presented again. A signature over another act (another release, role,
decision or reason) is refused, and nothing is recorded.

Statements can be signed anywhere ``ssh-keygen`` runs (including with hardware keys):
print the statement, sign it with ``ssh-keygen -Y sign -n clinical-mlops -f KEY FILE`` and
pass the ``.sig`` file. ``ssh-keygen -Y verify`` accepts the signatures this module makes,
and this module accepts those ``ssh-keygen`` makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import IdentityRefused
from clinical_mlops.hashing import canonical_json

__all__ = [
    "NAMESPACE",
    "STATEMENT_KIND",
    "WINDOW",
    "SignedStatement",
    "SigningKey",
    "act_statement",
    "describe_act",
    "fingerprint",
    "parse_public_key",
    "read_statement",
    "sign",
    "verify",
]

#: the SSHSIG namespace every act signature is made in (``ssh-keygen -Y sign -n``)
NAMESPACE = "clinical-mlops"
#: the first field of every statement, so a signature over anything else is not one
STATEMENT_KIND = "clinical-mlops governed act v1"
#: how long after it was made a signed statement is accepted (and how far ahead of the clock)
WINDOW = timedelta(minutes=15)
_SKEW = timedelta(minutes=2)

_MAGIC = b"SSHSIG"
_HASH = "sha512"
_KEY_TYPE = "ssh-ed25519"
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"


@dataclass(frozen=True)
class SignedStatement:
    """A statement of one act and its armored SSHSIG signature, as presented by a person."""

    statement: bytes
    signature: str


@dataclass(frozen=True)
class SigningKey:
    """A person's OpenSSH Ed25519 private key file, to sign the statement of the act made."""

    path: Path


# -- SSH wire encoding ---------------------------------------------------------------------------
def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", buf[at : at + 4])
    end = at + 4 + n
    if end > len(buf):
        raise ValueError("truncated")
    return buf[at + 4 : end], end


def _key_blob(key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(_KEY_TYPE.encode()) + _string(raw)


def _signed_data(message: bytes, namespace: str) -> bytes:
    return (
        _MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(_HASH.encode())
        + _string(hashlib.sha512(message).digest())
    )


# -- keys ----------------------------------------------------------------------------------------
def parse_public_key(text: str) -> tuple[Ed25519PublicKey, str]:
    """Return the Ed25519 key of an OpenSSH public key line and the line, normalised.

    Only ``ssh-ed25519`` keys are accepted (``IdentityRefused`` naming ``public_key``
    otherwise); the comment is dropped.
    """
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != _KEY_TYPE:
        raise IdentityRefused(
            "public_key: expected an OpenSSH Ed25519 public key line ('ssh-ed25519 AAAA...', "
            "as in ~/.ssh/id_ed25519.pub); make one with `ssh-keygen -t ed25519`"
        )
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise IdentityRefused(
            "public_key: the ssh-ed25519 key does not decode (expected base64 of an Ed25519 key)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the type prefix says so
        raise IdentityRefused("public_key: expected an Ed25519 key")
    return key, f"{parts[0]} {parts[1]}"


def fingerprint(key: Ed25519PublicKey) -> str:
    """Return the key's SHA-256 fingerprint as ``ssh-keygen -l`` prints it (``SHA256:...``)."""
    digest = hashlib.sha256(_key_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Return the Ed25519 private key in the OpenSSH file at ``path``.

    A passphrase-protected or hardware-backed key is not opened here: sign the printed
    statement with ``ssh-keygen -Y sign`` and present the signature instead.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityRefused(f"key: cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityRefused(
            f"key: {path} is not an unencrypted OpenSSH Ed25519 private key ({exc}); for a "
            "passphrase-protected or hardware key, sign the statement with "
            f"`ssh-keygen -Y sign -n {NAMESPACE}` and pass --signature"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityRefused(f"key: {path} is not an Ed25519 key (expected ssh-keygen -t ed25519)")
    return key


# -- SSHSIG --------------------------------------------------------------------------------------
def sign(message: bytes, key: Ed25519PrivateKey, *, namespace: str = NAMESPACE) -> str:
    """Return the armored SSHSIG signature of ``message`` (as ``ssh-keygen -Y sign`` writes it)."""
    blob = _key_blob(key.public_key())
    raw = key.sign(_signed_data(message, namespace))
    body = (
        _MAGIC
        + struct.pack(">I", 1)
        + _string(blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(_HASH.encode())
        + _string(_string(_KEY_TYPE.encode()) + _string(raw))
    )
    b64 = base64.b64encode(body).decode()
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def verify(message: bytes, armored: str, *, namespace: str = NAMESPACE) -> Ed25519PublicKey:
    """Return the public key whose SSHSIG ``armored`` signs ``message`` in ``namespace``.

    ``IdentityRefused`` naming ``signature`` when it is not an SSHSIG signature, is made
    in another namespace, with another key type, or does not verify.
    """
    text = armored.strip()
    if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
        raise IdentityRefused(
            f"signature: expected an SSH signature ('{_ARMOR_BEGIN}' ... as written by "
            f"`ssh-keygen -Y sign -n {NAMESPACE}`)"
        )
    try:
        body = base64.b64decode("".join(text[len(_ARMOR_BEGIN) : -len(_ARMOR_END)].split()))
        if body[:6] != _MAGIC or struct.unpack(">I", body[6:10])[0] != 1:
            raise ValueError("not SSHSIG version 1")
        blob, at = _read_string(body, 10)
        ns, at = _read_string(body, at)
        _reserved, at = _read_string(body, at)
        hash_alg, at = _read_string(body, at)
        sig, _ = _read_string(body, at)
        key_type, kat = _read_string(blob, 0)
        raw_key, _ = _read_string(blob, kat)
        sig_type, sat = _read_string(sig, 0)
        raw_sig, _ = _read_string(sig, sat)
    except (ValueError, struct.error):
        raise IdentityRefused("signature: the SSH signature is malformed") from None
    if ns.decode(errors="replace") != namespace:
        raise IdentityRefused(
            f"signature: made in namespace {ns.decode(errors='replace')!r}; expected "
            f"{namespace!r} (sign with `ssh-keygen -Y sign -n {namespace}`)"
        )
    if key_type != _KEY_TYPE.encode() or sig_type != _KEY_TYPE.encode():
        raise IdentityRefused(
            f"signature: made with a {key_type.decode(errors='replace')} key; expected an "
            "Ed25519 key (ssh-ed25519)"
        )
    if hash_alg not in (b"sha512", b"sha256"):
        raise IdentityRefused(f"signature: unknown hash {hash_alg.decode(errors='replace')!r}")
    digest = (hashlib.sha512 if hash_alg == b"sha512" else hashlib.sha256)(message).digest()
    signed = (
        _MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_alg) + _string(digest)
    )
    try:
        key = Ed25519PublicKey.from_public_bytes(raw_key)
        key.verify(raw_sig, signed)
    except (InvalidSignature, ValueError):
        raise IdentityRefused(
            "signature: does not verify over the statement (it was made over other words, "
            "or altered)"
        ) from None
    return key


# -- statements ----------------------------------------------------------------------------------
def describe_act(action: str, *, person: str, **fields: Any) -> dict[str, Any]:
    """Return what a statement of one act names: the action, the person and its fields.

    Fields left as None are not part of the act; the same call builds the statement a
    person signs and the one the library expects, so any difference refuses the act.
    """

    def clean(value: Any) -> Any:
        # Front ends strip reasons before recording them; the statement names what is recorded.
        return value.strip() if isinstance(value, str) else value

    return {"action": action, "person": person} | {
        k: clean(v) for k, v in sorted(fields.items()) if v is not None
    }


def act_statement(
    act: Mapping[str, Any], *, workspace: str, now: datetime, nonce: str | None = None
) -> bytes:
    """Return the statement of ``act`` to sign: canonical JSON, one line, newline-terminated."""
    body = {
        "statement": STATEMENT_KIND,
        "workspace": workspace,
        "act": dict(act),
        "nonce": nonce or secrets.token_hex(16),
        "time": utc_iso(now),
    }
    return canonical_json(body) + b"\n"


def read_statement(
    statement: bytes, *, act: Mapping[str, Any], workspace: str, now: datetime
) -> dict[str, Any]:
    """Return the parsed statement when it names exactly ``act`` in ``workspace``, recently.

    ``IdentityRefused`` naming ``statement`` otherwise, saying which field differs — a
    signature over another act, another workspace, or made too long ago (:data:`WINDOW`).
    """
    try:
        body = json.loads(statement.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict) or body.get("statement") != STATEMENT_KIND:
        raise IdentityRefused(
            f"statement: not a statement of a governed act (expected JSON with statement "
            f"{STATEMENT_KIND!r}, as printed by --print-statement)"
        )
    signed = body.get("act")
    if not isinstance(signed, dict):
        raise IdentityRefused("statement: names no act")
    expected = dict(act)
    differ = sorted(k for k in set(signed) | set(expected) if signed.get(k) != expected.get(k))
    if differ:
        shown = "; ".join(
            f"{k}: signed {signed.get(k)!r}, this act {expected.get(k)!r}" for k in differ
        )
        raise IdentityRefused(
            f"statement: the signature is over another act ({shown}); sign a statement of "
            "this act (nothing was recorded)"
        )
    if body.get("workspace") != workspace:
        raise IdentityRefused(
            f"statement: signed for workspace {body.get('workspace')!r}, not this one "
            f"({workspace!r}); nothing was recorded"
        )
    nonce, made = body.get("nonce"), body.get("time")
    if not isinstance(nonce, str) or not (16 <= len(nonce) <= 100):
        raise IdentityRefused("statement: nonce: expected a random string of 16-100 characters")
    try:
        at = datetime.fromisoformat(str(made).replace("Z", "+00:00"))
    except ValueError:
        raise IdentityRefused(f"statement: time: expected an ISO-8601 time, not {made!r}") from None
    if at.tzinfo is None or not (now - WINDOW <= at <= now + _SKEW):
        raise IdentityRefused(
            f"statement: made at {made}; a signed statement is accepted for "
            f"{int(WINDOW.total_seconds() // 60)} minutes after it is made (now {utc_iso(now)}); "
            "print and sign a new one"
        )
    return body
