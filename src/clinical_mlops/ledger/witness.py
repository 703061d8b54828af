"""Witnesses: keep the newest checkpoint of each ledger outside the building, and cosign it.

A witness (C2SP tlog-witness) holds, per log origin, the latest checkpoint it cosigned. It
cosigns a new checkpoint only when the log's pinned key signed it and a consistency proof
shows the tree it last saw is a prefix of the new one; anything else is refused, the reason
appended to ``refusals.jsonl`` and its state left as it was. A database rolled back with its
checkpoint log, or cut after its newest local checkpoint, then disagrees with the witness.

The witness's directory (``clinical-mlops witness init``)::

    witness.json      its name and the vkeys of the logs it witnesses
    witness.key       its Ed25519 private key (PEM, mode 0600)
    logs/<sha256(origin)>    the latest cosigned checkpoint of each log (a signed note)
    refusals.jsonl    every refused checkpoint: when, origin, status, why

Served over HTTP (``clinical-mlops witness serve``), or used as a *file witness*: the ledger
runs the same checks against a directory (an auditor's share) instead of a URL.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinical_mlops.errors import ValueInvalid, WitnessRefused
from clinical_mlops.ledger.merkle import EMPTY_ROOT, verify_consistency
from clinical_mlops.ledger.note import (
    COSIGNATURE_TYPE,
    Note,
    NoteBody,
    Verifier,
    cosign,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_vkey,
    raw_public,
    verify_cosignature,
)
from clinical_mlops.workspace import write_durably

__all__ = ["Witness", "WitnessClient", "init_witness", "origin_hash"]

CONFIG = "witness.json"
KEY = "witness.key"
_LOCKS: dict[str, threading.Lock] = {}


def origin_hash(origin: str) -> str:
    """Return the lower-case hex SHA-256 of an origin line (the monitoring path's name)."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


def init_witness(state: Path, *, name: str, logs: Sequence[str], key: Path | None = None) -> str:
    """Return the new witness's vkey after writing its configuration (and key) into ``state``.

    ``logs`` are the vkeys of the ledgers it witnesses (``clinical-mlops audit checkpoint``
    prints a ledger's). A key file given is used as is; otherwise one is generated.
    """
    for item in logs:
        parse_vkey(item)
    Verifier.of(name, Ed25519PrivateKey.generate().public_key())  # checks the name
    state.mkdir(parents=True, exist_ok=True)
    key_path = key or state / KEY
    if not key_path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_durably(key_path, pem, mode=0o600)
    config = {"name": name, "logs": list(logs), "key": str(key_path)}
    write_durably(state / CONFIG, (json.dumps(config, indent=1) + "\n").encode())
    return Witness(state).vkey


@dataclass(frozen=True)
class Accepted:
    """A cosigned checkpoint: the witness's cosignature lines and the size it now holds."""

    cosignatures: str
    size: int


class Witness:
    """A witness over a state directory (see the module docstring)."""

    def __init__(
        self, state: Path, *, key: Path | None = None, clock: Callable[[], float] = time.time
    ):
        self.state = Path(state)
        try:
            config = json.loads((self.state / CONFIG).read_text(encoding="utf-8"))
            self.name = str(config["name"])
            self.logs = [parse_vkey(v) for v in config["logs"]]
            key_path = Path(key or config.get("key") or self.state / KEY)
            private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueInvalid(
                f"witness state {self.state}: not a witness directory ({exc}); "
                "make one with `clinical-mlops witness init`"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueInvalid(f"witness key {key_path}: expected an Ed25519 private key")
        self._key = private
        self._public = raw_public(private.public_key())
        self.verifier = Verifier.of(self.name, private.public_key(), COSIGNATURE_TYPE)
        self._clock = clock
        self._lock = _LOCKS.setdefault(str(self.state.resolve()), threading.Lock())

    @property
    def vkey(self) -> str:
        """Return the witness's cosigning vkey (type 0x04), which verifiers pin."""
        return self.verifier.vkey()

    def _path(self, origin: str) -> Path:
        return self.state / "logs" / origin_hash(origin)

    def latest(self, origin: str) -> str | None:
        """Return the latest cosigned checkpoint note of ``origin``, None when none."""
        try:
            return self._path(origin).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def latest_by_hash(self, digest: str) -> str | None:
        """Return the latest cosigned checkpoint of the origin whose SHA-256 hex is ``digest``."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        try:
            return (self.state / "logs" / digest).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def refusals(self) -> list[dict[str, object]]:
        """Return every refusal recorded, oldest first."""
        try:
            lines = (self.state / "refusals.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _refuse(self, status: int, origin: str, reason: str, latest: int | None = None) -> NoReturn:
        record = {
            "time": int(self._clock()),
            "origin": origin,
            "status": status,
            "reason": reason,
        }
        fd = os.open(self.state / "refusals.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        raise WitnessRefused(status, reason, latest_size=latest)

    def add_checkpoint(self, body: bytes) -> Accepted:
        """Return the cosignature of the checkpoint in an add-checkpoint request body.

        Raises WitnessRefused with the tlog-witness status (400 malformed, 403 not signed
        by the log's pinned key, 404 unknown log, 409 stale old size with the size held,
        422 inconsistent) after recording why; the state is then unchanged.
        """
        try:
            old_size, proof, text = parse_add_checkpoint(body)
            note = Note.parse(text)
            checkpoint = NoteBody.parse(note.text)
        except ValueInvalid as exc:
            self._refuse(400, "", str(exc))
        origin = checkpoint.origin
        keys = [v for v in self.logs if v.name == origin]
        if not keys:
            self._refuse(404, origin, f"unknown log {origin!r}: no pinned key for this origin")
        try:
            signed = any(note.verified_by(v) is not None for v in keys)
        except ValueInvalid as exc:
            signed, why = False, str(exc)
        else:
            why = "no signature by the log's pinned key"
        if not signed:
            self._refuse(403, origin, why)
        if old_size > checkpoint.size:
            self._refuse(
                400,
                origin,
                f"old size {old_size} is larger than the checkpoint's {checkpoint.size}",
            )
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            self._refuse(422, origin, "a checkpoint of size 0 must have the empty tree's root")
        with self._lock, open(self.state / ".lock", "a+") as lockfile:
            # Checking the old size and storing the new checkpoint is one step (tlog-witness).
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            held_text = self.latest(origin)
            held = NoteBody.parse(Note.parse(held_text).text) if held_text else None
            held_size = held.size if held else 0
            if old_size != held_size:
                self._refuse(
                    409,
                    origin,
                    f"old size {old_size} is not the size of the latest cosigned checkpoint "
                    f"({held_size})",
                    latest=held_size,
                )
            if held is None or old_size == 0:
                if proof:
                    self._refuse(422, origin, "a consistency proof from size 0 must be empty")
            elif old_size == checkpoint.size:
                if held.root != checkpoint.root:
                    self._refuse(
                        422,
                        origin,
                        f"a checkpoint of size {old_size} with another root than the one "
                        "cosigned: the log forked",
                    )
            elif not verify_consistency(
                old_size=old_size,
                new_size=checkpoint.size,
                proof=proof,
                old_root=held.root,
                new_root=checkpoint.root,
            ):
                self._refuse(
                    422,
                    origin,
                    f"the consistency proof from size {old_size} to {checkpoint.size} does "
                    "not verify: the new tree does not extend the one cosigned",
                )
            line = cosign(
                note,
                name=self.name,
                key=self._key,
                public=self._public,
                timestamp=int(self._clock()),
            )
            kept = Note(note.text, tuple(s for s in note.signatures if s[0] == origin))
            self._path(origin).parent.mkdir(parents=True, exist_ok=True)
            write_durably(self._path(origin), kept.with_signatures([line]).format().encode())
        cosig = Note(note.text, (line,)).format()[len(note.text) + 1 :]
        return Accepted(cosig, checkpoint.size)


class WitnessClient:
    """Talks add-checkpoint and monitoring to one witness: an http(s) URL or a state directory."""

    def __init__(self, target: str, *, timeout: float = 5.0):
        self.target = target
        self.timeout = timeout

    @property
    def is_url(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> Accepted:
        """Return the witness's cosignature; WitnessRefused (409 carries its size) or OSError."""
        body = format_add_checkpoint(old_size, proof, note)
        if not self.is_url:
            return Witness(Path(self.target)).add_checkpoint(body)
        request = urllib.request.Request(  # noqa: S310 (http(s) only: is_url)
            self.target.rstrip("/") + "/add-checkpoint", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return Accepted(
                    response.read().decode("utf-8"), NoteBody.parse(Note.parse(note).text).size
                )
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace").strip()
            latest = int(text) if exc.code == 409 and text.isdigit() else None
            raise WitnessRefused(exc.code, text or exc.reason, latest_size=latest) from None

    def latest(self, origin: str) -> str | None:
        """Return the witness's latest cosigned checkpoint of ``origin`` (None: it has none)."""
        if not self.is_url:
            path = Path(self.target)
            if path.is_file():  # a cosigned checkpoint copied out of a witness
                return path.read_text(encoding="utf-8")
            return Witness(path).latest(origin)
        url = f"{self.target.rstrip('/')}/{origin_hash(origin)}/checkpoint"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                return str(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def cosigned_by(note_text: str, witness: Verifier) -> tuple[Note, int]:
    """Return (note, cosignature time) when ``witness`` validly cosigned it; ValueInvalid if not."""
    note = Note.parse(note_text)
    stamp = verify_cosignature(note, witness)
    if stamp is None:
        raise ValueInvalid(f"the checkpoint carries no cosignature by witness {witness.name}")
    return note, stamp
