"""A ledger that vanishes, is emptied, replaced or rolled back under an open ``Ledger``: nothing
is appended to what is there instead, nothing is acknowledged that exists nowhere, and no new
ledger is made where the checkpoint log remembers one. Both backends, plus the SQLite file
cases (an unlinked file goes on taking writes in SQLite)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.errors import LedgerNotFound, StoreUnavailable
from clinical_mlops.ledger import Ledger, NewEntry, record
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.workspace import Workspace
from evidence_helpers import Stores

TABLES = ("ledger_entries", "ledger_chunks", "ledger_checkpoints")


def _fill(ledger: Ledger, n: int) -> None:
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(n)]
    )


def _rows(conn: sa.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def _put_back(conn: sa.Connection, saved: dict[str, list[dict[str, Any]]]) -> None:
    for table, rows in saved.items():
        conn.execute(sa.text(f"DELETE FROM {table}"))
        if rows:
            cols = list(rows[0])
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} ({', '.join(cols)}) "
                    f"VALUES ({', '.join(':' + c for c in cols)})"
                ),
                rows,
            )


@pytest.mark.parametrize("keep", [0, 30], ids=["emptied", "rolled-back"])
def test_appends_refuse_a_ledger_emptied_or_rolled_back_under_them(
    ledger: Ledger, keep: int
) -> None:
    _fill(ledger, 50)
    with ledger.store.engine.begin() as conn:
        saved = {t: _rows(conn, t) for t in TABLES}
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq >= :k"), {"k": keep})
        conn.execute(sa.text("DELETE FROM ledger_chunks"))
        conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE size > :k"), {"k": keep})
    for attempt in (
        lambda: ledger.append(type="training_run", actor="p", payload={"run_id": "x"}),
        ledger.checkpoint,
    ):
        with pytest.raises(StoreUnavailable, match=f"holds {keep} entries, but this process has"):
            attempt()
    assert ledger.size() == keep  # nothing was written to what is there instead
    assert ledger.probe() == "emptied, replaced or rolled back while open"
    with ledger.store.engine.begin() as conn:
        _put_back(conn, saved)  # restored: appends carry on
    assert ledger.probe() is None
    assert ledger.append(type="training_run", actor="p", payload={"run_id": "y"}).seq == 50
    assert ledger.verify().ok


def test_appends_after_another_writer_continue(stores: Stores, ledger: Ledger) -> None:
    _fill(ledger, 5)
    with stores.open() as other:
        _fill(other, 7)
    assert ledger.append(type="training_run", actor="p", payload={"run_id": "z"}).seq == 12
    assert ledger.verify().ok


def _workspace(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    for key, value in stores.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLINICAL_MLOPS_HOME", str(stores.root))
    ws = Workspace.open(stores.root)
    for i in range(3):
        record(ws, type="training_run", actor="pipeline", payload={"run_id": str(i)})
    return ws


def test_no_new_ledger_where_the_checkpoint_log_remembers_one(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _workspace(stores, monkeypatch)
    log = ws.root / "ledger-checkpoints.jsonl"
    engine = sa.create_engine(stores.ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for table in (*TABLES, "ledger_meta"):
            conn.execute(sa.text(f"DROP TABLE {table}"))  # the ledger is gone
    engine.dispose()
    for create in (True, False):
        with pytest.raises(LedgerNotFound) as refused:
            Ledger.open(ws, create=create)
        message = " ".join(str(refused.value).split())
        assert str(log) in message and "docs/OPERATIONS.md" in message
        assert re.search(r"records a ledger of [1-3] entries", message)
        assert "nothing was created" in message
    with pytest.raises(LedgerNotFound):
        record(ws, type="training_run", actor="pipeline", payload={"run_id": "again"})
    check = sa.create_engine(stores.ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert not sa.inspect(check).has_table("ledger_entries")  # nothing was made
    finally:
        check.dispose()
    # An empty ledger (tables and origin, no entries) is refused the same way.
    LedgerStore.open(stores.ledger_url).close()
    with pytest.raises(LedgerNotFound, match="missing or empty"):
        Ledger.open(ws)


def test_a_workspace_without_a_checkpoint_log_makes_its_ledger(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _workspace(stores, monkeypatch)
    with Ledger.open(ws, create=False) as ledger:
        assert ledger.size() == 3 and ledger.verify().ok


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_sqlite_ledger_removed_under_an_open_ledger_is_not_written_or_recreated(
    stores: Stores, ledger: Ledger
) -> None:
    _fill(ledger, 10)
    path = Path(stores.ledger_url.removeprefix("sqlite:///"))
    kept = path.with_name("kept.db")
    os.link(path, kept)
    path.unlink()
    with pytest.raises(StoreUnavailable, match="nothing of it was written"):
        ledger.append(type="training_run", actor="p", payload={"run_id": "lost"})
    assert not path.exists()  # no connection made a new, empty file
    assert ledger.probe() == "database file missing or unreadable"
    os.link(kept, path)  # put back: appends carry on
    kept.unlink()
    assert ledger.probe() is None
    assert ledger.append(type="training_run", actor="p", payload={"run_id": "back"}).seq == 10
    assert ledger.verify().ok


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_sqlite_ledger_replaced_during_a_write_rolls_it_back(
    stores: Stores, ledger: Ledger, tmp_path: Path
) -> None:
    _fill(ledger, 10)
    path = Path(stores.ledger_url.removeprefix("sqlite:///"))
    other = tmp_path / "other.db"
    LedgerStore.open(f"sqlite:///{other}").close()
    aside = tmp_path / "aside.db"
    with (
        pytest.raises(StoreUnavailable, match="was replaced by another file"),
        ledger.store.writer() as conn,
    ):
        conn.execute(sa.text("UPDATE ledger_meta SET value = value"))
        os.replace(path, aside)
        os.replace(other, path)
    os.replace(aside, path)
    assert ledger.append(type="training_run", actor="p", payload={"run_id": "after"}).seq == 10
    assert ledger.verify().ok
