"""Database engines for the evidence stores (ledger, identity vault): SQLite or PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` so a committed transaction
survives power loss; write transactions start with ``BEGIN IMMEDIATE`` so that
writers from many threads and processes queue on the database lock instead of
failing half-way. PostgreSQL writers serialise on a transaction-scoped advisory
lock. Both go through SQLAlchemy Core so one code path serves both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from clinical_mlops.errors import LedgerCorrupted, LedgerNotFound, StoreUnavailable

__all__ = [
    "driver_execute",
    "driver_executemany",
    "normalise_url",
    "open_engine",
    "sqlite_path",
    "write_transaction",
]

_BUSY_TIMEOUT_MS = 60_000


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
    one keeps the page size it was made with.
    """
    url = normalise_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise LedgerNotFound(f"no {what} database at {path}; nothing was created")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, secure_delete=secure_delete, page_size=page_size)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
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


def _configure_sqlite(engine: Engine, *, secure_delete: bool, page_size: int | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below issues BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
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
    disk full) raises ``StoreUnavailable`` after the rollback: nothing was written.
    """
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn = conn.execution_options(immediate=True)
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                        {"name": lock_name},
                    )
                yield conn
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailable(
            f"database {where} cannot be written now ({exc.orig}); the transaction was "
            "rolled back and nothing of it was written"
        ) from exc
