"""Storage-type oddities: whatever a cell of the ledger holds, ``verify`` reports it, at the
entry's seq, and goes on checking the rest; it never raises.

SQLite lets any cell hold any storage class once the table is rebuilt without declared
types (which anyone who can write the file can do), and even the table as created takes a
payload re-stored as TEXT or a text column re-stored as a BLOB. PostgreSQL keeps each
column's type, so there a column is altered to another type (every row changes) or loses
its NOT NULL constraint (one row is set NULL). Each case runs in a transaction that is
rolled back, so one ledger serves the whole battery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.ledger import NewEntry
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.ledger.entries import Checkpoint
from clinical_mlops.ledger.store import ENTRY_COLUMNS, LedgerStore
from clinical_mlops.ledger.verify import VerifyReport, verify_ledger
from clinical_mlops.privacy.keys import LocalKeyring
from evidence_helpers import BACKENDS, INFERENCE, Stores, make_stores

#: the storage classes (SQLite's names) each column holds as the ledger writes it
ENTRY_STORAGE = {c: {"text"} for c in ENTRY_COLUMNS} | {
    "seq": {"integer"},
    "subject": {"text", "null"},
    "key_id": {"text", "null"},
    "payload": {"blob", "null"},
}
N_ENTRIES = 600
LATER = 450  # an independent edit after the odd entry: verification must still reach it


@dataclass
class Built:
    stores: Stores
    store: LedgerStore
    keys: dict[str, Any]
    logged: list[Checkpoint]
    target: int  # an inference entry in the middle, every column set (subject, key, payload)


def _build(stores: Stores) -> Built:
    ledger = stores.open(checkpoint_every=100)
    subject = ledger.vault.pseudonym_for("MRN-0001")
    sizes = [1, 7, 50, 3]
    i = 0
    while ledger.size() < N_ENTRIES:
        n = min(sizes[i % len(sizes)], N_ENTRIES - ledger.size())
        i += 1
        ledger.append_batch(
            [
                NewEntry(type="inference", actor="svc", subject=subject, payload=INFERENCE)
                if k % 2
                else NewEntry(type="training_run", actor="pipeline", payload={"run_id": str(k)})
                for k in range(n)
            ]
        )
    ledger.checkpoint()
    target = next(s for s in range(300, N_ENTRIES) if ledger.entry(s).type == "inference")
    ledger.close()
    logged, problems = CheckpointLog(stores.log_path).read()
    assert not problems
    return Built(
        stores=stores,
        store=LedgerStore.open(stores.ledger_url, create=False),
        keys=LocalKeyring(stores.keys_dir).public_keys(),
        logged=logged,
        target=target,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    stores = make_stores(
        request.param, tmp_path_factory.mktemp(f"oddities-{request.param}"), request
    )
    b = _build(stores)
    yield b
    b.store.close()


def _verify(b: Built, conn: sa.Connection) -> VerifyReport:
    return verify_ledger(b.store, conn, public_keys=b.keys, trusted_checkpoints=b.logged)


def _untyped(conn: sa.Connection) -> None:
    """Rebuild ledger_entries with no declared types or constraints (SQLite keeps anything)."""
    cols = ", ".join(ENTRY_COLUMNS)
    conn.exec_driver_sql(f"CREATE TABLE loose ({cols})")
    conn.exec_driver_sql(f"INSERT INTO loose SELECT {cols} FROM ledger_entries")
    conn.exec_driver_sql("DROP TABLE ledger_entries")
    conn.exec_driver_sql("ALTER TABLE loose RENAME TO ledger_entries")


#: storage class -> the SQL that re-stores a cell ``{c}`` as that class
SQLITE_KINDS = {
    "null": "NULL",
    "integer": "7",
    "real": "2.5",
    "text": "CAST(CAST({c} AS BLOB) AS TEXT)",
    "text-not-utf8": "CAST(X'ff' || CAST({c} AS BLOB) AS TEXT)",
    "blob": "CAST({c} AS BLOB)",
}
SQLITE_CASES = [
    (column, kind)
    for column in ENTRY_COLUMNS
    for kind in SQLITE_KINDS
    # a class the column may hold is not an oddity, except text that is not UTF-8
    if kind.split("-")[0] not in ENTRY_STORAGE[column] or kind == "text-not-utf8"
]


def _assert_reported_and_continued(
    b: Built, report: VerifyReport, *, seq: int, column: str
) -> None:
    assert not report.ok
    assert report.first_bad_seq == seq, report.problems[:5]
    named = [p for p in report.problems if p.seq == seq and column in p.message]
    assert named, report.problems[:5]
    # verification went on past the odd entry: the independent edit further on is found
    assert any(p.seq == LATER and p.check == "leaf" for p in report.problems), report.problems
    assert report.complete


@pytest.mark.parametrize("built", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("column", "kind"), SQLITE_CASES)
def test_sqlite_any_storage_class_in_any_column_is_reported_at_its_seq(
    built: Built, column: str, kind: str
) -> None:
    with built.store.engine.connect() as conn, conn.begin() as tx:
        _untyped(conn)
        rowid = conn.exec_driver_sql(
            f"SELECT rowid FROM ledger_entries WHERE seq = {built.target}"
        ).scalar()
        value = SQLITE_KINDS[kind].format(c=column)
        conn.exec_driver_sql(f"UPDATE ledger_entries SET {column} = {value} WHERE rowid = {rowid}")
        conn.exec_driver_sql(f"UPDATE ledger_entries SET actor = 'x' WHERE seq = {LATER}")
        stored = conn.exec_driver_sql(
            f"SELECT typeof({column}) FROM ledger_entries WHERE rowid = {rowid}"
        ).scalar()
        assert stored == kind.split("-")[0]
        report = _verify(built, conn)
        tx.rollback()
    if column == "seq" and kind in ("null", "real", "text-not-utf8"):
        # No usable seq: the row cannot be placed, so the seq it no longer holds is the one
        # named, as missing.
        assert not report.ok and report.first_bad_seq == built.target, report.problems[:5]
        assert any(p.check == "row" and "seq" in p.message for p in report.problems)
        assert any(p.check == "sequence" and p.seq == built.target for p in report.problems)
        assert any(p.seq == LATER and p.check == "leaf" for p in report.problems)
    else:
        _assert_reported_and_continued(built, report, seq=built.target, column=column)
    with built.store.engine.connect() as conn, conn.begin():
        assert _verify(built, conn).ok  # rolled back: the ledger is as built


@pytest.mark.parametrize("built", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", "CAST(payload AS TEXT)"),  # the reported attack: bytes that are not UTF-8
        ("payload", "CAST(X'41' AS TEXT)"),
        ("payload", "1"),
        ("payload", "0.5"),
        ("actor", "CAST(actor AS BLOB)"),
        ("public", "CAST(X'ff' || CAST(public AS BLOB) AS TEXT)"),
        ("subject", "X'00ff'"),
    ],
)
def test_sqlite_oddities_the_table_as_created_accepts_are_reported(
    built: Built, column: str, value: str
) -> None:
    with built.store.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql(
            f"UPDATE ledger_entries SET {column} = {value} WHERE seq = {built.target}"
        )
        conn.exec_driver_sql(f"UPDATE ledger_entries SET actor = 'x' WHERE seq = {LATER}")
        report = _verify(built, conn)
        tx.rollback()
    _assert_reported_and_continued(built, report, seq=built.target, column=column)


#: column -> (new type, USING expression) for a type every row is converted to
PG_RETYPE = {
    "seq": ("numeric", "seq::numeric"),
    "payload": ("text", "encode(payload, 'escape')"),
} | {c: ("bytea", f"convert_to({c}, 'UTF8')") for c in ENTRY_COLUMNS if c not in ("seq", "payload")}


@pytest.mark.postgres
@pytest.mark.parametrize("built", ["postgres"], indirect=True)
@pytest.mark.parametrize("column", ENTRY_COLUMNS)
def test_postgres_a_column_altered_to_another_type_is_reported_at_every_entry(
    built: Built, column: str
) -> None:
    new_type, using = PG_RETYPE[column]
    with built.store.engine.connect() as conn, conn.begin() as tx:
        stored = set(
            conn.exec_driver_sql(
                f"SELECT seq FROM ledger_entries WHERE {column} IS NOT NULL"
            ).scalars()
        )
        conn.exec_driver_sql(
            f"ALTER TABLE ledger_entries ALTER COLUMN {column} TYPE {new_type} USING {using}"
        )
        report = _verify(built, conn)
        tx.rollback()
    assert not report.ok and report.first_bad_seq == min(stored), report.problems[:5]
    odd = {p.seq for p in report.problems if p.check == "row" and column in p.message}
    assert odd == stored  # every entry that holds a value in the column
    assert report.entries == N_ENTRIES and report.complete


@pytest.mark.postgres
@pytest.mark.parametrize("built", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    "column", [c for c in ENTRY_COLUMNS if "null" not in ENTRY_STORAGE[c] and c != "seq"]
)
def test_postgres_a_null_in_a_required_column_is_reported_at_its_seq(
    built: Built, column: str
) -> None:
    with built.store.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql(f"ALTER TABLE ledger_entries ALTER COLUMN {column} DROP NOT NULL")
        conn.exec_driver_sql(
            f"UPDATE ledger_entries SET {column} = NULL WHERE seq = {built.target}"
        )
        conn.exec_driver_sql(f"UPDATE ledger_entries SET actor = 'x' WHERE seq = {LATER}")
        report = _verify(built, conn)
        tx.rollback()
    _assert_reported_and_continued(built, report, seq=built.target, column=column)


@pytest.mark.postgres
@pytest.mark.parametrize("built", ["postgres"], indirect=True)
def test_postgres_a_null_seq_names_the_seq_it_no_longer_holds(built: Built) -> None:
    with built.store.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql("ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey")
        conn.exec_driver_sql("ALTER TABLE ledger_entries ALTER COLUMN seq DROP NOT NULL")
        conn.exec_driver_sql(f"UPDATE ledger_entries SET seq = NULL WHERE seq = {built.target}")
        report = _verify(built, conn)
        tx.rollback()
    assert not report.ok and report.first_bad_seq == built.target, report.problems[:5]
    assert any(p.check == "row" and "seq" in p.message for p in report.problems)


@pytest.mark.parametrize("built", BACKENDS, indirect=True)
def test_an_edited_entry_is_named_not_the_start_of_its_cached_block(built: Built) -> None:
    """Editing one entry also breaks its 256-leaf block's cached hash and the checkpoints above
    it; ``first_bad_seq`` is the entry, not the block's first seq."""
    seq = built.target
    assert seq % 256 != 0
    with built.store.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql(f"UPDATE ledger_entries SET actor = 'x' WHERE seq = {seq}")
        report = _verify(built, conn)
        tx.rollback()
    assert report.first_bad_seq == seq, report.problems[:5]
    block = [p for p in report.problems if p.check == "chunk"]
    assert block and all(p.seq == seq for p in block)
    assert all(p.seq == seq for p in report.problems if p.check == "checkpoint")


@pytest.mark.parametrize("built", BACKENDS, indirect=True)
def test_a_damaged_block_cache_alone_names_no_entry(built: Built) -> None:
    with built.store.engine.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql(f"UPDATE ledger_chunks SET hash = '{'0' * 64}' WHERE idx = 1")
        report = _verify(built, conn)
        tx.rollback()
    assert not report.ok and report.first_bad_seq is None
    assert [p.check for p in report.problems] == ["chunk"]
    assert "the entries themselves verify" in report.problems[0].message


def _cli_ledger(tmp_path: Path, entries: int) -> tuple[Stores, dict[str, str]]:
    stores = Stores(
        tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}", f"sqlite:///{tmp_path / 'identity.db'}"
    )
    ledger = stores.open(checkpoint_every=1000)
    subject = ledger.vault.pseudonym_for("MRN-0001")
    while ledger.size() < entries:
        ledger.append_batch(
            [
                NewEntry(type="inference", actor="svc", subject=subject, payload=INFERENCE)
                for _ in range(min(500, entries - ledger.size()))
            ]
        )
    ledger.checkpoint()
    ledger.close()
    env = {"CLINICAL_MLOPS_HOME": str(tmp_path), **stores.env()}
    return stores, env


def _cli_verify(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    import json

    result = CliRunner().invoke(cli, ["audit", "verify", "--json"], env=env)
    try:
        body = json.loads(result.stdout)
    except ValueError:
        body = {}
    return result.exit_code, body, f"{result.stdout}{result.exception!r}"


def test_cli_verify_of_a_payload_restored_as_text_reports_the_entry(tmp_path: Path) -> None:
    """The attack report: ``UPDATE ... SET payload = CAST(payload AS TEXT)`` made `audit verify`
    exit with an OperationalError traceback."""
    stores, env = _cli_ledger(tmp_path, 40)
    engine = sa.create_engine(stores.ledger_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE ledger_entries SET payload = CAST(payload AS TEXT) WHERE seq = 17"
        )
    engine.dispose()
    code, body, shown = _cli_verify(env)
    assert code == 1, shown
    assert body["ok"] is False and body["first_bad_seq"] == 17 and body["complete"] is True
    assert body["entries"] == 40
    assert [(p["check"], p["seq"]) for p in body["problems"]] == [("row", 17)]
    assert "payload is stored as text" in body["problems"][0]["message"]


def test_cli_verify_names_an_edit_at_5000_not_4864(tmp_path: Path) -> None:
    stores, env = _cli_ledger(tmp_path, 5200)
    engine = sa.create_engine(stores.ledger_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_entries SET actor = 'mallory' WHERE seq = 5000")
    engine.dispose()
    code, body, shown = _cli_verify(env)
    assert code == 1, shown
    assert body["first_bad_seq"] == 5000
    assert {p["seq"] for p in body["problems"]} == {5000, 5001}  # the edit, its successor's chain


NEWEST_CHECKPOINT = "rowid = (SELECT rowid FROM ledger_checkpoints ORDER BY size DESC LIMIT 1)"


@pytest.mark.parametrize(
    ("table", "column", "value", "where", "check"),
    [
        ("ledger_checkpoints", "size", "'forty'", NEWEST_CHECKPOINT, "checkpoint"),
        ("ledger_checkpoints", "size", "X'28'", NEWEST_CHECKPOINT, "checkpoint"),
        ("ledger_checkpoints", "size", "40.5", NEWEST_CHECKPOINT, "checkpoint"),
        ("ledger_checkpoints", "root", "CAST(root AS BLOB)", NEWEST_CHECKPOINT, "checkpoint"),
        (
            "ledger_checkpoints",
            "origin",
            "CAST(X'ff' || CAST(origin AS BLOB) AS TEXT)",
            NEWEST_CHECKPOINT,
            "checkpoint",
        ),
        ("ledger_chunks", "hash", "CAST(hash AS BLOB)", "idx = 0", "chunk"),
        ("ledger_meta", "value", "CAST(value AS BLOB)", "key = 'format'", "meta"),
    ],
)
def test_cli_verify_reports_oddities_outside_the_entries(
    tmp_path: Path, table: str, column: str, value: str, where: str, check: str
) -> None:
    stores, env = _cli_ledger(tmp_path, 300)
    engine = sa.create_engine(stores.ledger_url)
    with engine.begin() as conn:
        changed = conn.exec_driver_sql(f"UPDATE {table} SET {column} = {value} WHERE {where}")
        assert changed.rowcount == 1
    engine.dispose()
    code, body, shown = _cli_verify(env)
    assert code == 1, shown
    assert body["ok"] is False and body["complete"] is True and body["entries"] == 300
    assert body["first_bad_seq"] is None  # no entry changed
    assert any(p["check"] == check and column in p["message"] for p in body["problems"]), body
