"""Group commit and seals: concurrent appends share transactions, each caller gets its own
receipts, one signature seals each transaction, and a sealed entry cannot be changed."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger.entries import body_bytes, leaf_bytes
from clinical_mlops.ledger.merkle import leaf_hash
from clinical_mlops.ledger.store import chunks, entries

THREADS = 8
CALLS = 25


def _alert(tag: str) -> NewEntry:
    return NewEntry(type="alert", actor="test", payload={"kind": "test", "message": tag})


def test_concurrent_appends_are_contiguous_durable_and_verify(ledger: Ledger) -> None:
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for c in range(CALLS):
                n = 1 + (t + c) % 4
                tags = [f"{t}:{c}:{k}" for k in range(n)]
                receipts = ledger.append_batch([_alert(tag) for tag in tags])
                seqs = [r.seq for r in receipts]
                # one caller's items stay together and in order
                assert seqs == list(range(seqs[0], seqs[0] + n))
                for tag, seq in zip(tags, seqs, strict=True):
                    got[tag] = [seq]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[0]
    expected = sum(1 + (t + c) % 4 for t in range(THREADS) for c in range(CALLS))
    assert len(got) == expected
    assert ledger.size() == expected
    for tag, (seq,) in got.items():
        assert ledger.read(seq).payload == {"kind": "test", "message": tag}  # type: ignore[comparison-overlap]
    report = ledger.verify(thorough=True)
    assert report.ok, report.problems[:3]
    # fewer signatures than entries: concurrent callers shared transactions (or batches did)
    assert report.signatures_checked < expected


def test_a_transaction_is_sealed_by_its_last_entry(ledger: Ledger) -> None:
    receipts = ledger.append_batch([_alert(f"a{i}") for i in range(5)])
    stored = [ledger.entry(r.seq) for r in receipts]
    assert [bool(e.signature) for e in stored] == [False, False, False, False, True]
    assert {e.sig_key_id for e in stored} == {stored[-1].sig_key_id}
    single = ledger.append(type="alert", actor="test", payload={"kind": "test", "message": "b"})
    assert ledger.entry(single.seq).signature  # a single append is its own seal
    assert ledger.verify(thorough=True).ok


def _rewrite(ledger: Ledger, seq: int, **changes: object) -> None:
    """Change columns of ``seq`` and re-link the chain after it (leaf and prev), as a forger would."""
    with ledger.store.engine.begin() as conn:
        conn.execute(sa.update(entries).where(entries.c.seq == seq).values(**changes))
        rows = conn.execute(sa.select(entries).where(entries.c.seq >= seq).order_by(entries.c.seq))
        prev = None
        for row in rows.mappings().all():
            fields = dict(row)
            if prev is not None:
                fields["prev_hash"] = prev
            body = body_bytes(
                {
                    "v": 1,
                    "seq": fields["seq"],
                    "time": fields["time"],
                    "type": fields["type"],
                    "schema": fields["schema"],
                    "actor": fields["actor"],
                    "subject": fields["subject"],
                    "key_id": fields["key_id"],
                    "payload_hash": fields["payload_hash"],
                    "public": fields["public"],
                    "prev": fields["prev_hash"],
                }
            )
            lh = leaf_hash(
                leaf_bytes(body, sig_key_id=fields["sig_key_id"], signature=fields["signature"])
            ).hex()
            conn.execute(
                sa.update(entries)
                .where(entries.c.seq == fields["seq"])
                .values(prev_hash=fields["prev_hash"], leaf_hash=lh)
            )
            prev = lh
        conn.execute(sa.delete(chunks))


def test_changing_a_sealed_entry_breaks_its_seal(ledger: Ledger) -> None:
    ledger.append_batch([_alert(f"x{i}") for i in range(3)])  # seqs 0..2
    ledger.append_batch([_alert(f"y{i}") for i in range(4)])  # seqs 3..6, sealed by 6
    _rewrite(ledger, 4, actor="forger")
    report = ledger.verify(thorough=True)
    assert not report.ok
    sig = [p for p in report.problems if p.check == "signature"]
    assert sig and sig[0].seq == 3 and "sealed by entry 6" in sig[0].message


def test_a_stripped_seal_is_detected(ledger: Ledger) -> None:
    ledger.append_batch([_alert(f"z{i}") for i in range(4)])  # seqs 0..3, sealed by 3
    _rewrite(ledger, 3, signature="")
    report = ledger.verify(thorough=True)
    assert any(
        p.check == "signature" and p.seq == 0 and "nothing seals them" in p.message
        for p in report.problems
    ), report.problems
