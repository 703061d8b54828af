"""Verification: recompute everything the ledger claims and name the first bad seq.

One function per check, run in order by :func:`verify_ledger` (the shape of
sigstore/rekor's ``pkg/verify``):

1. ``sequence``   seqs are exactly 0, 1, 2, ... (deletion, reordering, insertion)
2. ``row``        every column is present and well-formed
3. ``schema``     the schema id is declared and matches the type; public keys allowed
4. ``leaf``       the stored leaf hash equals the hash recomputed from the columns
5. ``chain``      each entry's ``prev`` is the previous entry's recomputed leaf hash
6. ``signature``  the entry's Ed25519 signature verifies under a known ledger key
7. ``payload``    the payload hashes to ``payload_hash``; a missing payload is
                  covered by a later purge entry
8. ``chunk``      every cached 256-leaf subtree hash equals the recomputed one
9. ``checkpoint`` every checkpoint (database, checkpoint log, and any the caller
                  trusts) is validly signed, for this ledger, no larger than the
                  ledger, and its root equals the recomputed root at its size.
                  Because every root is recomputed from one set of leaves, all
                  checkpoints are consistent with each other by construction.

Verification needs the public keys only, never a decryption key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from clinical_mlops.errors import UnknownEntryType
from clinical_mlops.ledger.entries import (
    Checkpoint,
    StoredEntry,
    entry_signing_message,
    leaf_bytes,
    schema_by_id,
)
from clinical_mlops.ledger.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from clinical_mlops.ledger.store import CHUNK, LedgerStore

__all__ = ["Problem", "VerifyReport", "verify_ledger"]

_CHUNK_LEVEL = CHUNK.bit_length() - 1


@dataclass(frozen=True)
class Problem:
    """One failed check: which check, at which seq (None for a checkpoint), and why."""

    check: str
    seq: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "seq": self.seq, "message": self.message}


@dataclass
class VerifyReport:
    """The outcome of a verification."""

    entries: int = 0
    checkpoints: int = 0
    root: str = EMPTY_ROOT.hex()
    problems: list[Problem] = field(default_factory=list)
    complete: bool = True  # False when fail_fast stopped early

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "first_bad_seq": self.first_bad_seq,
            "root": self.root,
            "complete": self.complete,
            "problems": [p.to_json() for p in self.problems[:100]],
            "problem_count": len(self.problems),
        }


class _Stop(Exception):
    pass


def _text(value: Any, column: str) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"column {column} is not valid UTF-8") from None
    if not isinstance(value, str):
        raise ValueError(f"column {column} holds {type(value).__name__}, not text")
    return value


def _opt_text(value: Any, column: str) -> str | None:
    return None if value is None else _text(value, column)


def parse_row(row: Any) -> StoredEntry:
    """Return the row as a StoredEntry; raise ValueError naming the malformed column."""
    m = row._mapping
    seq = m["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError(f"column seq holds {seq!r}, not an integer")
    payload = m["payload"]
    if payload is not None and not isinstance(payload, bytes | bytearray | memoryview):
        raise ValueError("column payload is not binary")
    return StoredEntry(
        seq=seq,
        time=_text(m["time"], "time"),
        type=_text(m["type"], "type"),
        schema=_text(m["schema"], "schema"),
        actor=_text(m["actor"], "actor"),
        subject=_opt_text(m["subject"], "subject"),
        key_id=_opt_text(m["key_id"], "key_id"),
        payload_hash=_text(m["payload_hash"], "payload_hash"),
        payload=None if payload is None else bytes(payload),
        public=_text(m["public"], "public"),
        prev_hash=_text(m["prev_hash"], "prev_hash"),
        leaf_hash=_text(m["leaf_hash"], "leaf_hash"),
        sig_key_id=_text(m["sig_key_id"], "sig_key_id"),
        signature=_text(m["signature"], "signature"),
    )


# -- the checks, one function each ---------------------------------------------------------
def check_sequence(entry_seq: int, expected: int) -> str | None:
    if entry_seq == expected:
        return None
    if entry_seq > expected:
        return f"entry {expected} is missing (next stored seq is {entry_seq})"
    return f"seq {entry_seq} appears out of order or twice (expected {expected})"


def check_schema(entry: StoredEntry) -> str | None:
    try:
        schema = schema_by_id(entry.schema)
    except UnknownEntryType as exc:
        return str(exc)
    if schema.type != entry.type:
        return f"schema {entry.schema} does not belong to type {entry.type!r}"
    try:
        public = json.loads(entry.public)
    except ValueError:
        return "public metadata is not JSON"
    if not isinstance(public, dict) or set(public) - schema.public:
        return f"public metadata {entry.public[:80]!r} is not allowed for {entry.schema}"
    return None


def check_leaf(entry: StoredEntry, recomputed: bytes) -> str | None:
    if entry.leaf_hash != recomputed.hex():
        return "stored leaf hash differs from the hash of the entry's columns"
    return None


def check_chain(entry: StoredEntry, previous: bytes) -> str | None:
    if entry.prev_hash != previous.hex():
        return "prev_hash does not match the previous entry's leaf hash"
    return None


def check_signature(
    entry: StoredEntry, recomputed: bytes, *, origin: str, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    key = keys.get(entry.sig_key_id)
    if key is None:
        return f"signed with unknown key id {entry.sig_key_id!r}"
    try:
        key.verify(bytes.fromhex(entry.signature),
                   entry_signing_message(origin=origin, leaf_hash_hex=recomputed.hex()))
    except (InvalidSignature, ValueError):
        return "entry signature does not verify"
    return None


def check_payload(entry: StoredEntry) -> str | None:
    if entry.payload is None:
        return None  # resolved against purge entries at the end
    if hashlib.sha256(entry.payload).hexdigest() != entry.payload_hash:
        return "payload does not hash to payload_hash"
    return None


def check_checkpoint(
    cp: Checkpoint,
    *,
    origin: str,
    size: int,
    roots: Mapping[int, bytes],
    keys: Mapping[str, Ed25519PublicKey],
) -> tuple[int | None, str] | None:
    key = keys.get(cp.key_id)
    if key is None:
        return None, f"checkpoint at size {cp.size} signed with unknown key {cp.key_id!r}"
    try:
        key.verify(bytes.fromhex(cp.signature), cp.message())
    except (InvalidSignature, ValueError):
        return None, f"checkpoint at size {cp.size} ({cp.time}): signature does not verify"
    if cp.origin != origin:
        return None, f"checkpoint at size {cp.size} belongs to another ledger ({cp.origin})"
    if cp.size > size:
        return size, (
            f"a checkpoint signed at {cp.time} covers {cp.size} entries but the ledger has "
            f"{size}: entries {size}..{cp.size - 1} were removed or the database was rolled back"
        )
    if roots.get(cp.size) is None or roots[cp.size].hex() != cp.root:
        return None, f"checkpoint at size {cp.size}: root differs from the recomputed tree"
    return None


def _purged_ranges(purges: Iterable[tuple[int, str]]) -> list[tuple[int, int, int]]:
    out = []
    for seq, public in purges:
        try:
            for start, end in json.loads(public).get("ranges", []):
                out.append((int(start), int(end), seq))
        except (ValueError, TypeError, AttributeError):
            continue
    return out


# -- the runner ----------------------------------------------------------------------------
def verify_ledger(
    store: LedgerStore,
    conn: Connection,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    trusted_checkpoints: Sequence[Checkpoint] = (),
    extra_problems: Sequence[str] = (),
    fail_fast: bool = False,
) -> VerifyReport:
    """Return the report of every check over the ledger read through ``conn``.

    ``trusted_checkpoints`` are checkpoints held outside the database (the
    checkpoint log, files from auditors); ``extra_problems`` are problems the
    caller found reading them. ``fail_fast`` stops at the first bad entry.
    """
    report = VerifyReport()
    problems = report.problems
    for message in extra_problems:
        problems.append(Problem("checkpoint", None, message))

    def fail(check: str, seq: int | None, message: str) -> None:
        problems.append(Problem(check, seq, message))
        if fail_fast:
            raise _Stop

    try:
        origin = store.origin(conn)
    except Exception as exc:  # a damaged meta table makes every check meaningless
        problems.append(Problem("row", 0, f"ledger origin unreadable: {exc}"))
        return report

    db_checkpoints: list[Checkpoint] = []
    for row in store.checkpoint_rows(conn):
        try:
            db_checkpoints.append(Checkpoint.from_json(
                {k: (_text(v, k) if k in ("origin", "root", "time", "key_id", "signature") else v)
                 for k, v in row._mapping.items() if k != "id"}))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(Problem("checkpoint", None, f"checkpoint row {row.id}: {exc}"))
    all_checkpoints = db_checkpoints + list(trusted_checkpoints)
    wanted_sizes = {cp.size for cp in all_checkpoints}
    roots: dict[int, bytes] = {}
    if 0 in wanted_sizes:
        roots[0] = EMPTY_ROOT

    stored_chunks: dict[int, str] = {}
    for idx, value in store.chunk_rows(conn):
        try:
            stored_chunks[int(idx)] = _text(value, "hash")
        except ValueError:
            stored_chunks[int(idx)] = "<unreadable>"

    def on_chunk(_level: int, index: int, value: bytes) -> None:
        if stored_chunks.pop(index, None) != value.hex():
            fail("chunk", index * CHUNK,
                 f"cached hash of leaves {index * CHUNK}..{(index + 1) * CHUNK - 1} is wrong "
                 "or missing")

    tree = CompactRange(report_level=_CHUNK_LEVEL, on_complete=on_chunk)
    previous = EMPTY_ROOT
    missing_payloads: list[int] = []
    purges: list[tuple[int, str]] = []
    expected = 0
    try:
        for row in store.raw_rows(conn):
            seq_value = row._mapping["seq"]
            try:
                entry = parse_row(row)
            except ValueError as exc:
                fail("row", expected, f"entry {expected}: {exc}")
                expected += 1
                continue
            message = check_sequence(entry.seq, expected)
            if message:
                fail("sequence", min(entry.seq, expected), message)
                expected = max(expected, entry.seq)
            recomputed = leaf_hash(leaf_bytes(entry.leaf_fields()))
            for check, message_or_none in (
                ("schema", check_schema(entry)),
                ("leaf", check_leaf(entry, recomputed)),
                ("chain", check_chain(entry, previous)),
                ("signature", check_signature(entry, recomputed, origin=origin,
                                              keys=public_keys)),
                ("payload", check_payload(entry)),
            ):
                if message_or_none:
                    fail(check, entry.seq, f"entry {entry.seq}: {message_or_none}")
            if entry.payload is None:
                missing_payloads.append(entry.seq)
            if entry.type == "purge":
                purges.append((entry.seq, entry.public))
            previous = recomputed
            tree.append(recomputed)
            if tree.size in wanted_sizes:
                roots[tree.size] = tree.root()
            expected = max(expected, int(seq_value)) + 1
            report.entries += 1
    except _Stop:
        report.complete = False
        return report

    size = tree.size
    report.root = tree.root().hex()
    try:
        for index in sorted(stored_chunks):
            fail("chunk", index * CHUNK, f"cached chunk {index} has no matching leaves")
        ranges = _purged_ranges(purges)
        for seq in missing_payloads:
            if not any(start <= seq < end and seq < by for start, end, by in ranges):
                fail("payload", seq, f"entry {seq}: payload removed without a purge entry")
    except _Stop:
        report.complete = False
        return report

    for cp in all_checkpoints:
        outcome = check_checkpoint(cp, origin=origin, size=size, roots=roots, keys=public_keys)
        if outcome is None:
            report.checkpoints += 1
        else:
            problems.append(Problem("checkpoint", outcome[0], outcome[1]))
    return report
