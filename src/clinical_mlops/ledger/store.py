"""Ledger storage: the tables and the two backends (SQLite, PostgreSQL) behind one class.

The store knows nothing of keys or signatures; it keeps rows and serialises
writers. Tables::

    ledger_meta         key/value: origin (random ledger id), format version
    ledger_entries      one row per entry (see ledger.entries.StoredEntry)
    ledger_checkpoints  signed tree heads
    ledger_chunks       cached hash of every complete aligned block of 256 leaves

Chunk hashes are a cache that makes proofs and checkpoints at a million entries
cost milliseconds; ``verify`` recomputes and checks every one of them.

Verification reads every table through the ``raw_*`` methods, which return each
value with its storage class and never fail on what a cell holds (a payload
re-stored as text, a NULL, an integer where text belongs, bytes that are not UTF-8).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clinical_mlops.database import (
    driver_execute,
    driver_executemany,
    normalise_url,
    open_engine,
    probe_writable,
    sqlite_path,
    write_transaction,
)
from clinical_mlops.errors import LedgerCorrupted
from clinical_mlops.ledger.entries import Checkpoint
from clinical_mlops.ledger.merkle import EMPTY_ROOT, _split, node_hash, root_from_leaf_hashes

__all__ = ["CHUNK", "LedgerStore", "RawRow", "StoredTree", "storage_class"]

CHUNK = 256
FORMAT_VERSION = "1"
_LOCK = "clinical_mlops_ledger"
#: page size of a new SQLite ledger, in bytes
LEDGER_PAGE_SIZE = 16384

metadata = sa.MetaData()
meta_table = sa.Table(
    "ledger_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("schema", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("key_id", sa.Text, nullable=True),
    sa.Column("payload_hash", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("public", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.Text, nullable=False),
    sa.Column("sig_key_id", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)
checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    # No surrogate id: every stored byte of a checkpoint is covered by its signature.
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(80), primary_key=True),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("root", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)
chunks = sa.Table(
    "ledger_chunks",
    metadata,
    sa.Column(
        "idx",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("hash", sa.Text, nullable=False),
)
ENTRY_COLUMNS = [c.name for c in entries.columns]
CHECKPOINT_COLUMNS = [c.name for c in checkpoints.columns]
#: one row as stored: its values, and each value's storage class (see ``storage_class``)
RawRow = tuple[tuple[Any, ...], tuple[str, ...]]
# The write path's two statements, run on the driver (see database.driver_execute).
_TIP = "SELECT seq, leaf_hash, time FROM ledger_entries ORDER BY seq DESC LIMIT 1"
_COLUMN_LIST = ", ".join(ENTRY_COLUMNS)  # the table's own names: no outside input
_INSERT = (
    f"INSERT INTO ledger_entries ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})"  # noqa: S608
)


class LedgerStore:
    """Rows of one ledger in one database (SQLite file or PostgreSQL schema)."""

    def __init__(self, engine: Engine, *, url: str):
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        # Complete chunks never change once written (see ``insert_chunks``), so their hashes
        # and the roots of perfect subtrees over them are kept once read: a checkpoint at a
        # million entries then reads only the chunks completed since the last one.
        self._chunk_cache: list[bytes] = []
        self._perfect_roots: dict[tuple[int, int], bytes] = {}

    @classmethod
    def open(
        cls, url: str, *, create: bool = True, guard: Callable[[], None] | None = None
    ) -> LedgerStore:
        """Return the store at ``url``; with ``create`` make tables and an origin if missing.

        Without ``create`` a missing database raises LedgerNotFound and a database
        that is not a ledger raises LedgerCorrupted; nothing is written. ``guard`` (when
        given) is called first wherever there is no ledger (no database file, or a
        database without an origin), before one would be made or the absence reported,
        and may raise its own error instead.
        """
        url = normalise_url(url)
        if guard is not None:
            path = sqlite_path(url)
            if path is not None and not path.exists():
                guard()
        # secure_delete: a purged payload's bytes are overwritten, not left in free pages.
        # 16 KiB pages: an entry with its sealed payload is 1.5-3 KiB, so a 4 KiB page holds
        # one or two of them; the larger page halves the cost of an insert (docs/LEDGER.md).
        engine = open_engine(
            url, what="ledger", create=create, secure_delete=True, page_size=LEDGER_PAGE_SIZE
        )
        store = cls(engine, url=url)
        try:
            # An existing ledger is opened without writing (it may be read-only for now).
            has_origin = store._has_origin()
            if create and not (has_origin and store._has_tables()):
                if guard is not None and not has_origin:
                    guard()
                with write_transaction(engine, lock_name=_LOCK) as conn:
                    metadata.create_all(conn)
                    if (
                        conn.execute(
                            sa.select(meta_table.c.value).where(meta_table.c.key == "origin")
                        ).scalar()
                        is None
                    ):
                        conn.execute(
                            meta_table.insert(),
                            [
                                {"key": "origin", "value": "ledger-" + secrets.token_hex(16)},
                                {"key": "format", "value": FORMAT_VERSION},
                            ],
                        )
            elif not create:
                missing = [t for t in metadata.tables if not sa.inspect(engine).has_table(t)]
                if missing:
                    if guard is not None and not has_origin:
                        guard()
                    raise LedgerCorrupted(
                        f"{_display(url)} is a database but not a clinical-mlops ledger "
                        f"(missing tables: {', '.join(missing)})"
                    )
        except BaseException:
            engine.dispose()
            raise
        return store

    def _has_tables(self) -> bool:
        inspector = sa.inspect(self.engine)
        return all(inspector.has_table(t) for t in metadata.tables)

    def _has_origin(self) -> bool:
        """Return True when the database already holds a ledger (an origin row)."""
        if not sa.inspect(self.engine).has_table("ledger_meta"):
            return False
        with self.engine.connect() as conn:
            return any(key in (b"origin", "origin") for (key, _), _ in self.raw_meta(conn))

    @property
    def display_url(self) -> str:
        """The database's URL without its password (for messages)."""
        return _display(self.url)

    def close(self) -> None:
        self.engine.dispose()

    # -- reading ---------------------------------------------------------------------------
    def origin(self, conn: Connection) -> str:
        """Return the ledger's origin; LedgerCorrupted when the meta table does not hold one."""
        for (key, value), classes in self.raw_meta(conn):
            if key == b"origin" or key == "origin":
                if classes != ("text", "text"):
                    break
                try:
                    return _text(value)
                except UnicodeDecodeError:
                    break
        raise LedgerCorrupted(
            f"{_display(self.url)}: ledger_meta holds no readable origin; "
            "run `clinical-mlops audit verify` and restore the ledger from a backup"
        )

    def size(self, conn: Connection) -> int:
        last = conn.execute(sa.select(sa.func.max(entries.c.seq))).scalar()
        return 0 if last is None else int(last) + 1

    def tip(self, conn: Connection) -> tuple[int, str, str | None]:
        """Return (size, leaf hash of the last entry or the empty root, its time or None)."""
        row = driver_execute(conn, _TIP).fetchone()
        if row is None:
            return 0, EMPTY_ROOT.hex(), None
        return int(row[0]) + 1, _text(row[1]), _text(row[2])

    def head(self, conn: Connection) -> tuple[int, str]:
        """Return (size, leaf hash of the last entry or the empty root) as stored."""
        size, leaf, _ = self.tip(conn)
        return size, leaf

    def raw_rows(
        self, conn: Connection, *, start: int = 0, end: int | None = None, batch: int = 5000
    ) -> Generator[RawRow, None, None]:
        """Yield every entry row in seq order as (values, storage classes), whatever it holds.

        Values are in ``ENTRY_COLUMNS`` order; see :meth:`_raw_select` for what they are.
        """
        where = []
        params: dict[str, Any] = {}
        # No condition when reading everything: a seq column altered to another type
        # could not be compared with a number.
        if start > 0:
            where.append("seq >= :start")
            params["start"] = start
        if end is not None:
            where.append("seq < :end")
            params["end"] = end
        result = conn.execute(
            self._raw_select(
                "ledger_entries", ENTRY_COLUMNS, where=where, order="seq"
            ).execution_options(stream_results=True, yield_per=batch),
            params,
        )
        try:
            yield from self._raw(result)
        finally:
            result.close()

    def raw_meta(self, conn: Connection) -> list[RawRow]:
        """Return the meta table's (key, value) rows as (values, storage classes)."""
        return list(self._raw(conn.execute(self._raw_select("ledger_meta", ["key", "value"]))))

    def raw_chunks(self, conn: Connection) -> list[RawRow]:
        """Return the cached chunk hashes, (idx, hash), as (values, storage classes)."""
        return list(
            self._raw(conn.execute(self._raw_select("ledger_chunks", ["idx", "hash"], order="idx")))
        )

    def raw_checkpoints(self, conn: Connection, *, newest_first: bool = False) -> Iterator[RawRow]:
        """Yield the checkpoint rows (``CHECKPOINT_COLUMNS``) as (values, storage classes)."""
        order = "size DESC, time DESC" if newest_first else "size, time"
        result = conn.execute(
            self._raw_select("ledger_checkpoints", CHECKPOINT_COLUMNS, order=order)
        )
        try:
            yield from self._raw(result)
        finally:
            result.close()

    def _raw_select(
        self,
        table: str,
        names: Sequence[str],
        *,
        where: Sequence[str] = (),
        order: str | None = None,
    ) -> sa.TextClause:
        """Return a query for ``names`` of ``table`` that no stored value can make fail.

        SQLite lets any cell hold any storage class, and its driver raises while
        fetching a text value whose bytes are not UTF-8. So on SQLite every text
        value is read as its bytes (``CAST(.. AS BLOB)``) and the storage classes
        (``typeof``) come as one extra column; other values come as stored. On
        PostgreSQL the column types hold, and values come as the driver decodes them.
        A plain text query: no SQLAlchemy type processing runs on what comes back.
        """
        # table, column and order names are this module's own, never outside input
        if self.dialect == "sqlite":
            cols = [
                f"CASE typeof({n}) WHEN 'text' THEN CAST({n} AS BLOB) ELSE {n} END" for n in names
            ]
            cols.append(" || ',' || ".join(f"typeof({n})" for n in names))
        else:
            cols = list(names)
        sql = f"SELECT {', '.join(cols)} FROM {table}"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        if order:
            sql += f" ORDER BY {order}"
        return sa.text(sql)

    def _raw(self, result: Any) -> Iterator[RawRow]:
        if self.dialect == "sqlite":
            known: dict[str, tuple[str, ...]] = {}
            for row in result:
                values = tuple(row)
                classes = known.get(values[-1])
                if classes is None:
                    classes = known[values[-1]] = tuple(values[-1].split(","))
                yield values[:-1], classes
        else:
            for row in result:
                values = tuple(row)
                yield values, tuple(storage_class(v) for v in values)

    def checkpoint_rows(self, conn: Connection) -> list[Any]:
        """Return every checkpoint row by size then time."""
        return list(
            conn.execute(sa.select(checkpoints).order_by(checkpoints.c.size, checkpoints.c.time))
        )

    def latest_checkpoint(self, conn: Connection) -> Checkpoint | None:
        """Return the newest readable checkpoint (largest size, then latest time), or None.

        A damaged checkpoint row is passed over here (``verify`` reports it), so a
        ledger with one still opens, appends and checkpoints.
        """
        for values, classes in self.raw_checkpoints(conn, newest_first=True):
            if classes != ("integer", "text", "text", "text", "text", "text"):
                continue
            try:
                return Checkpoint.from_json(
                    {
                        name: value if name == "size" else _text(value)
                        for name, value in zip(CHECKPOINT_COLUMNS, values, strict=True)
                    }
                )
            except (ValueError, KeyError, TypeError):
                continue
        return None

    def leaf_hashes(self, conn: Connection, start: int, end: int) -> list[bytes]:
        rows = conn.execute(
            sa.select(entries.c.leaf_hash)
            .where(entries.c.seq >= start, entries.c.seq < end)
            .order_by(entries.c.seq)
        ).scalars()
        return [bytes.fromhex(_text(h)) for h in rows]

    def chunk_hashes(self, conn: Connection, start: int, end: int) -> list[bytes]:
        rows = conn.execute(
            sa.select(chunks.c.hash)
            .where(chunks.c.idx >= start, chunks.c.idx < end)
            .order_by(chunks.c.idx)
        ).scalars()
        return [bytes.fromhex(_text(h)) for h in rows]

    def known_chunks(self, conn: Connection, count: int) -> list[bytes]:
        """Return the hashes of the first ``count`` chunks, reading only those not seen yet."""
        have = len(self._chunk_cache)
        if count > have:
            fresh = self.chunk_hashes(conn, have, count)
            if len(fresh) != count - have:  # a damaged table: read as before, remember nothing
                return self._chunk_cache[:have] + fresh
            if len(self._chunk_cache) == have:  # another thread may have extended it meanwhile
                self._chunk_cache.extend(fresh)
        return self._chunk_cache[:count]

    def perfect_root(self, chunk_hashes: list[bytes], first: int, last: int) -> bytes:
        """Return the root over chunks ``[first, last)`` (a perfect subtree), remembered."""
        found = self._perfect_roots.get((first, last))
        if found is None:
            found = root_from_leaf_hashes(chunk_hashes[first:last])
            self._perfect_roots[(first, last)] = found
        return found

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[Connection]:
        """Yield a connection holding the ledger's exclusive write lock, in a transaction."""
        with write_transaction(self.engine, lock_name=_LOCK) as conn:
            yield conn

    def probe(self) -> str | None:
        """Return None when the ledger can be written now, else the reason (no path or URL)."""
        return probe_writable(self.engine, table="ledger_meta", column="key")

    def insert_entries(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert entry rows, each a tuple of values in ``ENTRY_COLUMNS`` order."""
        driver_executemany(conn, _INSERT, rows)

    def insert_chunks(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            conn.execute(chunks.insert(), list(rows))

    def insert_checkpoint(self, conn: Connection, cp: Checkpoint) -> None:
        conn.execute(checkpoints.insert().values(**cp.to_json()))

    def clear_payloads(self, conn: Connection, seqs: Sequence[int]) -> int:
        done = 0
        for i in range(0, len(seqs), 500):
            part = list(seqs[i : i + 500])
            done += conn.execute(
                entries.update().where(entries.c.seq.in_(part)).values(payload=None)
            ).rowcount
        return done


class StoredTree:
    """RFC 6962 subtree hashes of the first ``size`` stored leaves, using cached chunks."""

    def __init__(self, store: LedgerStore, conn: Connection, size: int):
        self._store = store
        self._conn = conn
        self.size = size
        self._chunks = store.known_chunks(conn, size // CHUNK)

    def subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n >= CHUNK and start % CHUNK == 0 and n & (n - 1) == 0:
            first, last = start // CHUNK, end // CHUNK
            if last <= len(self._chunks):
                return self._store.perfect_root(self._chunks, first, last)
        if n <= CHUNK:
            return root_from_leaf_hashes(self._store.leaf_hashes(self._conn, start, end))
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self) -> bytes:
        return EMPTY_ROOT if self.size == 0 else self.subtree(0, self.size)


_STORAGE_CLASSES: dict[type, str] = {
    type(None): "null",
    int: "integer",
    float: "real",
    Decimal: "real",
    str: "text",
    bytes: "blob",
    bytearray: "blob",
    memoryview: "blob",
}


def storage_class(value: Any) -> str:
    """Return the storage class of a value as a driver returned it, in SQLite's names.

    ``null``, ``integer``, ``real``, ``text`` or ``blob``; any other type (a
    PostgreSQL column altered to ``boolean``, ``jsonb``, a date ...) by its Python name.
    """
    return _STORAGE_CLASSES.get(type(value)) or type(value).__name__


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8")
    return str(value)


def _display(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)
