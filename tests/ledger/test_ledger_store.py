"""The ledger on both backends: append/read round trips, schemas, checkpoints, proofs,
concurrency, retention, key rotation, export bundles and bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_mlops.errors import (
    EntryNotFound,
    EntryPayloadInvalid,
    LedgerCorrupted,
    LedgerNotFound,
    SubjectNotFound,
    SubjectNotPseudonymised,
    UnknownEntryType,
)
from clinical_mlops.ledger import SCHEMAS, Ledger, NewEntry, record
from clinical_mlops.ledger.entries import Checkpoint
from clinical_mlops.ledger.export import export_bundle, verify_bundle
from clinical_mlops.ledger.merkle import verify_consistency, verify_inclusion
from clinical_mlops.ledger.retention import RetentionPolicy, purge_expired
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.workspace import Workspace
from evidence_helpers import INFERENCE, Stores


def test_append_and_read_round_trip(ledger: Ledger, pseudonym):
    p = pseudonym("MRN-0001")
    r0 = ledger.append(type="training_run", actor="pipeline", payload={"run_id": "r1"})
    r1 = ledger.append(type="inference", actor="svc", subject=p, payload=INFERENCE)
    assert (r0.seq, r1.seq) == (0, 1)
    view = ledger.read(1)
    assert view.status == "ok" and view.payload == INFERENCE
    assert view.entry.subject == p and view.entry.type == "inference"
    assert view.entry.schema == "inference/v1"
    assert view.entry.time == "2024-03-01T08:00:00.000000Z"  # from the injected clock
    assert view.entry.prev_hash == r0.leaf_hash
    assert b"mortality_risk" not in (view.entry.payload or b"")  # stored encrypted
    assert ledger.verify().ok


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payloads=st.lists(
        st.dictionaries(
            st.text(min_size=1, max_size=8),
            st.one_of(
                st.integers(-(2**53), 2**53),
                st.text(max_size=20),
                st.booleans(),
                st.none(),
                st.floats(allow_nan=False, allow_infinity=False),
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_json_payload_round_trips_and_verifies(ledger: Ledger, payloads):
    start = ledger.size()
    receipts = ledger.append_batch(
        [NewEntry(type="snapshot_built", actor="pipeline", payload=p) for p in payloads]
    )
    assert [r.seq for r in receipts] == list(range(start, start + len(payloads)))
    for r, p in zip(receipts, payloads, strict=True):
        assert ledger.read(r.seq).payload == p
    assert ledger.verify().ok


def test_every_declared_type_has_a_versioned_schema():
    for name in (
        "inference",
        "override",
        "outcome",
        "approval",
        "status_change",
        "alert",
        "escalation",
        "review",
        "incident",
        "erasure",
        "key_rotation",
        "purge",
        "snapshot_built",
        "training_run",
        "report_written",
    ):
        assert name in SCHEMAS and all(s.id == f"{name}/v{v}" for v, s in SCHEMAS[name].items())


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"type": "coffee_break"}, UnknownEntryType, "not declared"),
        (
            {"type": "inference", "payload": {"model_version": "x"}},
            EntryPayloadInvalid,
            "lacks required",
        ),
        (
            {
                "type": "approval",
                "payload": {"release": "r", "role": "clin", "decision": 1, "why": "w"},
            },
            EntryPayloadInvalid,
            "'decision' must be str",
        ),
        (
            {"type": "inference", "payload": INFERENCE, "subject": "MRN-0001"},
            SubjectNotPseudonymised,
            "identifiers never enter the ledger",
        ),
        ({"type": "training_run", "actor": " "}, EntryPayloadInvalid, "actor"),
        (
            {
                "type": "approval",
                "subject": "psn_" + "0" * 32,
                "payload": {"release": "r", "role": "c", "decision": "ok", "why": "w"},
            },
            EntryPayloadInvalid,
            "carries no subject",
        ),
        ({"type": "training_run", "public": {"pseudonym": "x"}}, EntryPayloadInvalid, "public"),
    ],
)
def test_bad_entries_are_refused_and_nothing_is_written(ledger: Ledger, kwargs, error, fragment):
    ledger.append(type="training_run", actor="pipeline", payload={"run_id": "ok"})
    item = {"actor": "svc", "payload": {}, **kwargs}
    batch = [
        NewEntry(type="training_run", actor="svc", payload={"run_id": "fine"}),
        NewEntry(**item),
    ]
    with pytest.raises(error, match=fragment):
        ledger.append_batch(batch)
    assert ledger.size() == 1  # the good item of the batch was not written either


def test_unknown_pseudonym_cannot_get_a_data_key(ledger: Ledger):
    with pytest.raises(SubjectNotFound, match="not in the identity vault"):
        ledger.append(
            type="outcome",
            actor="ehr",
            subject="psn_" + "1" * 32,
            payload={"prediction_seq": 0, "outcome": 1},
        )
    assert ledger.size() == 0


def test_checkpoints_are_made_periodically_and_on_demand(ledger: Ledger, stores: Stores):
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(250)]
    )
    sizes = [cp.size for cp in ledger.checkpoints()]
    assert sizes == [250]  # count trigger (every 100) fires after the batch
    ledger.append(type="training_run", actor="p", payload={"run_id": "x"})
    cp = ledger.checkpoint()
    assert cp.size == 251 and ledger.checkpoint() == cp  # idempotent when nothing new
    ledger.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    ledger.append(type="training_run", actor="p", payload={"run_id": "y"})  # interval trigger
    assert [c.size for c in ledger.checkpoints()] == [250, 251, 252]
    logged = [json.loads(line) for line in stores.log_path.read_text().splitlines()]
    assert [c["size"] for c in logged] == [250, 251, 252]
    report = ledger.verify()
    assert report.ok and report.checkpoints == 3  # database and log copies are the same three


def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(ledger: Ledger):
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(700)]
    )
    old = ledger.checkpoint()
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(333)]
    )
    new = ledger.checkpoint()
    for seq in (0, 255, 256, 511, 699, 700, 1032):
        proof = ledger.inclusion_proof(seq, size=new.size)
        assert proof["root"] == new.root
        assert verify_inclusion(
            leaf=bytes.fromhex(proof["leaf_hash"]),
            index=seq,
            size=new.size,
            proof=[bytes.fromhex(h) for h in proof["proof"]],
            root=bytes.fromhex(new.root),
        )
    default = ledger.inclusion_proof(5)
    assert default["size"] == new.size  # proves against the latest checkpoint by default
    cons = ledger.consistency_proof(old.size, new.size)
    assert (cons["old_root"], cons["new_root"]) == (old.root, new.root)
    assert verify_consistency(
        old_size=old.size,
        new_size=new.size,
        proof=[bytes.fromhex(h) for h in cons["proof"]],
        old_root=bytes.fromhex(old.root),
        new_root=bytes.fromhex(new.root),
    )
    with pytest.raises(EntryNotFound):
        ledger.inclusion_proof(5000)


def _append_many(url: str, identity_url: str, keys: str, log: str, worker: int, n: int) -> None:
    stores = Stores(Path(keys).parent, url, identity_url)
    with stores.open(checkpoint_every=10_000) as ledger:
        for i in range(n):
            ledger.append(
                type="alert",
                actor=f"proc-{worker}",
                payload={"kind": "test", "message": f"proc{worker}:{i}"},
            )


def test_appends_from_threads_and_processes_serialise_into_one_valid_order(stores: Stores):
    with stores.open(checkpoint_every=10_000) as ledger:
        ledger.append(type="training_run", actor="init", payload={})  # keys + system key exist

        def work(t: int) -> None:
            for i in range(25):
                if i % 5 == 0:
                    ledger.append_batch(
                        [
                            NewEntry(
                                type="alert",
                                actor=f"thread-{t}",
                                payload={"kind": "b", "message": f"{t}:{i}:{j}"},
                            )
                            for j in range(3)
                        ]
                    )
                else:
                    ledger.append(
                        type="alert",
                        actor=f"thread-{t}",
                        payload={"kind": "t", "message": f"{t}:{i}"},
                    )

        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(
                target=_append_many,
                args=(
                    stores.ledger_url,
                    stores.identity_url,
                    str(stores.keys_dir),
                    str(stores.log_path),
                    w,
                    30,
                ),
            )
            for w in range(3)
        ]
        for p in procs:
            p.start()
        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        expected = 1 + 6 * (20 + 5 * 3) + 3 * 30
        assert ledger.size() == expected
        messages = [ledger.read(s).payload["message"] for s in range(1, expected)]  # type: ignore
        assert len(set(messages)) == expected - 1  # none lost, none duplicated
        ledger.checkpoint()
        report = ledger.verify(thorough=True)
        assert report.ok, report.problems[:3]
        seals = sum(1 for s in range(expected) if ledger.entry(s).signature)
        assert report.entries == expected and report.signatures_checked == seals
        assert seals < expected  # batches (and concurrent callers) share one seal


def test_purge_removes_expired_payloads_as_an_audited_event(ledger: Ledger, pseudonym):
    p = pseudonym("MRN-0002")
    ledger.append_batch(
        [NewEntry(type="inference", actor="svc", subject=p, payload=INFERENCE) for _ in range(5)]
    )
    ledger.append(
        type="approval",
        actor="dr.a",
        payload={"release": "r1", "role": "clinical", "decision": "approve", "why": "ok"},
    )
    ledger.clock.advance(timedelta(days=400))  # type: ignore[attr-defined]
    ledger.append(type="inference", actor="svc", subject=p, payload=INFERENCE)  # still fresh
    policy = RetentionPolicy.from_days({"inference": 365})
    result = purge_expired(ledger, policy=policy, actor="dpo")
    assert result.purged == 5 and result.ranges == [(0, 5)]
    assert result.seq is not None
    purge = ledger.read(result.seq)
    assert purge.entry.type == "purge" and json.loads(purge.entry.public)["ranges"] == [[0, 5]]
    assert [ledger.read(s).status for s in range(7)] == ["purged"] * 5 + ["ok", "ok"]
    assert ledger.verify().ok
    again = purge_expired(ledger, policy=policy, actor="dpo")
    assert again.purged == 0 and again.seq is None
    # Clearing a payload without a purge entry is tampering.
    with ledger.store.writer() as conn:
        conn.execute(sa.text("UPDATE ledger_entries SET payload = NULL WHERE seq = 5"))
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 5
    with pytest.raises(ValueError, match="never purged"):
        RetentionPolicy.from_days({"erasure": 1})


def test_rotated_wrap_key_encrypts_new_data_and_old_data_still_opens(ledger: Ledger, pseudonym):
    p = pseudonym("MRN-0003")
    first = ledger.append(
        type="outcome", actor="ehr", subject=p, payload={"prediction_seq": 0, "outcome": 1}
    )
    old_dek = ledger.read(first.seq).entry.key_id
    rotation = ledger.rotate_key(purpose="wrap", actor="security")
    public = json.loads(ledger.read(rotation.seq).entry.public)
    assert public["old_key_id"] != public["new_key_id"]
    second = ledger.append(
        type="outcome", actor="ehr", subject=p, payload={"prediction_seq": 1, "outcome": 0}
    )
    assert ledger.read(second.seq).entry.key_id != old_dek  # new data key under the new KEK
    assert ledger.read(first.seq).payload == {"prediction_seq": 0, "outcome": 1}
    sign_rot = ledger.rotate_key(purpose="sign", actor="security")
    after = ledger.append(type="training_run", actor="p", payload={})
    assert (
        ledger.read(after.seq).entry.sig_key_id
        == json.loads(ledger.read(sign_rot.seq).entry.public)["new_key_id"]
    )
    assert ledger.verify(thorough=True).ok


def test_export_bundle_verifies_offline_and_detects_changes(ledger: Ledger):
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(300)]
    )
    earlier = ledger.checkpoint()
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(50)]
    )
    bundle = export_bundle(ledger, start=290, end=320, previous_size=earlier.size)
    text = json.dumps(bundle)
    report = verify_bundle(json.loads(text))
    assert report.ok and report.entries == 30 and report.checkpoints == 2
    pins = dict(bundle["public_keys"])
    assert verify_bundle(json.loads(text), pinned_keys=pins).ok
    assert not verify_bundle(json.loads(text), pinned_keys={"other": "00" * 32}).ok
    changed = json.loads(text)
    changed["entries"][7]["time"] = "2030-01-01T00:00:00.000000Z"
    bad = verify_bundle(changed)
    assert not bad.ok and bad.first_bad_seq == 297
    forked = json.loads(text)
    forked["consistency_proof"][0] = "00" * 32
    assert any(p.check == "consistency" for p in verify_bundle(forked).problems)


def test_record_entry_point_appends_to_the_workspace_ledger(
    tmp_path: Path, monkeypatch, stores: Stores
):
    for key, value in stores.env().items():
        monkeypatch.setenv(key, value)
    ws = Workspace.open(tmp_path / "ws2")
    for entry_type in ("snapshot_built", "training_run", "report_written"):
        receipt = record(ws, type=entry_type, actor="pipeline", payload={"id": entry_type})
        assert receipt.time.endswith("Z")
    with Ledger.open(ws, create=False) as ledger:
        assert [ledger.read(s).entry.type for s in range(3)] == [
            "snapshot_built",
            "training_run",
            "report_written",
        ]
        assert ledger.verify().ok
    assert (ws.root / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600


def test_missing_and_corrupted_databases_are_refused_without_writing(tmp_path: Path):
    missing = tmp_path / "nowhere" / "ledger.db"
    with pytest.raises(LedgerNotFound, match="nothing was created"):
        LedgerStore.open(f"sqlite:///{missing}", create=False)
    assert not missing.exists() and not missing.parent.exists()
    garbage = tmp_path / "ledger.db"
    garbage.write_bytes(os.urandom(8192))
    before = garbage.read_bytes()
    for create in (False, True):
        with pytest.raises(LedgerCorrupted, match=r"ledger\.db is not a readable SQLite database"):
            LedgerStore.open(f"sqlite:///{garbage}", create=create)
    assert garbage.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]  # no -wal, no -journal
    other = tmp_path / "other.db"
    import sqlite3

    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerCorrupted, match="not a clinical-mlops ledger"):
        LedgerStore.open(f"sqlite:///{other}", create=False)


def test_a_new_sqlite_ledger_uses_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path):
    import sqlite3

    from clinical_mlops.ledger.store import LEDGER_PAGE_SIZE

    def page_size(path: Path) -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])

    new = tmp_path / "new" / "ledger.db"
    LedgerStore.open(f"sqlite:///{new}").close()
    assert page_size(new) == LEDGER_PAGE_SIZE == 16384
    old = tmp_path / "old" / "ledger.db"
    old.parent.mkdir()
    with sqlite3.connect(old) as conn:  # a ledger made before, with SQLite's default pages
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    store = LedgerStore.open(f"sqlite:///{old}")  # made into a ledger, pages unchanged
    with store.engine.connect() as conn:
        assert store.size(conn) == 0
    store.close()
    assert page_size(old) == 4096


def test_checkpoint_from_another_ledger_is_reported(ledger: Ledger, stores: Stores):
    ledger.append(type="training_run", actor="p", payload={})
    cp = ledger.checkpoint()
    foreign = Checkpoint(**{**cp.to_json(), "origin": "ledger-elsewhere"})
    report = ledger.verify(trusted=[foreign])
    assert not report.ok and "signature does not verify" in report.problems[0].message


def test_full_report_names_the_first_bad_seq_and_every_problem(ledger: Ledger):
    ledger.append_batch(
        [NewEntry(type="training_run", actor="p", payload={"run_id": str(i)}) for i in range(60)]
    )
    ledger.checkpoint()
    with ledger.store.writer() as conn:
        conn.execute(sa.text("UPDATE ledger_entries SET actor = 'x' WHERE seq IN (12, 40)"))
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq = 50"))
    report = ledger.verify()
    assert not report.ok and report.complete and report.first_bad_seq == 12
    bad = {p.seq for p in report.problems}
    assert {12, 40, 50} <= bad
    assert report.to_json()["first_bad_seq"] == 12


def test_checkpoint_log_torn_line_is_ignored_and_forged_line_reported(
    ledger: Ledger, stores: Stores
):
    ledger.append(type="training_run", actor="p", payload={})
    cp = ledger.checkpoint()
    with stores.log_path.open("a") as fh:
        fh.write('{"origin": "torn')  # a crash mid-write: no newline
    assert ledger.verify().ok
    with stores.log_path.open("a") as fh:
        fh.write("\n" + json.dumps({**cp.to_json(), "size": cp.size + 5}) + "\n")
    report = ledger.verify()
    assert not report.ok
    messages = " ".join(p.message for p in report.problems)
    assert "unreadable checkpoint" in messages and "signature does not verify" in messages


def test_chunks_stay_right_when_two_ledgers_take_turns_across_chunk_boundaries(stores: Stores):
    """Each ledger remembers the leaves of the chunk it left incomplete; when the other one
    wrote in between (even exactly a chunk, so the lengths match), it reads them back
    instead. Every chunk hash is then checked."""
    with stores.open(checkpoint_every=10_000) as one, stores.open(checkpoint_every=10_000) as two:
        one.append(type="training_run", actor="init", payload={})
        turns = [(one, 40), (two, 256), (one, 300), (one, 3), (two, 255), (one, 100)]
        turns += [(two, 1), (two, 300), (one, 256), (one, 40), (two, 256), (one, 260)]
        for turn, (writer, n) in enumerate(turns):
            writer.append_batch(
                [
                    NewEntry(
                        type="alert", actor="t", payload={"kind": "c", "message": f"{turn}:{j}"}
                    )
                    for j in range(n)
                ]
            )
        assert one.size() == 1 + sum(n for _, n in turns)
        report = one.verify(thorough=True)
        assert report.ok, report.problems[:3]
