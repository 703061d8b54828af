"""Signed notes (C2SP signed-note), checkpoints (C2SP tlog-checkpoint) and cosignatures.

A checkpoint leaves the ledger as a signed note any transparency-log tool can read::

    clinical-mlops/ledger-5c0f...          origin line: NOTE_PREFIX + the ledger's origin
    1000                                   tree size
    3q2+7w...=                             base64 RFC 6962 root of the first 1000 leaves
    time 2025-01-01T10:00:00Z              extension line: when the ledger signed it

    — clinical-mlops/ledger-5c0f... base64(key id || Ed25519 signature)

The key name is the origin line; the 4-byte key id is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (signed-note's Ed25519 type), so a
signature line names its key without the keyring's own key ids. A witness cosignature
(C2SP tlog-cosignature, Ed25519, type 0x04) signs ``cosignature/v1\\ntime <unix>\\n`` then
the note text, and its line carries ``key id || 8-byte big-endian time || signature``.

Public keys travel as *vkeys*, ``<name>+<hex key id>+base64(type || public key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clinical_mlops.errors import ValueInvalid

__all__ = [
    "COSIGNATURE_TYPE",
    "ED25519_TYPE",
    "NOTE_PREFIX",
    "Note",
    "NoteBody",
    "Signer",
    "Verifier",
    "cosign",
    "cosignature_message",
    "format_add_checkpoint",
    "key_hash",
    "parse_add_checkpoint",
    "parse_vkey",
    "raw_public",
    "verify_cosignature",
    "vkey",
]

ED25519_TYPE = 0x01
COSIGNATURE_TYPE = 0x04
NOTE_PREFIX = "clinical-mlops/"
_DASH = "\u2014 "
_MAX_PROOF_LINES = 63


class Signer(Protocol):
    """Anything that signs bytes with Ed25519 (a local key, a remote signing service)."""

    def sign(self, data: bytes) -> bytes: ...


def raw_public(key: Ed25519PublicKey) -> bytes:
    """Return the 32-byte RFC 8032 encoding of ``key``."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, sig_type: int, public: bytes) -> bytes:
    """Return the 4-byte signed-note key id ``SHA-256(name || 0x0A || type || public)[:4]``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise ValueInvalid(f"key name {name!r}: expected a non-empty name without spaces or '+'")


def vkey(name: str, key: Ed25519PublicKey, sig_type: int = ED25519_TYPE) -> str:
    """Return the verifier key string ``name+hexid+base64(type || key)``."""
    _check_name(name)
    public = raw_public(key)
    encoded = base64.b64encode(bytes([sig_type]) + public).decode("ascii")
    return f"{name}+{key_hash(name, sig_type, public).hex()}+{encoded}"


@dataclass(frozen=True)
class Verifier:
    """One trusted key: its name, signature type, key id and Ed25519 public key."""

    name: str
    sig_type: int
    key_id: bytes
    key: Ed25519PublicKey

    @classmethod
    def of(cls, name: str, key: Ed25519PublicKey, sig_type: int = ED25519_TYPE) -> Verifier:
        return cls(name, sig_type, key_hash(name, sig_type, raw_public(key)), key)

    def vkey(self) -> str:
        return vkey(self.name, self.key, self.sig_type)


def parse_vkey(text: str) -> Verifier:
    """Return the verifier a vkey string names; ValueInvalid saying what is wrong."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueInvalid(f"vkey {text!r}: expected NAME+HEXID+BASE64KEY")
    name, hexid, encoded = parts
    _check_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
        key_id = bytes.fromhex(hexid)
    except (binascii.Error, ValueError):
        raise ValueInvalid(f"vkey {text!r}: key id is not hex or key is not base64") from None
    if len(raw) != 33 or raw[0] not in (ED25519_TYPE, COSIGNATURE_TYPE) or len(key_id) != 4:
        raise ValueInvalid(
            f"vkey {text!r}: expected an Ed25519 key (type 0x01 or 0x04) of 32 bytes, 4-byte id"
        )
    if key_hash(name, raw[0], raw[1:]) != key_id:
        raise ValueInvalid(f"vkey {text!r}: key id does not match the name and key")
    return Verifier(name, raw[0], key_id, Ed25519PublicKey.from_public_bytes(raw[1:]))


@dataclass(frozen=True)
class Note:
    """A signed note: its text (ending in a newline) and its signature lines as (name, bytes)."""

    text: str
    signatures: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        """Return the note in ``data``; ValueInvalid naming what is malformed."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueInvalid("signed note: not valid UTF-8") from None
        if any(ord(c) < 0x20 and c != "\n" for c in data):
            raise ValueInvalid("signed note: holds a control character other than newline")
        if not data.endswith("\n"):
            raise ValueInvalid("signed note: does not end with a newline")
        split = data.rfind("\n\n")
        if split < 0:
            raise ValueInvalid("signed note: no blank line before the signatures")
        text, lines = data[: split + 1], data[split + 2 :].splitlines()
        if not lines:
            raise ValueInvalid("signed note: no signature lines")
        sigs = []
        for line in lines:
            name, sig = _signature_line(line)
            sigs.append((name, sig))
        return cls(text, tuple(sigs))

    def format(self) -> str:
        """Return the note as text: its text, a blank line, then one line per signature."""
        lines = "".join(
            f"{_DASH}{name} {base64.b64encode(sig).decode('ascii')}\n"
            for name, sig in self.signatures
        )
        return f"{self.text}\n{lines}"

    def with_signatures(self, lines: Iterable[tuple[str, bytes]]) -> Note:
        return Note(self.text, (*self.signatures, *lines))

    def verified_by(self, verifier: Verifier) -> bytes | None:
        """Return the signature (after the key id) made by ``verifier`` over the text, if valid.

        Lines of other keys are ignored, as signed-note requires; a line with this key's
        name and id that does not verify makes the note invalid (ValueInvalid).
        """
        for name, sig in self.signatures:
            if name != verifier.name or sig[:4] != verifier.key_id:
                continue
            if verifier.sig_type != ED25519_TYPE:
                continue
            try:
                verifier.key.verify(sig[4:], self.text.encode("utf-8"))
            except InvalidSignature:
                raise ValueInvalid(
                    f"signed note: the signature of {name} does not verify"
                ) from None
            return sig[4:]
        return None


def _signature_line(line: str) -> tuple[str, bytes]:
    if not line.startswith(_DASH):
        raise ValueInvalid(f"signed note: signature line {line[:60]!r} does not start with '— '")
    name, _, encoded = line[len(_DASH) :].partition(" ")
    _check_name(name)
    try:
        sig = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueInvalid(f"signed note: signature of {name} is not base64") from None
    if len(sig) < 5:
        raise ValueInvalid(f"signed note: signature of {name} is too short")
    return name, sig


@dataclass(frozen=True)
class NoteBody:
    """The text of a checkpoint note: origin line, size, root and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> NoteBody:
        """Return the checkpoint in a note text; ValueInvalid naming the bad line."""
        lines = text.split("\n")
        if lines[-1] != "" or len(lines) < 4:
            raise ValueInvalid("checkpoint: expected origin, size and root lines")
        lines.pop()
        origin, size, root, *extensions = lines
        if not origin:
            raise ValueInvalid("checkpoint: the origin line is empty")
        if not size.isdigit() or (size != "0" and size.startswith("0")) or not size.isascii():
            raise ValueInvalid(f"checkpoint: tree size {size[:30]!r} is not a decimal")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 32:
            raise ValueInvalid("checkpoint: root hash is not 32 bytes of base64")
        if any(not line for line in extensions):
            raise ValueInvalid("checkpoint: an extension line is empty")
        return cls(origin, int(size), digest, tuple(extensions))


def cosignature_message(text: str, timestamp: int) -> bytes:
    """Return what an Ed25519 tlog cosignature signs: header, time line, checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(
    note: Note, *, name: str, key: Signer, public: bytes, timestamp: int
) -> tuple[str, bytes]:
    """Return the cosignature line (name, key id || time || signature) over ``note``'s text."""
    sig = key.sign(cosignature_message(note.text, timestamp))
    return name, key_hash(name, COSIGNATURE_TYPE, public) + struct.pack(">Q", timestamp) + sig


def verify_cosignature(note: Note, verifier: Verifier) -> int | None:
    """Return the timestamp of ``verifier``'s valid cosignature on ``note``, None when absent.

    A line with the witness's name and key id that does not verify raises ValueInvalid.
    """
    want = key_hash(verifier.name, COSIGNATURE_TYPE, raw_public(verifier.key))
    for name, sig in note.signatures:
        if name != verifier.name or sig[:4] != want:
            continue
        if len(sig) != 4 + 8 + 64:
            raise ValueInvalid(f"cosignature of {name}: expected 76 bytes, got {len(sig)}")
        (timestamp,) = struct.unpack(">Q", sig[4:12])
        try:
            verifier.key.verify(sig[12:], cosignature_message(note.text, timestamp))
        except InvalidSignature:
            raise ValueInvalid(f"cosignature of {name} does not verify") from None
        return int(timestamp)
    return None


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """Return a tlog-witness add-checkpoint request body."""
    lines = [f"old {old_size}\n", *(base64.b64encode(p).decode("ascii") + "\n" for p in proof)]
    return ("".join(lines) + "\n" + note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """Return (old size, proof hashes, note text) of an add-checkpoint body; ValueInvalid if bad."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueInvalid("add-checkpoint: body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueInvalid("add-checkpoint: no empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not first[4:].isdigit() or not first[4:].isascii():
        raise ValueInvalid(f"add-checkpoint: first line {first[:40]!r} is not 'old <size>'")
    if first[4:] != "0" and first[4:].startswith("0"):
        raise ValueInvalid("add-checkpoint: old size has leading zeroes")
    if len(lines) - 1 > _MAX_PROOF_LINES:
        raise ValueInvalid("add-checkpoint: more than 63 consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            digest = base64.b64decode(line, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 32:
            raise ValueInvalid(f"add-checkpoint: proof line {line[:50]!r} is not a base64 hash")
        proof.append(digest)
    return int(first[4:]), proof, note


def verifiers_by_name(verifiers: Iterable[Verifier]) -> Mapping[str, list[Verifier]]:
    """Return the verifiers grouped by key name (the checkpoint origin a log key signs)."""
    out: dict[str, list[Verifier]] = {}
    for v in verifiers:
        out.setdefault(v.name, []).append(v)
    return out
