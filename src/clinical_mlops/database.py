"""One hardened way to open the project's databases: ledger, identity vault and metadata.

Every store (the audit ledger, the identity vault, the metadata store holding the
registry, governance, alerts and monitoring windows) is opened here, on SQLite or
PostgreSQL, through SQLAlchemy Core so one code path serves both.

SQLite runs in WAL mode with ``synchronous=FULL`` so a committed transaction
survives power loss; write transactions start with ``BEGIN IMMEDIATE`` so that
writers from many threads and processes queue on the database lock (for up to
``CLINICAL_MLOPS_BUSY_TIMEOUT_MS`` milliseconds, 60 s by default) instead of failing
half-way. PostgreSQL writers serialise on a transaction-scoped advisory lock. A store
that cannot be reached, stays locked past the wait, or is not a readable database
raises :class:`~clinical_mlops.errors.StoreUnavailable` naming the store, after the
rollback: nothing of the transaction was written.

A SQLite database file is created only by :func:`open_engine` with ``create``;
every connection after that opens the existing file or fails, and every write
transaction checks, before it commits, that the file at the path is still the one
its connection has open. SQLite keeps writing to a file that was deleted or
replaced under it, so without that check a removed ledger would go on
acknowledging entries that exist nowhere.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from clinical_mlops.errors import LedgerCorrupted, LedgerNotFound, StoreUnavailable, ValueInvalid

__all__ = [
    "BUSY_TIMEOUT_ENV",
    "busy_timeout_ms",
    "display_url",
    "driver_execute",
    "driver_executemany",
    "ensure_tables",
    "normalise_url",
    "open_engine",
    "open_metadata_engine",
    "probe_writable",
    "sqlite_path",
    "write_transaction",
]

BUSY_TIMEOUT_ENV = "CLINICAL_MLOPS_BUSY_TIMEOUT_MS"
_BUSY_TIMEOUT_MS = 60_000


def busy_timeout_ms() -> int:
    """Return how long (ms) a SQLite writer waits for another writer's lock before giving up.

    ``CLINICAL_MLOPS_BUSY_TIMEOUT_MS`` (default 60000). After the wait the store raises
    ``StoreUnavailable``; raise the value on a slow disk rather than lowering it.
    """
    raw = os.environ.get(BUSY_TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return _BUSY_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        raise ValueInvalid(
            f"{BUSY_TIMEOUT_ENV}={raw!r}: expected a whole number of milliseconds"
        ) from None
    if value < 0:
        raise ValueInvalid(f"{BUSY_TIMEOUT_ENV}={raw!r}: expected 0 or more milliseconds")
    return value


def display_url(url: str) -> str:
    """Return ``url`` with any password hidden, for messages and logs."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def normalise_url(url: str) -> str:
    """Return ``url`` with PostgreSQL URLs pointed at the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    """Return the file behind a SQLite URL, or None for other databases and ``:memory:``."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def open_engine(
    url: str,
    *,
    what: str,
    create: bool,
    secure_delete: bool = False,
    page_size: int | None = None,
) -> Engine:
    """Return an engine for ``url``; raise if the database is missing (and not ``create``).

    ``what`` names the store in error messages ("ledger", "identity vault").
    ``secure_delete`` makes SQLite overwrite deleted content with zeros, which
    the identity vault needs so an erased identifier leaves no bytes behind.
    ``page_size`` (bytes) applies to a SQLite database this call creates; an existing
    one keeps the page size it was made with. Only this call creates a SQLite file:
    the engine's connections never do, so a file removed later is reported, not
    silently replaced by an empty one.
    """
    url = normalise_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise LedgerNotFound(f"no {what} database at {path}; nothing was created")
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(_sqlite_uri(path, mode="rwc"), uri=True).close()
        timeout_ms = busy_timeout_ms()
        try:
            _ensure_wal(path, page_size=page_size, timeout_ms=timeout_ms)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"{what} database {path} cannot be opened now ({exc}); nothing was written"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupted(
                f"{what} database {path} is not a readable SQLite database "
                f"({exc}); restore it from a backup"
            ) from None
        engine = _sqlite_engine(url, path, timeout_ms=timeout_ms)
        _configure_sqlite(
            engine, path, secure_delete=secure_delete, page_size=page_size, timeout_ms=timeout_ms
        )
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        except sa.exc.OperationalError as exc:  # locked past the busy timeout, unreadable
            engine.dispose()
            raise StoreUnavailable(
                f"{what} database {path} cannot be opened now ({exc.orig}); nothing was written"
            ) from None
        except sa.exc.DatabaseError as exc:
            engine.dispose()
            raise LedgerCorrupted(
                f"{what} database {path} is not a readable SQLite database "
                f"({exc.orig}); restore it from a backup"
            ) from None
        return engine
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise LedgerNotFound(f"cannot connect to the {what} database ({exc.orig})") from None
    return engine


def open_metadata_engine(url: str, *tables: sa.MetaData) -> Engine:
    """Return the engine of the metadata store at ``url``, with ``tables`` created if missing.

    A SQLite file is created on first use. Tables are looked for without the write lock,
    so opening a store whose tables exist never waits for (or blocks) a writer.

    The metadata store (registry, people and roles, gates, approvals, reviews, incidents,
    alerts, monitoring windows) gets the same treatment as the evidence stores: WAL and a
    busy timeout on SQLite, and every ``engine.begin()`` block is a write transaction that
    starts with ``BEGIN IMMEDIATE``, so concurrent writers (a service, the monitor, the
    console, the command line) queue instead of failing with "database is locked". Reads
    (``engine.connect()``) never take the write lock. A store that cannot be reached,
    stays locked longer than the busy timeout, or is not a readable database raises
    ``StoreUnavailable`` naming the metadata store; a write is rolled back first.
    A SQLite file restored or replaced under a running process is picked up by its next
    transaction; a write that was under way when it happened is refused.
    """
    what = "metadata store"
    try:
        engine = open_engine(url, what=what, create=True)
    except (LedgerNotFound, LedgerCorrupted) as exc:
        raise StoreUnavailable(str(exc)) from None
    if engine.dialect.name == "sqlite":
        # Same pool, dialect and listeners; only ``begin()`` differs (see the class).
        engine.__class__ = _MetadataEngine
        _reopen_moved_files(engine)
    _raise_unavailable(engine, what=what)
    try:
        ensure_tables(engine, *tables)
    except BaseException:
        engine.dispose()
        raise
    return engine


def ensure_tables(engine: Engine, *tables: sa.MetaData) -> None:
    """Create the tables of ``tables`` that the metadata store at ``engine`` lacks.

    Looks without the write lock first, so a store whose tables exist is never locked
    by this; a package opening its part of a store another opened calls it.
    """
    present = set(sa.inspect(engine).get_table_names())
    for metadata in tables:
        if not set(metadata.tables) <= present:
            # Under the write lock, so processes opening a new store one after the
            # other find the tables the first one made instead of racing to create them.
            metadata.create_all(engine)


class _MetadataEngine(Engine):
    """A SQLite engine whose ``begin()`` blocks are write transactions (``BEGIN IMMEDIATE``).

    The metadata store's code writes inside ``engine.begin()`` and reads inside
    ``engine.connect()``; a deferred ``BEGIN`` that reads and then writes fails at once
    (SQLITE_BUSY) when another process wrote in between, whatever the busy timeout.
    """

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.connect() as conn:
            conn.execution_options(immediate=True)
            with conn.begin():
                yield conn
                moved = _file_moved(conn)
                if moved is not None:
                    self.dispose()
                    raise StoreUnavailable(
                        f"metadata store database file {moved} since this process opened "
                        "it; the transaction was rolled back and nothing of it was written"
                    )


def _reopen_moved_files(engine: Engine) -> None:
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        opened = record.info.get("file")
        if opened is None:
            return
        path, identity = opened
        try:
            found = os.stat(path)
        except FileNotFoundError:
            raise sa.exc.DisconnectionError(f"{path} was removed") from None
        if (found.st_dev, found.st_ino) != identity:
            # The pool drops this connection and opens the file now at the path.
            raise sa.exc.DisconnectionError(f"{path} was replaced")


def _raise_unavailable(engine: Engine, *, what: str) -> None:
    """Make the engine raise ``StoreUnavailable`` naming ``what`` for an unusable database."""

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: sa.engine.ExceptionContext) -> None:
        failure = ctx.sqlalchemy_exception
        unusable = isinstance(failure, (sa.exc.OperationalError, sa.exc.InterfaceError))
        # A plain DatabaseError is SQLite's "file is not a database" (corrupt file).
        if not (unusable or type(failure) is sa.exc.DatabaseError):
            return
        # A failed connection may keep failing (SQLite opens a file it cannot write
        # read-only, for good): it is dropped, so the store recovers by itself.
        ctx.is_disconnect = True
        raise StoreUnavailable(
            f"the {what} ({display_url(str(engine.url))}) cannot be used now "
            f"({ctx.original_exception}); nothing of the transaction was written. "
            "Check the database is reachable and writable (docs/OPERATIONS.md)"
        )


def _ensure_wal(path: Path, *, page_size: int | None, timeout_ms: int) -> None:
    """Put the SQLite database at ``path`` in WAL mode, waiting out other processes doing the same.

    Switching to WAL needs the exclusive lock. Two processes opening a new database at
    once each hold a shared lock while asking for it; SQLite refuses one of them at once
    (a deadlock, so no busy wait), and it tries again here until the busy timeout. Once a
    database is in WAL mode this is a read of the mode, with no lock taken.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    pause = 0.005
    while True:
        conn = sqlite3.connect(
            _sqlite_uri(path, mode="rw"), uri=True, timeout=timeout_ms / 1000, isolation_level=None
        )
        try:
            if page_size is not None:
                # Only takes effect on a database with nothing written yet.
                conn.execute(f"PRAGMA page_size={int(page_size)}")
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        finally:
            conn.close()
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _sqlite_uri(path: Path, *, mode: str) -> str:
    return f"file:{urllib.parse.quote(str(path.resolve()))}?mode={mode}"


def _sqlite_engine(url: str, path: Path, *, timeout_ms: int) -> Engine:
    """Return an engine whose connections open the file at ``path`` read-write, never create it."""
    uri = _sqlite_uri(path, mode="rw")

    def connect() -> sqlite3.Connection:
        # Connections move between threads with the pool (one at a time), as with
        # SQLAlchemy's own file-database default.
        return sqlite3.connect(uri, uri=True, timeout=timeout_ms / 1000, check_same_thread=False)

    return sa.create_engine(url, creator=connect)


def _configure_sqlite(
    engine: Engine, path: Path, *, secure_delete: bool, page_size: int | None, timeout_ms: int
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        # The file this connection has open, checked again before each commit (see
        # ``write_transaction``).
        found = os.stat(path)
        record.info["file"] = (str(path), (found.st_dev, found.st_ino))
        record.info["busy_timeout_ms"] = timeout_ms
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below issues BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
        if page_size is not None:
            # Only takes effect before the database's first write (so before WAL mode is
            # set); on an existing database SQLite keeps its page size and ignores this.
            cur.execute(f"PRAGMA page_size={int(page_size)}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        if secure_delete:
            cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def driver_execute(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` (``?`` placeholders) on ``conn``'s driver connection; return the cursor.

    For the few fixed statements on the serving hot path (a prediction's consent
    lookup and ledger write): Core's statement building, cache-key and result
    processing cost about 100 µs a statement there, the driver about 2 µs. The
    statement runs in ``conn``'s transaction, and driver errors are raised as
    SQLAlchemy's (``OperationalError`` ...), so callers handle one set of exceptions.
    """
    return _driver(conn, sql, params, many=False)


def driver_executemany(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row of ``rows`` on the driver connection (see :func:`driver_execute`)."""
    if rows:
        _driver(conn, sql, rows, many=True)


def _driver(conn: Connection, sql: str, params: Any, *, many: bool) -> Any:
    if conn.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except dbapi.Error as exc:
        cursor.close()
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error) from exc
    return cursor


@contextmanager
def write_transaction(engine: Engine, *, lock_name: str) -> Iterator[Connection]:
    """Yield a connection inside a transaction that holds the store's write lock.

    Exactly one writer per database holds the lock at a time, across threads
    and processes; the transaction commits when the block ends without error.
    A database that cannot be reached or written (server down, read-only file,
    disk full), or a SQLite file removed or replaced since it was opened, raises
    ``StoreUnavailable`` after the rollback: nothing was written. The connections
    that failed are dropped, so writes resume by themselves once the store is
    writable again, without a restart.
    """
    try:
        with _connection(engine) as conn:
            try:
                if engine.dialect.name == "sqlite":
                    conn = conn.execution_options(immediate=True)
                with conn.begin():
                    if engine.dialect.name == "postgresql":
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                            {"name": lock_name},
                        )
                    yield conn
                    moved = _file_moved(conn)
                    if moved is not None:
                        raise _FileMoved(moved)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                # A connection that failed may keep failing (SQLite opens a file it cannot
                # write read-only, for good): it is closed, not returned to the pool.
                conn.invalidate()
                raise
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        engine.dispose()  # idle connections opened during the outage may be broken too
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailable(
            f"database {where} cannot be written now ({exc.orig}); the transaction was "
            "rolled back and nothing of it was written"
        ) from exc
    except _FileMoved as exc:
        # Every pooled connection has the old file open: reconnect to what is at the path.
        engine.dispose()
        raise StoreUnavailable(
            f"database file {exc} since this process opened it; the transaction was rolled "
            "back and nothing of it was written. Restore the file from a backup "
            "(docs/OPERATIONS.md, Restore) or put it back where it was"
        ) from None


@contextmanager
def _connection(engine: Engine) -> Iterator[Connection]:
    """Yield a pooled connection, reopened first if its SQLite file is no longer at the path.

    A file put back, or restored, at the path is then picked up by itself; the check
    before commit (in ``write_transaction``) still catches a change in between.
    """
    conn = engine.connect()
    try:
        if _file_moved(conn) is not None:
            conn.invalidate()
            conn.close()
            engine.dispose()  # every idle connection has the old file open too
            conn = engine.connect()
        yield conn
    finally:
        conn.close()


class _FileMoved(Exception):
    """The SQLite file at the database's path is not the one the connection has open."""


def _file_moved(conn: Connection) -> str | None:
    """Return what happened to the connection's SQLite file (removed, replaced), or None."""
    opened = conn.connection.info.get("file")
    if opened is None:  # not a SQLite file
        return None
    path, identity = opened
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return f"{path} was removed"
    if (found.st_dev, found.st_ino) != identity:
        return f"{path} was replaced by another file"
    return None


def probe_writable(
    engine: Engine, *, table: str, column: str, timeout_ms: int = 2000
) -> str | None:
    """Return None when a write transaction can start on the store now, else why not.

    For readiness checks. Starts a write transaction, runs an update of ``table``
    that matches no row (the database refuses it when the store is read-only)
    and rolls back: nothing is written. Waits at most about ``timeout_ms`` for
    other writers; a store that stays busy that long counts as working (its
    writers queue). A connection that fails is dropped, as in
    :func:`write_transaction`. The reason names the condition, never a path or URL.
    """
    # table and column are the store's own names, never outside input
    noop = f"UPDATE {table} SET {column} = {column} WHERE 1 = 0"  # noqa: S608
    try:
        with _connection(engine) as conn:
            dbapi_conn = conn.connection.dbapi_connection
            usual_ms = int(conn.connection.info.get("busy_timeout_ms", _BUSY_TIMEOUT_MS))
            try:
                if engine.dialect.name == "sqlite":
                    cur = dbapi_conn.cursor()  # type: ignore[union-attr]
                    cur.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
                    try:
                        cur.execute("BEGIN IMMEDIATE")
                        try:
                            cur.execute(noop)
                            moved = _file_moved(conn)
                        finally:
                            cur.execute("ROLLBACK")
                    finally:
                        cur.execute(f"PRAGMA busy_timeout={usual_ms}")
                        cur.close()
                    if moved is not None:
                        engine.dispose()
                        return "the database file was removed or replaced while open"
                    return None
                with conn.begin() as tx:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(timeout_ms)}")
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
                    conn.exec_driver_sql(noop)
                    tx.rollback()
                return None
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return None
                conn.invalidate()
                return _reason(str(exc))
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if "lock timeout" in str(exc.orig) or "statement timeout" in str(exc.orig):
                    return None
                conn.invalidate()
                return _reason(str(exc.orig))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        engine.dispose()
        return _reason(str(exc.orig))


def _reason(message: str) -> str:
    """Return the kind of a database failure, without paths, hosts or credentials."""
    text = message.lower()
    for needle, reason in (
        ("readonly", "read-only"),
        ("read-only", "read-only"),
        ("full", "disk full"),
        ("unable to open", "database file missing or unreadable"),
        ("permission denied", "permission denied"),
        ("connection", "cannot connect"),
    ):
        if needle in text:
            return reason
    return "cannot be written"
