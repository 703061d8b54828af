"""Unique keys enforced by the store: one served prediction per request id, one decision and one
outcome per prediction, one correction per corrected record — under threads and group commit,
on both backends; and the one-time index of a ledger written before keys were unique."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.application.privacy import erase_subject
from clinical_mlops.application.services import Services
from clinical_mlops.errors import AlreadyRecorded, EntryPayloadInvalid, KeyNotFound
from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger import ledger as ledger_module
from clinical_mlops.ledger.claims import (
    claims,
    claims_built,
    new_request_ids,
    read_index,
    stored_key,
)
from evidence_helpers import Stores, race


def inference(subject: str, request_id: str) -> NewEntry:
    return NewEntry(
        type="inference",
        actor="system:ehr",
        subject=subject,
        payload={
            "model_version": "m-1",
            "dataset_sha256": "d" * 64,
            "inputs": {"age": 70},
            "raw_score": -1.0,
            "probability": 0.27,
            "conformal_set": ["no"],
            "explanation": {"contributions": None},
            "requester": "system:ehr",
            "purpose": "direct_care",
            "request_id": request_id,
        },
    )


def decision(subject: str, prediction: int, action: str = "accept", **extra: Any) -> NewEntry:
    return NewEntry(
        type="override",
        actor="user:dr.a",
        subject=subject,
        payload={
            "prediction_seq": prediction,
            "model_version": "m-1",
            "explanation_shown": [],
            "action": action,
        }
        | extra,
    )


def outcome(subject: str, prediction: int, value: int, **extra: Any) -> NewEntry:
    return NewEntry(
        type="outcome",
        actor="system:lab",
        subject=subject,
        payload={"prediction_seq": prediction, "outcome": value} | extra,
    )


def inference_ids(ledger: Ledger) -> list[str]:
    with ledger.store.engine.connect() as conn:
        seqs = conn.execute(
            sa.select(ledger_module.entries.c.seq).where(
                ledger_module.entries.c.type == "inference"
            )
        ).scalars()
        return [str(ledger.read(int(s)).payload["request_id"]) for s in seqs]  # type: ignore[index]


def test_concurrent_batches_sharing_a_request_id_record_exactly_one(
    ledger: Ledger, pseudonym: Callable[[str], str]
) -> None:
    psn = pseudonym("MRN-1")
    before = ledger.size()
    got = race(
        4,
        lambda i: ledger.append_batch([inference(psn, f"own-{i}"), inference(psn, "shared")]),
    )
    won = [g for g in got if isinstance(g, list)]
    lost = [g for g in got if isinstance(g, AlreadyRecorded)]
    assert len(won) == 1 and len(lost) == 3, got
    held = won[0][1].seq
    for refusal in lost:
        assert (refusal.scope, refusal.key, refusal.seq, refusal.index) == (
            "request",
            "shared",
            held,
            1,
        )
        assert "'shared' is already held by ledger entry" in str(refusal)
    # nothing of a refused batch: no seq used, no leaf added
    assert ledger.size() == before + 2
    assert sorted(inference_ids(ledger)) == sorted(["shared", _own(ledger, won[0])])
    report = ledger.verify(thorough=True)
    assert report.ok, report.problems[:3]


def _own(ledger: Ledger, receipts: list[Any]) -> str:
    return str(ledger.read(receipts[0].seq).payload["request_id"])  # type: ignore[index]


def test_group_commit_refuses_only_the_append_whose_key_is_taken(
    ledger: Ledger, pseudonym: Callable[[str], str]
) -> None:
    """Threads whose appends share a transaction with a refused one are still recorded."""
    psn = pseudonym("MRN-2")
    rounds, threads = 10, 8
    accepted = 0
    for r in range(rounds):
        # threads 0-3 send the round's shared id, 4-7 ids of their own
        got = race(
            threads,
            lambda i, r=r: ledger.append(
                **_fields(inference(psn, f"r{r}" if i < 4 else f"r{r}-{i}"))
            ),
        )
        assert sum(not isinstance(g, Exception) for g in got[:4]) == 1, got
        assert all(isinstance(g, AlreadyRecorded) for g in got[:4] if isinstance(g, Exception))
        assert not any(isinstance(g, Exception) for g in got[4:]), got
        accepted += sum(not isinstance(g, Exception) for g in got)
    assert accepted == rounds * 5
    ids = inference_ids(ledger)
    assert len(ids) == len(set(ids)) == rounds * 5
    assert ledger.size() == rounds * 5 and ledger.verify(thorough=True).ok


def _fields(item: NewEntry) -> dict[str, Any]:
    return {
        "type": item.type,
        "actor": item.actor,
        "payload": item.payload,
        "subject": item.subject,
    }


def test_one_decision_one_referral_one_outcome_per_prediction(
    ledger: Ledger, pseudonym: Callable[[str], str]
) -> None:
    psn = pseudonym("MRN-3")
    pred = ledger.append_batch([inference(psn, "p")])[0].seq
    first = ledger.append_batch([decision(psn, pred, "override")])[0].seq
    for action in ("accept", "override"):
        with pytest.raises(AlreadyRecorded) as caught:
            ledger.append_batch([decision(psn, pred, action)])
        assert (caught.value.scope, caught.value.key, caught.value.seq) == (
            "decision",
            str(pred),
            first,
        )
    referral = ledger.append_batch([decision(psn, pred, "escalate")])[0].seq
    with pytest.raises(AlreadyRecorded, match="senior_review") as caught:
        ledger.append_batch([decision(psn, pred, "escalate")])
    assert caught.value.seq == referral
    seen = ledger.append_batch([outcome(psn, pred, 1)])[0].seq
    with pytest.raises(AlreadyRecorded, match="one outcome per prediction") as caught:
        ledger.append_batch([outcome(psn, pred, 0)])
    assert caught.value.seq == seen
    # a correction supersedes one record, once; the next corrects the correction
    fixed = ledger.append_batch([outcome(psn, pred, 0, corrects=seen)])[0].seq
    with pytest.raises(AlreadyRecorded, match="one correction per corrected record"):
        ledger.append_batch([outcome(psn, pred, 1, corrects=seen)])
    again = ledger.append_batch([outcome(psn, pred, 1, corrects=fixed)])[0].seq
    assert ledger.latest_correction(seen) == again
    assert ledger.holders([("outcome", str(pred)), ("decision", str(pred + 99))]) == {
        ("outcome", str(pred)): seen
    }
    assert ledger.verify(thorough=True).ok


def test_a_batch_claiming_one_key_twice_is_refused_before_writing(
    ledger: Ledger, pseudonym: Callable[[str], str]
) -> None:
    psn = pseudonym("MRN-4")
    before = ledger.size()
    with pytest.raises(EntryPayloadInvalid, match="items 0 and 2 of this batch both claim"):
        ledger.append_batch([inference(psn, "x"), inference(psn, "y"), inference(psn, "x")])
    with pytest.raises(EntryPayloadInvalid, match="'corrects' must be the seq"):
        ledger.append_batch([outcome(psn, 0, 1, corrects="0")])
    assert ledger.size() == before


def test_a_ledger_from_before_unique_keys_is_indexed_and_its_duplicates_reported(
    stores: Stores,
    pseudonym: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    psn = pseudonym("MRN-5")
    # Written as a release without unique keys wrote it: nothing claimed, duplicates accepted.
    with monkeypatch.context() as m, stores.open() as old:
        m.setattr(ledger_module, "unique_keys", lambda *_: ())
        a = old.append_batch([inference(psn, "a")])[0].seq
        a_again = old.append_batch([inference(psn, "a")])[0].seq
        b = old.append_batch([inference(psn, "b")])[0].seq
        o1 = old.append_batch([outcome(psn, a, 1)])[0].seq
        o2 = old.append_batch([outcome(psn, a, 0)])[0].seq
        old.append_batch([outcome(psn, b, 1)])
        gone = pseudonym("MRN-6")
        old.append_batch([inference(gone, "a")])  # a duplicate too, but unreadable once erased
        erase_subject(
            Services.using(ledger=old), identifier="MRN-6", actor="dpo", reason="request 12"
        )
        with old.store.engine.connect() as conn:
            assert not sa.inspect(conn).has_table(claims.name)
    with stores.open() as upgraded, caplog.at_level(logging.WARNING):
        index = upgraded.ensure_claims()
        assert index.built_now and index.entries == 8
        assert index.claimed == 4 and index.unreadable == 1 and index.duplicate_entries == 2
        assert index.duplicates == [
            {"scope": "request", "kept": a, "also": [a_again]},
            {"scope": "outcome", "kept": o1, "also": [o2], "prediction": a},
        ]
        text = index.report_text()
        assert f"held by seq {a}, repeated by seq {a_again}" in text
        assert f"outcome of prediction {a} (one outcome per prediction): held by seq {o1}" in text
        assert "2 entries written before uniqueness was enforced" in caplog.text
        with pytest.raises(AlreadyRecorded) as caught:
            upgraded.append_batch([inference(psn, "b")])
        assert caught.value.seq == b
        upgraded.append_batch([inference(psn, "c")])
        assert upgraded.verify(thorough=True).ok
    with stores.open() as later:  # built once: read back, not rebuilt
        again = later.ensure_claims()
        assert not again.built_now and again.duplicates == index.duplicates
        with later.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(claims_built)).scalar() == 1


def test_an_entry_that_cannot_be_opened_stops_the_index_with_its_seq(
    stores: Stores, pseudonym: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key lost from the provider is not an erasure: the index is not built around it."""
    psn = pseudonym("MRN-7")
    with monkeypatch.context() as m, stores.open() as old:
        m.setattr(ledger_module, "unique_keys", lambda *_: ())
        seq = old.append_batch([inference(psn, "a")])[0].seq
    with stores.open() as upgraded:

        def lost(*_: Any, **__: Any) -> bytes:
            raise KeyNotFound("wrap key 'kek_1' is not in the keyring")

        monkeypatch.setattr(upgraded.vault, "data_key", lost)
        with pytest.raises(KeyNotFound, match=f"ledger entry {seq} cannot be opened to index"):
            upgraded.ensure_claims()
        with upgraded.store.engine.connect() as conn:
            assert read_index(conn) is None  # rolled back: nothing indexed, tables and all


def test_keys_are_stored_so_that_new_ones_land_together() -> None:
    """Seqs and generated ids sort as they are made; a client's text is stored as a digest."""
    first, later = new_request_ids(3), new_request_ids(1)
    assert len(set(first + later)) == 4 and all(len(i) == 36 for i in first + later)
    assert first[0][:16] == first[2][:16] <= later[0][:16]  # one clock read per call
    assert stored_key("request", first[0]) == first[0].encode("ascii")
    client = stored_key("request", "MRN-123-order-9")
    assert len(client) == 16 and b"MRN" not in client
    assert stored_key("request", "req_" + "G" * 32) != ("req_" + "G" * 32).encode()
    assert [stored_key("outcome", str(s)) for s in (9, 10, 255, 256)] == sorted(
        stored_key("outcome", str(s)) for s in (9, 10, 255, 256)
    )
