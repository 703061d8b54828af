"""Unique keys of ledger entries, enforced by the database: one served prediction per request
id, one decision per case and one outcome per prediction, one correction per corrected record.

Some entry types *claim* a key that no other entry may hold (:func:`unique_keys`):

==============  ===============================================  =============================
scope           claimed by                                       key
==============  ===============================================  =============================
request         ``inference``, ``fallback_served``               the request id
decision        ``override`` with action accept or override      the case's audit seq
senior_review   ``override`` with action escalate                the case's audit seq
outcome         ``outcome``                                      the prediction's audit seq
supersedes      a correction (``override`` or ``outcome``        the seq of the entry corrected
                carrying ``corrects``)
==============  ===============================================  =============================

A case is named by the audit seq of its first prediction: the override's ``case_seq``
when it carries one (a case that groups several predictions of one patient and encounter,
``governance.queue``), else its ``prediction_seq``. Whichever prediction of the case a
decision names, it claims the same key, so a case takes one decision.

A claim is a row of ``ledger_claims`` whose primary key is (scope, stored key),
inserted in the same transaction as its entry. A second writer's insert violates the
primary key, its whole transaction rolls back, and nothing of it is written: no seq is
used and no leaf added, so the chain and the tree are untouched
(``Ledger.append_batch`` raises :class:`~clinical_mlops.errors.AlreadyRecorded`). The
rule therefore holds across threads, processes and hosts sharing the database, whatever
front end wrote the entry.

How a key is stored (:func:`stored_key`) decides what an insert costs: an index insert
dirties the page its key sorts into, and SQLite's write-ahead log writes every page a
transaction dirtied, whole (16 KiB in a ledger). Keys that sort in the order they arrive
share the last pages; random keys each dirty a page of their own once the index is large.
So a prediction's seq is stored as 8 big-endian bytes (decisions and outcomes name recent
predictions), a request id this service generated (:func:`new_request_ids`: ``req_``, the
time in milliseconds, random bits) as its own ASCII text, which holds nothing of a client's
and increases with time, and any other request id — a client's text — as the first 16
bytes of its SHA-256 (an accidental collision among a billion ids has odds of about 1e-21).
The table is an index, not a record: the entries are the record.

A correction supersedes one entry and an entry can be superseded once, so the
corrections of a record form a chain whose end is the record's current value
(:func:`latest`), and two concurrent corrections of the same value cannot both succeed.

A ledger written before claims existed is indexed once, on its first write that claims a
key or by ``clinical-mlops audit migrate`` (``Ledger.ensure_claims``): the first entry
holding a key keeps it, and keys held twice are reported (:class:`ClaimsIndex`) rather
than failing; the ledger stays append-only, so those entries remain as they were.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinical_mlops.database import driver_executemany
from clinical_mlops.errors import EntryPayloadInvalid

__all__ = [
    "CLAIMING_TYPES",
    "INDEX_VERSION",
    "SCOPES",
    "ClaimsIndex",
    "IndexBuilder",
    "claims",
    "claims_built",
    "holders",
    "insert_claims",
    "latest",
    "new_request_ids",
    "read_index",
    "stored_key",
    "unique_keys",
]

#: scope -> what it keeps unique
SCOPES: dict[str, str] = {
    "request": "one served prediction per request id",
    "decision": "one accept or override per case",
    "senior_review": "one referral to senior review per case",
    "outcome": "one outcome per prediction",
    "supersedes": "one correction per corrected record",
}
#: the entry types that can claim a key
CLAIMING_TYPES = ("inference", "fallback_served", "override", "outcome")
#: version of the claims index a build writes
INDEX_VERSION = 1
#: keys held twice listed in a build report (all are counted)
REPORTED_DUPLICATES = 1000

claims_metadata = sa.MetaData()
claims = sa.Table(
    "ledger_claims",
    claims_metadata,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("stored_key", sa.LargeBinary(64), primary_key=True),
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    # the primary key is the table: one b-tree to insert into instead of a table and an index
    sqlite_with_rowid=False,
)
claims_built = sa.Table(
    "ledger_claims_built",
    claims_metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("entries", sa.BigInteger, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
)
_INSERT = "INSERT INTO ledger_claims (scope, stored_key, seq) VALUES (?, ?, ?)"
_GENERATED = re.compile(r"req_[0-9a-f]{32}")
_BY_SEQ = frozenset(("decision", "senior_review", "outcome", "supersedes"))


def unique_keys(entry_type: str, payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return the (scope, key) pairs an entry of ``entry_type`` with ``payload`` claims.

    One function for new writes and for indexing old ledgers, so both apply the same rule.
    """
    if entry_type == "inference" or entry_type == "fallback_served":
        request_id = payload.get("request_id")
        return (("request", request_id),) if isinstance(request_id, str) else ()
    if entry_type != "override" and entry_type != "outcome":
        return ()
    corrects = payload.get("corrects")
    if corrects is not None:
        return (("supersedes", _seq(entry_type, "corrects", corrects)),)
    target = _seq(entry_type, "prediction_seq", payload.get("prediction_seq"))
    if entry_type == "outcome":
        return (("outcome", target),)
    if payload.get("case_seq") is not None:
        target = _seq(entry_type, "case_seq", payload["case_seq"])
    return (("senior_review" if payload.get("action") == "escalate" else "decision", target),)


def _seq(entry_type: str, name: str, value: Any) -> str:
    """Return ``value`` as a seq key; raise EntryPayloadInvalid when it cannot be a seq."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise EntryPayloadInvalid(f"{entry_type} entry: {name!r} must be the seq of a ledger entry")
    return str(value)


def new_request_ids(count: int) -> list[str]:
    """Return ``count`` fresh request ids: ``req_``, the time in ms (12 hex), 80 random bits.

    The random bits keep ids unique and unguessable; the time first makes them sort in
    the order they are made, so their index entries are appended, not scattered (see
    above). One read of the clock and of the system's random source per call.
    """
    stamp = f"req_{time.time_ns() // 1_000_000:012x}"
    noise = secrets.token_bytes(10 * count).hex()
    return [stamp + noise[20 * i : 20 * i + 20] for i in range(count)]


def stored_key(scope: str, key: str) -> bytes:
    """Return ``key`` of ``scope`` as ``ledger_claims`` stores it (see the module docstring)."""
    if scope in _BY_SEQ:
        return int(key).to_bytes(8, "big")
    if _GENERATED.fullmatch(key):
        return key.encode("ascii")
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:16]


def insert_claims(conn: Connection, rows: Sequence[tuple[str, bytes, int]]) -> None:
    """Insert (scope, key hash, seq) rows; a key already held raises ``IntegrityError``."""
    driver_executemany(conn, _INSERT, rows)


def holders(conn: Connection, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Return (scope, key) -> seq of the entry holding it, for the pairs that are held."""
    by_hash: dict[tuple[str, bytes], tuple[str, str]] = {}
    for scope, key in pairs:
        by_hash[(scope, stored_key(scope, key))] = (scope, key)
    found: dict[tuple[str, str], int] = {}
    wanted: dict[str, list[bytes]] = {}
    for scope, digest in by_hash:
        wanted.setdefault(scope, []).append(digest)
    for scope, digests in wanted.items():
        for i in range(0, len(digests), 500):
            rows = conn.execute(
                sa.select(claims.c.stored_key, claims.c.seq).where(
                    claims.c.scope == scope, claims.c.stored_key.in_(digests[i : i + 500])
                )
            )
            for digest, seq in rows:
                found[by_hash[(scope, bytes(digest))]] = int(seq)
    return found


def latest(conn: Connection, seq: int) -> int:
    """Return the seq of the newest correction in the chain starting at entry ``seq``."""
    while True:
        nxt = holders(conn, [("supersedes", str(seq))]).get(("supersedes", str(seq)))
        if nxt is None:
            return seq
        seq = nxt


@dataclass(frozen=True)
class ClaimsIndex:
    """The build of a ledger's claims index: when, over how many entries, what it found.

    ``duplicates`` lists keys that more than one entry held when the index was built
    (entries written before uniqueness was enforced): ``scope``, ``kept`` (the first entry,
    which holds the key), ``also`` (the later ones) and, for the per-prediction scopes,
    ``prediction``. ``unreadable`` counts entries whose payload could not be opened
    (erased or purged): their keys could not be claimed.
    """

    version: int
    time: str
    entries: int
    claimed: int = 0
    unreadable: int = 0
    duplicate_entries: int = 0
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    built_now: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "time": self.time,
            "entries": self.entries,
            "claimed": self.claimed,
            "unreadable": self.unreadable,
            "duplicate_entries": self.duplicate_entries,
            "duplicates": self.duplicates,
            "built_now": self.built_now,
        }

    def report_text(self) -> str:
        """Return the build in words, naming every reported key held twice."""
        lines = [
            f"claims index v{self.version} built {self.time} over {self.entries} entries: "
            f"{self.claimed} keys claimed, {self.unreadable} entries unreadable (erased or "
            f"purged; their keys are not claimed)"
        ]
        if self.duplicate_entries:
            lines.append(
                f"{self.duplicate_entries} entries written before uniqueness was enforced "
                "repeat a key an earlier entry holds; the earlier entry keeps it, the later "
                "ones stay in the ledger as written:"
            )
            for d in self.duplicates:
                what = SCOPES.get(d["scope"], d["scope"])
                about = f" of prediction {d['prediction']}" if "prediction" in d else ""
                lines.append(
                    f"  {d['scope']}{about} ({what}): held by seq {d['kept']}, "
                    f"repeated by seq {', '.join(map(str, d['also']))}"
                )
            if len(self.duplicates) < self.duplicate_entries:
                lines.append(f"  (first {len(self.duplicates)} keys listed)")
        return "\n".join(lines)


def read_index(conn: Connection) -> ClaimsIndex | None:
    """Return the current claims build of the ledger on ``conn``, or None when never built."""
    if not sa.inspect(conn).has_table(claims_built.name):
        return None
    row = conn.execute(
        sa.select(claims_built).where(claims_built.c.version == INDEX_VERSION)
    ).first()
    if row is None:
        return None
    report = json.loads(row.report)
    return ClaimsIndex(
        version=int(row.version),
        time=str(row.time),
        entries=int(row.entries),
        claimed=int(report.get("claimed", 0)),
        unreadable=int(report.get("unreadable", 0)),
        duplicate_entries=int(report.get("duplicate_entries", 0)),
        duplicates=list(report.get("duplicates", [])),
    )


class IndexBuilder:
    """Claims of existing entries, taken in seq order, a chunk at a time (first holder wins)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.claimed = 0
        self.unreadable = 0
        self.duplicate_entries = 0
        self.duplicates: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, found: Sequence[tuple[int, str, Mapping[str, Any] | None]]) -> None:
        """Claim the keys of ``found`` (seq, type, payload or None when unreadable)."""
        wanted: list[tuple[int, str, str]] = []
        for seq, entry_type, payload in found:
            if payload is None:
                self.unreadable += 1
                continue
            try:
                keys = unique_keys(entry_type, payload)
            except (EntryPayloadInvalid, KeyError, TypeError, ValueError):
                self.unreadable += 1
                continue
            wanted += [(seq, scope, key) for scope, key in keys]
        held = holders(self.conn, [(scope, key) for _, scope, key in wanted])
        rows: list[tuple[str, bytes, int]] = []
        for seq, scope, key in wanted:
            kept = held.get((scope, key))
            if kept is None:
                held[(scope, key)] = seq
                rows.append((scope, stored_key(scope, key), seq))
                continue
            self.duplicate_entries += 1
            item = self.duplicates.get((scope, key))
            if item is None and len(self.duplicates) < REPORTED_DUPLICATES:
                item = {"scope": scope, "kept": kept, "also": []}
                if scope not in ("request", "supersedes"):
                    item["prediction"] = int(key)
                self.duplicates[(scope, key)] = item
            if item is not None:
                item["also"].append(seq)
        insert_claims(self.conn, rows)
        self.claimed += len(rows)

    def finish(self, *, time: str, entries: int) -> ClaimsIndex:
        """Record the build (in the same transaction) and return it."""
        index = ClaimsIndex(
            version=INDEX_VERSION,
            time=time,
            entries=entries,
            claimed=self.claimed,
            unreadable=self.unreadable,
            duplicate_entries=self.duplicate_entries,
            duplicates=list(self.duplicates.values()),
            built_now=True,
        )
        report = index.to_json()
        for name in ("version", "time", "entries", "built_now"):
            report.pop(name)
        self.conn.execute(
            claims_built.insert().values(
                version=INDEX_VERSION, time=time, entries=entries, report=json.dumps(report)
            )
        )
        return index
