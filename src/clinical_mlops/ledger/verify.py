"""Verification: recompute everything the ledger claims and name the first bad seq.

One function per check, run in order by :func:`verify_ledger` (the shape of
sigstore/rekor's ``pkg/verify``):

1. ``meta``       the ledger's origin and format are intact
2. ``sequence``   seqs are exactly 0, 1, 2, ... (deletion, reordering, insertion)
3. ``row``        every column is present, well-formed and stored as its type
                  (an entry whose cells were re-stored as another storage class,
                  NULL, or bytes that are not UTF-8 is reported at its seq; when
                  its values can still be read, every other check runs on them)
4. ``schema``     the schema id is declared and matches the type; public keys allowed
5. ``leaf``       the stored leaf hash equals the hash recomputed from the columns
6. ``chain``      each entry's ``prev`` is the previous entry's recomputed leaf hash
7. ``payload``    the payload hashes to ``payload_hash``; a missing payload is
                  covered by a later purge entry
8. ``chunk``      every cached 256-leaf subtree hash equals the recomputed one
9. ``checkpoint`` every checkpoint (database, checkpoint log, any the caller
                  trusts) is validly signed, for this ledger, no larger than the
                  ledger, and its root equals the root recomputed at its size.
                  All roots come from one set of leaves, so the checkpoints are
                  consistent with each other by construction. Checkpoints a
                  witness cosigned are checked the same way and reported as
                  ``witness`` problems (a tail cut, a rollback, a rewrite).
10. ``signature`` each seal's Ed25519 signature over its body. The last entry of
                  every write transaction is signed; the entries before it in
                  the same transaction have an empty signature and are sealed by
                  it through the hash chain (its body holds the previous leaf
                  hash). A run of unsigned entries with no seal after it — the
                  end of the ledger cut off mid-transaction — is a problem.

Why signatures are checked last and not always for every entry: a leaf covers
every stored byte of its row (body, key id and signature), so when the root
recomputed at a checkpoint's size equals that validly signed checkpoint's root,
every entry below it is authenticated by the checkpoint. Entry signatures are
then checked only where no checkpoint vouches for them: entries after the last
good checkpoint, and the span before a failing checkpoint or a failed check
(which is also what pins down the *first* bad seq when an attacker rewrote an
entry and patched the chain after it). ``thorough=True`` checks every entry
signature anyway.

A cached block hash that no longer matches is blamed on the first bad entry at or
before the block (the entry, not the block, is what changed); only when every
entry verifies is the block cache itself reported, with no seq. Nothing stored
makes verification raise: every oddity is a problem in the report.

Verification needs the public keys only, never a decryption key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from clinical_mlops.errors import UnknownEntryType
from clinical_mlops.ledger.entries import (
    Checkpoint,
    StoredEntry,
    body_bytes,
    entry_signing_message,
    leaf_bytes,
    schema_by_id,
)
from clinical_mlops.ledger.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from clinical_mlops.ledger.store import (
    CHECKPOINT_COLUMNS,
    CHUNK,
    ENTRY_COLUMNS,
    FORMAT_VERSION,
    LedgerStore,
    storage_class,
)

__all__ = [
    "ENTRY_STORAGE",
    "Problem",
    "RowReading",
    "VerifyReport",
    "check_entry_signature",
    "parse_row",
    "read_row",
    "verify_ledger",
]

_CHUNK_LEVEL = CHUNK.bit_length() - 1
_HEX64 = re.compile(r"[0-9a-f]{128}")
_LEAF_HEX = re.compile(r"[0-9a-f]{64}")
_PENDING_LIMIT = 50_000
#: what stands in the tree for an entry whose leaf can be neither recomputed nor read
_UNREADABLE_LEAF = hashlib.sha256(b"clinical-mlops: unreadable ledger entry").digest()
#: checks that name an entry (a block or checkpoint failing is blamed on the first of these)
_ENTRY_CHECKS = frozenset({"row", "sequence", "schema", "leaf", "chain", "payload", "signature"})

_TEXT = frozenset({"text"})
_TEXT_OR_NULL = frozenset({"text", "null"})
#: the storage classes (SQLite's names, see ``store.storage_class``) each entry column may hold
ENTRY_STORAGE: dict[str, frozenset[str]] = {name: _TEXT for name in ENTRY_COLUMNS} | {
    "seq": frozenset({"integer"}),
    "subject": _TEXT_OR_NULL,
    "key_id": _TEXT_OR_NULL,
    "payload": frozenset({"blob", "null"}),
}
_CHECKPOINT_STORAGE = ("integer", "text", "text", "text", "text", "text")


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
    signatures_checked: int = 0
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
            "signatures_checked": self.signatures_checked,
            "complete": self.complete,
            "problems": [p.to_json() for p in self.problems[:100]],
            "problem_count": len(self.problems),
        }


class _Stop(Exception):
    pass


def _text(value: Any, column: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"column {column} is not valid UTF-8") from None
    raise ValueError(f"column {column} holds {type(value).__name__}, not text")


@dataclass(frozen=True)
class RowReading:
    """One stored entry row as read: the entry (None when unreadable), its seq, what is odd."""

    entry: StoredEntry | None
    seq: int | None
    problems: list[str]
    stored_leaf: bytes | None = None


def _int_value(value: Any, column: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bytes | bytearray | memoryview | str):
        text = value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
        if text.strip().lstrip("-").isdigit():
            return int(text)
    elif isinstance(value, float | Decimal):
        try:
            if value == int(value):
                return int(value)
        except (ValueError, OverflowError, ArithmeticError):  # NaN, infinity
            pass
    raise ValueError(f"column {column} holds {_show(value)}, not an integer")


def _payload_value(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if type(value) is int or isinstance(value, float | Decimal):
        return str(value).encode("ascii")
    raise ValueError(f"column payload holds {type(value).__name__}, not bytes")


def _text_value(value: Any, column: str, *, nullable: bool) -> str | None:
    if value is None:
        if nullable:
            return None
        raise ValueError(f"column {column} is NULL")
    if type(value) is int or isinstance(value, float | Decimal):
        return str(value)
    return _text(value, column)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_row(values: Sequence[Any], classes: Sequence[str]) -> RowReading:
    """Return a stored row (``ENTRY_COLUMNS`` order, with each value's storage class) as read.

    Every cell stored as another class than its column's (``ENTRY_STORAGE``) is a
    problem. A value that can still be read (text stored as a blob, a payload stored
    as text, a number in a text column) is read, so the entry's other checks still
    run and find whether its content changed; one that cannot (NULL in a required
    column, bytes that are not UTF-8, a seq that is not a number) leaves the entry
    unreadable (``entry`` None), with its stored leaf hash when that is readable.
    """
    problems: list[str] = []
    fields: dict[str, Any] = {}
    readable = True
    for name, value, cls in zip(ENTRY_COLUMNS, values, classes, strict=True):
        allowed = ENTRY_STORAGE[name]
        if cls not in allowed:
            problems.append(
                f"column {name} is stored as {cls}, expected {' or '.join(sorted(allowed))}"
            )
        try:
            if name == "seq":
                fields[name] = _int_value(value, name)
            elif name == "payload":
                fields[name] = _payload_value(value)
            else:
                fields[name] = _text_value(value, name, nullable="null" in allowed)
        except ValueError as exc:
            readable = False
            if cls in allowed or cls == "blob":  # else the storage problem above says it
                problems.append(str(exc))
    seq = fields.get("seq")
    if not readable:
        leaf = fields.get("leaf_hash")
        stored = bytes.fromhex(leaf) if leaf and _LEAF_HEX.fullmatch(leaf) else None
        return RowReading(entry=None, seq=seq, problems=problems, stored_leaf=stored)
    return RowReading(entry=StoredEntry(**fields), seq=seq, problems=problems)


def parse_row(values: Sequence[Any], classes: Sequence[str] | None = None) -> StoredEntry:
    """Return a row (columns in ``ENTRY_COLUMNS`` order) as a StoredEntry.

    ``classes`` are the values' storage classes as read (``LedgerStore.raw_rows``);
    without them they are taken from the values' types. Raises ValueError naming
    every malformed column: unlike :func:`read_row`, nothing odd is accepted.
    """
    reading = read_row(values, classes or tuple(storage_class(v) for v in values))
    if reading.problems or reading.entry is None:
        where = f"entry {reading.seq}" if reading.seq is not None else "an entry"
        raise ValueError(f"{where}: {'; '.join(reading.problems) or 'unreadable'}")
    return reading.entry


# -- the checks, one function each ---------------------------------------------------------
def check_meta(rows: Sequence[tuple[Sequence[Any], Sequence[str]]]) -> tuple[str, str | None]:
    """Return (origin, problem): the meta table must hold exactly origin and format 1, as text.

    The origin is "" when it cannot be trusted (nothing else can be checked then);
    a problem with an origin is a storage oddity that leaves the values readable.
    """
    try:
        meta = {_text(k, "key"): _text(v, "value") for (k, v), _ in rows}
    except ValueError as exc:
        return "", f"ledger_meta: {exc}"
    if set(meta) != {"origin", "format"}:
        return "", f"ledger_meta holds keys {sorted(meta)}, expected origin and format"
    if meta["format"] != FORMAT_VERSION:
        return "", f"ledger format {meta['format']!r} is not {FORMAT_VERSION!r}"
    odd = sorted({c for _, classes in rows for c in classes} - {"text"})
    if odd:
        return meta["origin"], f"ledger_meta holds values stored as {', '.join(odd)}, not text"
    return meta["origin"], None


def check_sequence(entry_seq: int, expected: int) -> str | None:
    if entry_seq == expected:
        return None
    if entry_seq > expected:
        return f"entry {expected} is missing (next stored seq is {entry_seq})"
    return f"seq {entry_seq} appears out of order or twice (expected {expected})"


_SCHEMA_CACHE: dict[tuple[str, str, str], str | None] = {}


def check_schema(entry: StoredEntry) -> str | None:
    cache_key = (entry.type, entry.schema, entry.public)
    if cache_key in _SCHEMA_CACHE:
        return _SCHEMA_CACHE[cache_key]
    result = _check_schema(entry)
    if len(_SCHEMA_CACHE) < 10_000:
        _SCHEMA_CACHE[cache_key] = result
    return result


def _check_schema(entry: StoredEntry) -> str | None:
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


def check_payload(entry: StoredEntry) -> str | None:
    if entry.payload is None:
        return None  # resolved against purge entries at the end
    if hashlib.sha256(entry.payload).hexdigest() != entry.payload_hash:
        return "payload does not hash to payload_hash"
    return None


def check_entry_signature(
    *,
    body_hash_hex: str,
    sig_key_id: str,
    signature: str,
    origin: str,
    keys: Mapping[str, Ed25519PublicKey],
) -> str | None:
    """Return None when the entry signature verifies, else what is wrong."""
    key = keys.get(sig_key_id)
    if key is None:
        return f"signed with unknown key id {sig_key_id!r}"
    if not _HEX64.fullmatch(signature):
        return "signature is not 64 bytes of lower-case hex"
    try:
        key.verify(
            bytes.fromhex(signature),
            entry_signing_message(origin=origin, body_hash_hex=body_hash_hex),
        )
    except InvalidSignature:
        return "entry signature does not verify"
    return None


def check_checkpoint_signature(
    cp: Checkpoint, *, origin: str, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Return None when the checkpoint is this ledger's and validly signed, else why not."""
    key = keys.get(cp.key_id)
    if key is None:
        return f"checkpoint at size {cp.size} signed with unknown key {cp.key_id!r}"
    if not _HEX64.fullmatch(cp.signature):
        return f"checkpoint at size {cp.size}: signature is not lower-case hex"
    signature = bytes.fromhex(cp.signature)
    try:
        key.verify(signature, cp.message())
    except (InvalidSignature, ValueError):
        try:  # a checkpoint signed before the note format
            key.verify(signature, cp.legacy_message())
        except InvalidSignature:
            return f"checkpoint at size {cp.size} ({cp.time}): signature does not verify"
    if cp.origin != origin:
        return f"checkpoint at size {cp.size} belongs to another ledger ({cp.origin})"
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
    witnessed: Sequence[tuple[str, Checkpoint]] = (),
    extra_problems: Sequence[str] = (),
    fail_fast: bool = False,
    thorough: bool = False,
) -> VerifyReport:
    """Return the report of every check over the ledger read through ``conn``.

    ``trusted_checkpoints`` are checkpoints held outside the database (the
    checkpoint log, files from auditors); ``extra_problems`` are problems the
    caller found reading them. ``witnessed`` are (witness, checkpoint) pairs a witness
    cosigned: one larger than the ledger is a tail cut (when a local checkpoint covers
    it too) or a rollback of the database together with its checkpoint log (when it is
    newer than every local one); one whose root differs is a rewritten ledger. ``fail_fast`` stops at the first bad entry (the
    seq named is still the first bad one); ``thorough`` checks every entry
    signature even where a checkpoint already authenticates the entry.
    """
    report = VerifyReport()
    problems = report.problems
    for extra in extra_problems:
        problems.append(Problem("checkpoint", None, extra))

    origin, meta_problem = check_meta(store.raw_meta(conn))
    if meta_problem:
        if not origin:
            # A damaged meta table makes every signature check meaningless.
            problems.append(Problem("meta", 0, meta_problem))
            return report
        problems.append(Problem("meta", None, meta_problem))

    # Checkpoints: signatures checked once each, grouped by size.
    db_checkpoints: list[Checkpoint] = []
    for values, classes in store.raw_checkpoints(conn):
        row = dict(zip(CHECKPOINT_COLUMNS, values, strict=True))
        where = f"checkpoint row at size {_show(row['size'])}"
        if tuple(classes) != _CHECKPOINT_STORAGE:
            odd = [
                f"{name} is stored as {cls}, expected {want}"
                for name, cls, want in zip(
                    CHECKPOINT_COLUMNS, classes, _CHECKPOINT_STORAGE, strict=True
                )
                if cls != want
            ]
            problems.append(Problem("checkpoint", None, f"{where}: {'; '.join(odd)}"))
        try:
            db_checkpoints.append(
                Checkpoint.from_json(
                    {
                        k: (_text_value(v, k, nullable=False) if k != "size" else _int_value(v, k))
                        for k, v in row.items()
                    }
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(Problem("checkpoint", None, f"{where}: {exc}"))
    by_size: dict[int, list[Checkpoint]] = {}
    seen: set[tuple[str, int, str, str, str, str]] = set()
    local_sizes = [cp.size for cp in [*db_checkpoints, *trusted_checkpoints]]
    witness_of = {id(cp): name for name, cp in witnessed}
    for cp in [*db_checkpoints, *trusted_checkpoints, *(cp for _, cp in witnessed)]:
        ident = (cp.origin, cp.size, cp.root, cp.time, cp.key_id, cp.signature)
        if ident in seen:
            continue
        seen.add(ident)
        bad = check_checkpoint_signature(cp, origin=origin, keys=public_keys)
        if bad and id(cp) in witness_of:
            problems.append(Problem("witness", None, f"witness {witness_of[id(cp)]}: {bad}"))
        elif bad:
            problems.append(Problem("checkpoint", None, bad))
        else:
            by_size.setdefault(cp.size, []).append(cp)
    if fail_fast and problems:
        report.complete = False
        return report

    stored_chunks: dict[int, str] = {}
    for (idx, value), classes in store.raw_chunks(conn):
        try:
            index = _int_value(idx, "idx")
        except ValueError:
            problems.append(Problem("chunk", None, f"cached chunk row with index {_show(idx)}"))
            continue
        odd = [
            f"{name} is stored as {cls}, expected {want}"
            for name, cls, want in zip(("idx", "hash"), classes, ("integer", "text"), strict=True)
            if cls != want
        ]
        if odd:
            problems.append(Problem("chunk", None, f"cached chunk {index}: {'; '.join(odd)}"))
        try:
            stored_chunks[index] = _text(value, "hash")
        except ValueError:
            stored_chunks[index] = "<unreadable>"

    # Entries since the last checkpoint that authenticated them: (seq, body hash, key, sig).
    pending: list[tuple[int, str, str, str]] = []

    def first_bad_entry(
        lo: int = 0, hi: int | None = None, *, signatures: bool = True
    ) -> int | None:
        """Return the first seq in [lo, hi) an entry check has reported, if any."""
        return min(
            (
                p.seq
                for p in problems
                if p.check in _ENTRY_CHECKS
                and (signatures or p.check != "signature")
                and p.seq is not None
                and lo <= p.seq
                and (hi is None or p.seq < hi)
            ),
            default=None,
        )

    def settle_pending(before: int | None, *, final: bool = False) -> int | None:
        """Check the pending seals below ``before``; return the first bad seq.

        An entry with an empty signature is sealed by the next signed entry and is
        settled together with it; a run still waiting for its seal stays pending,
        except at the end of the ledger (``final``), where it is a problem: the
        entry that sealed it is gone.
        """
        limit = len(pending)
        if before is not None:
            limit = next((i for i, it in enumerate(pending) if it[0] >= before), len(pending))
        cut = limit
        if not final:
            while cut > 0 and pending[cut - 1][3] == "":
                cut -= 1
        settle, keep = pending[:cut], pending[cut:]
        first_bad = None
        run_start: int | None = None
        for seq, body_hash, key_id, signature in settle:
            if signature == "":
                run_start = seq if run_start is None else run_start
                continue
            report.signatures_checked += 1
            bad = check_entry_signature(
                body_hash_hex=body_hash,
                sig_key_id=key_id,
                signature=signature,
                origin=origin,
                keys=public_keys,
            )
            if bad:
                span = seq if run_start is None else run_start
                # An entry of the run whose content visibly changed (its leaf or row check
                # failed) explains the broken seal; as with ``fail_fast``, which stops there,
                # that entry is named. Only a run whose every entry looks intact (a forged or
                # re-chained run) is named from its start.
                changed = first_bad_entry(span, seq + 1, signatures=False)
                span = span if changed is None else changed
                where = (
                    f"entry {seq}"
                    if run_start is None
                    else f"entries {run_start}..{seq} (sealed by entry {seq})"
                )
                problems.append(Problem("signature", span, f"{where}: {bad}"))
                if first_bad is None:
                    first_bad = span
                    if fail_fast:
                        break
            run_start = None
        else:
            if run_start is not None:
                problems.append(
                    Problem(
                        "signature",
                        run_start,
                        f"entries {run_start}..{settle[-1][0]} carry no signature and nothing "
                        "seals them: the entry whose signature sealed their transaction is "
                        "missing (truncated or rolled back)",
                    )
                )
                first_bad = run_start if first_bad is None else first_bad
        pending[:] = keep
        return first_bad

    def fail(check: str, seq: int | None, message: str) -> None:
        # Anything unauthenticated before this point may be the real first bad entry.
        if fail_fast and settle_pending(seq) is not None:
            raise _Stop
        problems.append(Problem(check, seq, message))
        if fail_fast:
            raise _Stop

    bad_blocks: list[int] = []

    def on_chunk(_level: int, index: int, value: bytes) -> None:
        if stored_chunks.pop(index, None) != value.hex():
            # A forged leaf in this block also breaks its cached hash: blame the leaf if so.
            if settle_pending((index + 1) * CHUNK) is not None and fail_fast:
                raise _Stop
            # Blamed once every entry is checked (see ``blame_blocks``): a changed entry
            # in the block, or one before it that shifted the leaves, is found by the
            # entry checks, some only when a later seal is checked.
            bad_blocks.append(index)

    def blame_blocks() -> None:
        first = first_bad_entry()
        for index in bad_blocks:
            start, end = index * CHUNK, (index + 1) * CHUNK
            if first is not None and first < end:
                problems.append(
                    Problem(
                        "chunk",
                        first,
                        f"cached hash of leaves {start}..{end - 1} differs from the leaves "
                        f"as stored (entry {first} is bad)",
                    )
                )
            else:
                problems.append(
                    Problem(
                        "chunk",
                        None,
                        f"cached hash of leaves {start}..{end - 1} is wrong or missing; "
                        "the entries themselves verify",
                    )
                )
        bad_blocks.clear()

    def at_checkpoint_size(size: int, root: bytes) -> None:
        matching = [cp for cp in by_size.get(size, []) if cp.root == root.hex()]
        wrong = [cp for cp in by_size.get(size, []) if cp.root != root.hex()]
        for cp in wrong:
            first = settle_pending(None)
            if first is None:
                earlier = first_bad_entry()
                first = earlier if earlier is not None and earlier < size else None
                why = (
                    " although every entry signature verifies (a fork)"
                    if first is None
                    else f" (entry {first} is bad)"
                )
            else:
                why = ""
            witness = witness_of.get(id(cp))
            fail(
                "checkpoint" if witness is None else "witness",
                first,
                (f"witness {witness} cosigned " if witness else "")
                + f"checkpoint at size {size} ({cp.time}): signed root differs from the "
                f"recomputed tree{why}",
            )
        report.checkpoints += len(matching)
        if matching and not wrong:
            pending.clear()  # authenticated by a valid checkpoint

    tree = CompactRange(report_level=_CHUNK_LEVEL, on_complete=on_chunk)
    if 0 in by_size:
        at_checkpoint_size(0, EMPTY_ROOT)
    previous = EMPTY_ROOT
    missing_payloads: list[int] = []
    purges: list[tuple[int, str]] = []
    expected = 0
    rows = store.raw_rows(conn)
    try:
        for values, classes in rows:
            reading = read_row(values, classes)
            if reading.seq is None:
                # Which entry this is cannot be told: it is left out, and the sequence
                # check names the seq that is then missing.
                fail(
                    "row",
                    None,
                    f"a row with no usable seq ({'; '.join(reading.problems)}) is not counted "
                    "as an entry",
                )
                continue
            seq = reading.seq
            order_problem = check_sequence(seq, expected)
            if order_problem:
                fail("sequence", expected, order_problem)
                expected = max(expected, seq)
            if reading.problems:
                fail("row", seq, f"entry {seq}: {'; '.join(reading.problems)}")
            entry = reading.entry
            if entry is None:
                # Nothing to recompute: the stored leaf (when readable) keeps the chain, the
                # blocks and the checkpoints after this entry checkable.
                recomputed = reading.stored_leaf or _UNREADABLE_LEAF
            else:
                body = body_bytes(entry.body_fields())
                recomputed = leaf_hash(
                    leaf_bytes(body, sig_key_id=entry.sig_key_id, signature=entry.signature)
                )
                for check, outcome in (
                    ("schema", check_schema(entry)),
                    ("leaf", check_leaf(entry, recomputed)),
                    ("chain", check_chain(entry, previous)),
                    ("payload", check_payload(entry)),
                ):
                    if outcome:
                        fail(check, entry.seq, f"entry {entry.seq}: {outcome}")
                pending.append(
                    (entry.seq, hashlib.sha256(body).hexdigest(), entry.sig_key_id, entry.signature)
                )
                if (
                    (thorough or len(pending) >= _PENDING_LIMIT)
                    and settle_pending(None) is not None
                    and fail_fast
                ):
                    raise _Stop
                if entry.payload is None:
                    missing_payloads.append(entry.seq)
                if entry.type == "purge":
                    purges.append((entry.seq, entry.public))
            previous = recomputed
            tree.append(recomputed)
            if tree.size in by_size:
                at_checkpoint_size(tree.size, tree.root())
            expected = max(expected, seq) + 1
            report.entries += 1

        size = tree.size
        report.root = tree.root().hex()
        settle_pending(None, final=True)  # the tail no checkpoint covers
        if fail_fast and problems:
            raise _Stop
        for index in sorted(stored_chunks):
            fail("chunk", None, f"cached chunk {index} has no matching leaves")
        ranges = _purged_ranges(purges)
        for seq in missing_payloads:
            if not any(start <= seq < end and seq < by for start, end, by in ranges):
                fail("payload", seq, f"entry {seq}: payload removed without a purge entry")
        for cp_size in sorted(s for s in by_size if s > size):
            cp = by_size[cp_size][0]
            witness = witness_of.get(id(cp))
            if witness is not None and all(id(c) in witness_of for c in by_size[cp_size]):
                newest = max(local_sizes, default=0)
                what = (
                    f"entries {size}..{cp_size - 1} are gone and no local checkpoint covers "
                    f"them (the newest covers {newest}): the database was cut after its newest "
                    "checkpoint, or rolled back together with its checkpoint log"
                    if cp_size > newest
                    else f"entries {size}..{cp_size - 1} were cut from the database"
                )
                fail(
                    "witness",
                    size,
                    f"witness {witness} cosigned a checkpoint of {cp_size} entries ({cp.time}) "
                    f"but the ledger has {size}: {what}",
                )
                continue
            fail(
                "checkpoint",
                size,
                f"a checkpoint signed at {cp.time} covers {cp.size} entries but the ledger has "
                f"{size}: entries {size}..{cp.size - 1} were removed or the database was "
                "rolled back",
            )
    except _Stop:
        report.complete = False
    finally:
        rows.close()  # releases a server-side cursor when stopping early
    blame_blocks()
    return report
