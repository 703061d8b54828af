"""Tamper battery (issue 4, "must show"): 1,000 randomised trials per backend on a ledger
of 1,000 entries; every tampering is detected and, where the tampered entry is
determined, ``first_bad_seq`` names it exactly — or, when only the signature of a seal
can tell (a forged row, a cut mid-transaction), the first entry of the sealed run.

Each trial tampers inside a transaction, verifies through the same connection
and rolls back, so the pristine ledger is built once. Roll-back-to-an-older-copy
trials use real older copies (SQLite backup files, PostgreSQL template databases)
verified against the checkpoint log kept outside the database.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.application.witness import init_witness, ledger_vkey
from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.ledger.entries import (
    Checkpoint,
    body_bytes,
    entry_signing_message,
    leaf_bytes,
)
from clinical_mlops.ledger.merkle import leaf_hash
from clinical_mlops.ledger.store import ENTRY_COLUMNS, LedgerStore
from clinical_mlops.ledger.verify import VerifyReport, verify_ledger
from clinical_mlops.ledger.witness import Witness, WitnessClient, cosigned_by
from clinical_mlops.privacy.keys import LocalKeyring
from evidence_helpers import BACKENDS, Stores, make_stores

N_ENTRIES = 1000
TRIALS = 1000
SHARDS = 4
OLD_COPIES = (300, 600, 900)


@dataclass
class Pristine:
    backend: str
    stores: Stores
    store: LedgerStore
    keys: dict[str, Any]
    logged: list[Checkpoint]
    old_copies: dict[int, str]  # size -> database URL of an older copy
    sig_key_id: str
    # checkpoints a witness cosigned, one per logged checkpoint, each verified on the way in
    witnessed: list[Checkpoint]


def _build(stores: Stores, backend: str, server: str | None) -> Pristine:
    rng = random.Random(4)
    old: dict[int, str] = {}
    ledger = stores.open(checkpoint_every=100)
    subjects = [ledger.vault.pseudonym_for(f"MRN-{i:04d}") for i in range(6)]
    while ledger.size() < N_ENTRIES:
        size = ledger.size()
        if size in OLD_COPIES:
            ledger.checkpoint()
            ledger.close()
            if backend == "sqlite":
                copy = stores.root / f"old-{size}.db"
                src = sqlite3.connect(stores.ledger_url.removeprefix("sqlite:///"))
                dst = sqlite3.connect(copy)
                src.backup(dst)
                src.close()
                dst.close()
                old[size] = f"sqlite:///{copy}"
            else:
                assert server is not None
                name = f"old_{size}_{stores.ledger_url.rsplit('/', 1)[1]}"
                admin = server.replace("postgresql+psycopg://", "postgresql://")
                import psycopg

                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(
                        f'CREATE DATABASE "{name}" TEMPLATE "{stores.ledger_url.rsplit("/", 1)[1]}"'
                    )
                old[size] = server.rsplit("/", 1)[0] + "/" + name
            ledger = stores.open(checkpoint_every=100)
        n = min(
            rng.choice([1, 1, 7, 50]),
            N_ENTRIES - size,
            min((s for s in OLD_COPIES if s > size), default=N_ENTRIES) - size,
        )
        batch = []
        for _ in range(n):
            kind = rng.random()
            if kind < 0.6:
                batch.append(
                    NewEntry(
                        type="inference",
                        actor="svc:predictor",
                        subject=rng.choice(subjects),
                        payload={
                            "model_version": "icu-1.0",
                            "dataset_sha256": "ab" * 32,
                            "inputs": {"hr": rng.randint(40, 160), "lactate": rng.random() * 8},
                            "raw_score": rng.random(),
                            "probability": rng.random(),
                            "conformal_set": [1],
                            "explanation": {"hr": 0.1},
                            "requester": "ehr",
                            "purpose": "mortality_risk",
                        },
                    )
                )
            elif kind < 0.8:
                batch.append(
                    NewEntry(
                        type="outcome",
                        actor="ehr",
                        subject=rng.choice(subjects),
                        # one outcome per prediction (a unique key): each names its own
                        payload={"prediction_seq": size + len(batch), "outcome": 0},
                    )
                )
            elif kind < 0.9:
                batch.append(
                    NewEntry(
                        type="status_change",
                        actor="dr.who",
                        payload={
                            "release": "icu-1.0",
                            "from_status": "validated",
                            "to_status": "approved",
                            "why": "gate 4",
                        },
                    )
                )
            else:
                batch.append(
                    NewEntry(type="training_run", actor="pipeline", payload={"run_id": f"r{size}"})
                )
        ledger.append_batch(batch)
    ledger.checkpoint()
    sig_key_id = ledger.provider.active_key_id("sign")
    logged, problems = CheckpointLog(stores.log_path).read()
    assert not problems
    witnessed = _witness_every_checkpoint(ledger, logged, stores.root / "witness")
    ledger.close()
    return Pristine(
        backend=backend,
        stores=stores,
        store=LedgerStore.open(stores.ledger_url, create=False),
        keys=LocalKeyring(stores.keys_dir).public_keys(),
        logged=logged,
        old_copies=old,
        sig_key_id=sig_key_id,
        witnessed=witnessed,
    )


def _witness_every_checkpoint(
    ledger: Ledger, logged: list[Checkpoint], state: Path
) -> list[Checkpoint]:
    """Return each logged checkpoint as cosigned by a file witness that saw them in order."""
    keys = ledger.provider.public_keys()
    init_witness(state, name="audit.example/w1", logs=[ledger_vkey(ledger)])
    witness = Witness(state)
    client = WitnessClient(str(state))
    out: list[Checkpoint] = []
    held = 0
    for cp in sorted(logged, key=lambda c: c.size):
        if cp.size == held:
            continue
        proof = ledger.consistency_proof(held, cp.size)["proof"] if held else []
        client.add_checkpoint(held, [bytes.fromhex(h) for h in proof], ledger.checkpoint_note(cp))
        held = cp.size
        latest = witness.latest(cp.note_origin)
        assert latest is not None
        note, _ = cosigned_by(latest, witness.verifier)
        out.append(Checkpoint.from_note(note, keys))
    assert [c.size for c in out] == sorted({c.size for c in logged if c.size})
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    backend = request.param
    stores = make_stores(backend, tmp_path_factory.mktemp(f"tamper-{backend}"), request)
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None
    p = _build(stores, backend, server)
    yield p
    p.store.close()


def _verify_witnessed(
    p: Pristine, store: LedgerStore, conn: sa.Connection, *, local_upto: int, witnessed: Checkpoint
) -> VerifyReport:
    """Verify with the checkpoint log as an attacker left it (nothing past ``local_upto``)."""
    return verify_ledger(
        store,
        conn,
        public_keys=p.keys,
        trusted_checkpoints=[c for c in p.logged if c.size <= local_upto],
        witnessed=[("audit.example/w1", witnessed)],
        fail_fast=True,
    )


def _verify(p: Pristine, store: LedgerStore, conn: sa.Connection) -> VerifyReport:
    return verify_ledger(
        store, conn, public_keys=p.keys, trusted_checkpoints=p.logged, fail_fast=True
    )


# -- tampering primitives ------------------------------------------------------------------
def _flip(value: Any, rng: random.Random, dialect: str) -> Any:
    """Return ``value`` with one byte XOR-ed (int: one byte of its 8-byte form)."""
    for _ in range(200):
        if isinstance(value, int):
            raw = bytearray(value.to_bytes(8, "big", signed=True))
        elif isinstance(value, bytes | memoryview):
            raw = bytearray(bytes(value))
        else:
            raw = bytearray(str(value).encode("utf-8"))
        pos = rng.randrange(len(raw))
        raw[pos] ^= rng.randrange(1, 256)
        if isinstance(value, int):
            return int.from_bytes(raw, "big", signed=True)
        if isinstance(value, bytes | memoryview):
            return bytes(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if dialect == "sqlite":
                return bytes(raw)  # SQLite stores the raw bytes (a BLOB in a TEXT column)
            continue  # PostgreSQL cannot hold invalid UTF-8 in TEXT: pick another flip
        if dialect == "postgresql" and "\x00" in text:
            continue
        return text
    raise AssertionError("no applicable flip found")


def _flip_cell(
    conn: sa.Connection,
    table: str,
    column: str,
    where: str,
    params: dict[str, Any],
    rng: random.Random,
) -> bool:
    value = conn.execute(sa.text(f"SELECT {column} FROM {table} WHERE {where}"), params).scalar()
    if value is None or value == "":  # nothing to flip (an entry sealed by a later one)
        return False
    for _ in range(20):
        new = _flip(value, rng, conn.dialect.name)
        nested = conn.begin_nested()
        try:
            conn.execute(
                sa.text(f"UPDATE {table} SET {column} = :new WHERE {where}"), {**params, "new": new}
            )
            nested.commit()
            return True
        except sa.exc.IntegrityError:  # e.g. a flipped seq that collides with another row
            nested.rollback()
    return False


def _row(conn: sa.Connection, seq: int) -> dict[str, Any]:
    row = conn.execute(sa.text("SELECT * FROM ledger_entries WHERE seq = :s"), {"s": seq}).first()
    assert row is not None
    return dict(row._mapping)


def _set_row(conn: sa.Connection, seq: int, values: dict[str, Any]) -> None:
    cols = [c for c in ENTRY_COLUMNS if c != "seq"]
    conn.execute(
        sa.text(
            f"UPDATE ledger_entries SET {', '.join(f'{c} = :{c}' for c in cols)} WHERE seq = :seq"
        ),
        {**{c: values[c] for c in cols}, "seq": seq},
    )


def _cut(conn: sa.Connection, k: int) -> None:
    """Delete entries >= k and, like a careful attacker, every database trace of them."""
    conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq >= :k"), {"k": k})
    conn.execute(sa.text("DELETE FROM ledger_checkpoints WHERE size > :k"), {"k": k})
    conn.execute(sa.text("DELETE FROM ledger_chunks WHERE (idx + 1) * 256 > :k"), {"k": k})


def _run_start(conn: sa.Connection, seq: int) -> int:
    """Return the first seq of the sealed run ``seq`` belongs to (the entry after the previous seal).

    Entries of one write transaction share the signature of its last entry; when a forged
    or missing seal breaks that signature, the first seq verify can name is the run's first.
    """
    prev_seal = conn.execute(
        sa.text("SELECT MAX(seq) FROM ledger_entries WHERE signature != '' AND seq < :s"),
        {"s": seq},
    ).scalar()
    return 0 if prev_seal is None else int(prev_seal) + 1


def _forge(p: Pristine, conn: sa.Connection, rng: random.Random, *, replace: int | None) -> int:
    """Write a well-formed entry (correct hashes, chain and leaf) without the ledger key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seq = N_ENTRIES if replace is None else replace
    prev_seq = seq - 1
    prev = _row(conn, prev_seq)["leaf_hash"]
    base = _row(conn, rng.randrange(N_ENTRIES))
    payload = hashlib.sha256(str(rng.random()).encode()).digest() * 4
    fields = {
        "v": 1,
        "seq": seq,
        "time": base["time"],
        "type": base["type"],
        "schema": base["schema"],
        "actor": "attacker",
        "subject": base["subject"],
        "key_id": base["key_id"],
        "payload_hash": hashlib.sha256(payload).hexdigest(),
        "public": base["public"],
        "prev": prev,
    }
    body = body_bytes(fields)
    if rng.random() < 0.5:  # a random signature under the real key id
        sig_key, signature = p.sig_key_id, rng.randbytes(64).hex()
    else:  # a valid signature under the attacker's own key
        sig_key = "sign-attacker"
        origin = conn.execute(
            sa.text("SELECT value FROM ledger_meta WHERE key = 'origin'")
        ).scalar()
        signature = (
            Ed25519PrivateKey.generate()
            .sign(
                entry_signing_message(origin=origin, body_hash_hex=hashlib.sha256(body).hexdigest())
            )
            .hex()
        )
    lh = leaf_hash(leaf_bytes(body, sig_key_id=sig_key, signature=signature)).hex()
    values = {
        "seq": seq,
        "time": fields["time"],
        "type": fields["type"],
        "schema": fields["schema"],
        "actor": "attacker",
        "subject": fields["subject"],
        "key_id": fields["key_id"],
        "payload_hash": fields["payload_hash"],
        "payload": payload,
        "public": fields["public"],
        "prev_hash": prev,
        "leaf_hash": lh,
        "sig_key_id": sig_key,
        "signature": signature,
    }
    if replace is None:
        conn.execute(
            sa.text(
                f"INSERT INTO ledger_entries ({', '.join(ENTRY_COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in ENTRY_COLUMNS)})"
            ),
            values,
        )
    else:
        _set_row(conn, seq, values)
    return seq


KINDS = (
    ["flip_entry"] * 36
    + ["flip_other"] * 10
    + ["delete"] * 10
    + ["swap"] * 10
    + ["cut_tail"] * 8
    + ["forge_append"] * 5
    + ["forge_replace"] * 4
    + ["checkpoint_sig"] * 7
    + ["rollback"] * 6
    # the checkpoint log rewritten too: only the witness's cosigned checkpoint tells
    + ["witness_cut"] * 2
    + ["witness_rollback"] * 2
)


def _trial(p: Pristine, conn: sa.Connection, rng: random.Random) -> tuple[str, int | None]:
    """Tamper; return (what was done, the seq verify must name, or None when not determined)."""
    kind = rng.choice(KINDS)
    if kind == "flip_entry":
        while True:
            seq, column = rng.randrange(N_ENTRIES), rng.choice(ENTRY_COLUMNS)
            if _flip_cell(conn, "ledger_entries", column, "seq = :s", {"s": seq}, rng):
                return f"flip {column}@{seq}", (None if column == "seq" else seq)
    if kind == "flip_other":
        while True:
            table = rng.choice(["ledger_checkpoints", "ledger_chunks", "ledger_meta"])
            if table == "ledger_checkpoints":
                row = rng.choice(
                    conn.execute(sa.text("SELECT size, time, key_id FROM ledger_checkpoints")).all()
                )
                column = rng.choice(["size", "time", "key_id", "origin", "root", "signature"])
                where, params = (
                    "size = :a AND time = :b AND key_id = :c",
                    {"a": row[0], "b": row[1], "c": row[2]},
                )
            elif table == "ledger_chunks":
                idx = rng.randrange(N_ENTRIES // 256)
                column = rng.choice(["idx", "hash"])
                where, params = "idx = :i", {"i": idx}
            else:
                column = rng.choice(["key", "value"])
                where, params = "key = :k", {"k": rng.choice(["origin", "format"])}
            if _flip_cell(conn, table, column, where, params, rng):
                return f"flip {table}.{column}", None
    if kind == "delete":
        seq = rng.randrange(N_ENTRIES)
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq = :s"), {"s": seq})
        return f"delete {seq}", seq
    if kind == "swap":
        i, j = sorted(rng.sample(range(N_ENTRIES), 2))
        a, b = _row(conn, i), _row(conn, j)
        _set_row(conn, i, b)
        _set_row(conn, j, a)
        return f"swap {i}<->{j}", i
    if kind == "cut_tail":
        k = rng.randrange(1, N_ENTRIES)
        start = _run_start(conn, k)  # k itself if the cut falls between transactions
        _cut(conn, k)
        return f"cut tail at {k}", start
    if kind == "forge_append":
        return "forge appended row", _forge(p, conn, rng, replace=None)
    if kind == "forge_replace":
        seq = rng.randrange(1, N_ENTRIES)
        start = _run_start(conn, seq)
        _forge(p, conn, rng, replace=seq)
        return f"forge row {seq}", start
    if kind == "checkpoint_sig":
        row = rng.choice(
            conn.execute(sa.text("SELECT size, time, key_id FROM ledger_checkpoints")).all()
        )
        assert _flip_cell(
            conn,
            "ledger_checkpoints",
            "signature",
            "size = :a AND time = :b AND key_id = :c",
            {"a": row[0], "b": row[1], "c": row[2]},
            rng,
        )
        return f"checkpoint signature at size {row[0]}", None
    if kind == "witness_cut":
        k = rng.randrange(1, N_ENTRIES)
        start = _run_start(conn, k)
        _cut(conn, k)
        return f"witness_cut at {k}", start
    assert kind in ("rollback", "witness_rollback")
    return kind, -1  # handled by the caller


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_tamper_battery_detects_every_trial(pristine: Pristine, shard: int):
    rng = random.Random(1000 + shard)
    counts: dict[str, int] = {}
    with pristine.store.engine.connect() as conn:
        with conn.begin():
            clean = _verify(pristine, pristine.store, conn)
        assert clean.ok, clean.problems
        assert clean.entries == N_ENTRIES and clean.checkpoints >= 10
        for trial in range(TRIALS // SHARDS):
            tx = conn.begin()
            try:
                what, expected = _trial(pristine, conn, rng)
                if what.startswith("witness_cut"):
                    # The attacker rewrote the checkpoint log as well: it ends before the cut.
                    k = int(what.rsplit(" ", 1)[1])
                    report = _verify_witnessed(
                        pristine,
                        pristine.store,
                        conn,
                        local_upto=k,
                        witnessed=rng.choice([c for c in pristine.witnessed if c.size > k]),
                    )
                elif what == "witness_rollback":
                    size = rng.choice(sorted(pristine.old_copies))
                    what, expected = f"witness_rollback to copy at {size}", size
                    old = LedgerStore.open(pristine.old_copies[size], create=False)
                    try:
                        with old.engine.connect() as old_conn, old_conn.begin():
                            report = _verify_witnessed(
                                pristine,
                                old,
                                old_conn,
                                local_upto=size,
                                witnessed=rng.choice(
                                    [c for c in pristine.witnessed if c.size > size]
                                ),
                            )
                    finally:
                        old.close()
                elif what == "rollback":
                    size = rng.choice(sorted(pristine.old_copies))
                    what, expected = f"rollback to copy at {size}", size
                    old = LedgerStore.open(pristine.old_copies[size], create=False)
                    try:
                        with old.engine.connect() as old_conn, old_conn.begin():
                            report = _verify(pristine, old, old_conn)
                    finally:
                        old.close()
                else:
                    report = _verify(pristine, pristine.store, conn)
            finally:
                tx.rollback()
            kind = what.split(" ")[0]
            counts[kind] = counts.get(kind, 0) + 1
            assert not report.ok, f"trial {trial}: {what} was NOT detected"
            if expected is not None:
                assert report.first_bad_seq == expected, (
                    f"trial {trial}: {what}: first_bad_seq {report.first_bad_seq}, "
                    f"expected {expected}; {report.problems[:3]}"
                )
        with conn.begin():
            after = _verify(pristine, pristine.store, conn)
    assert after.ok, "rolling back a trial must restore the pristine ledger"
    assert sum(counts.values()) == TRIALS // SHARDS
    assert len(counts) >= 7, counts
    # the two witness cases are part of the battery's trials, not extra ones
    assert counts.get("witness_cut", 0) and counts.get("witness_rollback", 0), counts


def test_untouched_copy_of_old_database_verifies_without_the_newer_checkpoints(pristine):
    # The older copy is itself a valid ledger: only the newer checkpoint exposes the rollback.
    size = min(pristine.old_copies)
    old = LedgerStore.open(pristine.old_copies[size], create=False)
    try:
        with old.engine.connect() as conn, conn.begin():
            alone = verify_ledger(old, conn, public_keys=pristine.keys)
            witnessed = verify_ledger(
                old, conn, public_keys=pristine.keys, trusted_checkpoints=pristine.logged
            )
    finally:
        old.close()
    assert alone.ok and alone.entries == size
    assert not witnessed.ok and witnessed.first_bad_seq == size


@pytest.mark.parametrize("pristine", ["sqlite"], indirect=True)
def test_sqlite_file_damage_is_detected_or_refused(tmp_path: Path, pristine: Pristine):
    """Raw byte damage to the database file: verify reports it, or opening fails clearly."""
    src = Path(pristine.stores.ledger_url.removeprefix("sqlite:///"))
    rng = random.Random(7)
    detected = 0
    for trial in range(20):
        copy = tmp_path / f"copy-{trial}.db"
        shutil.copy(src, copy)
        data = bytearray(copy.read_bytes())
        pos = rng.randrange(4096, len(data))  # leave the header page, damage content pages
        data[pos] ^= 0xFF
        copy.write_bytes(bytes(data))
        try:
            store = LedgerStore.open(f"sqlite:///{copy}", create=False)
            with store.engine.connect() as conn, conn.begin():
                report = verify_ledger(
                    store, conn, public_keys=pristine.keys, trusted_checkpoints=pristine.logged
                )
            store.close()
            if report.ok:
                # Only a byte in unused page space can leave every row unchanged.
                with sqlite3.connect(copy) as raw, sqlite3.connect(src) as orig:
                    dump = lambda c: list(c.iterdump())  # noqa: E731
                    assert dump(raw) == dump(orig), f"trial {trial}: changed rows not detected"
            else:
                detected += 1
        except Exception as exc:
            assert "ledger" in str(exc).lower() or "database" in str(exc).lower()
            detected += 1
    assert detected >= 10


@pytest.mark.parametrize("pristine", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("table", "column", "where", "kind", "says"),
    [
        (
            "ledger_checkpoints",
            "signature",
            "rowid = (SELECT min(rowid) FROM ledger_checkpoints)",
            "checkpoint",
            "not valid UTF-8",
        ),
        ("ledger_chunks", "hash", "idx = 0", "chunk", "wrong or missing"),
        ("ledger_meta", "value", "key = 'origin'", "meta", "not valid UTF-8"),
    ],
)
def test_invalid_utf8_outside_entries_is_reported_not_raised(
    tmp_path: Path, pristine: Pristine, table: str, column: str, where: str, kind: str, says: str
):
    """A text cell altered into invalid UTF-8 is a verify problem, not a driver error."""
    copy = tmp_path / "copy.db"
    shutil.copy(pristine.stores.ledger_url.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as raw:
        changed = raw.execute(
            f"UPDATE {table} SET {column} = CAST(X'ff' || CAST({column} AS BLOB) AS TEXT) "
            f"WHERE {where}"
        ).rowcount
    assert changed == 1
    store = LedgerStore.open(f"sqlite:///{copy}", create=False)
    try:
        with store.engine.connect() as conn, conn.begin():
            report = verify_ledger(
                store, conn, public_keys=pristine.keys, trusted_checkpoints=pristine.logged
            )
    finally:
        store.close()
    assert not report.ok
    assert any(p.check == kind and says in p.message for p in report.problems), report.problems
