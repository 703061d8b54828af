"""``Ledger.read_from``: a range of entries in one streamed query, the same views as ``read``."""

from __future__ import annotations

from datetime import timedelta

from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger.retention import RetentionPolicy, purge_expired
from evidence_helpers import INFERENCE as BASE_INFERENCE

INFERENCE = BASE_INFERENCE | {"inputs": {"hr": 92, "gcs": None}, "purpose": "direct_care"}


def test_read_from_gives_the_views_read_gives_for_a_range_and_its_types(ledger: Ledger, pseudonym):
    p = pseudonym("MRN-0100")
    ledger.append(type="training_run", actor="pipeline", payload={"run_id": "r1"})
    ledger.append_batch(
        [
            NewEntry(type="inference", actor="svc", subject=p, payload=INFERENCE | {"n": i})
            for i in range(4)
        ]
        + [NewEntry(type="training_run", actor="pipeline", payload={"run_id": "r2"})]
    )
    ledger.clock.advance(timedelta(days=400))  # type: ignore[attr-defined]
    ledger.append(type="inference", actor="svc", subject=p, payload=INFERENCE | {"n": 9})
    purge_expired(ledger, policy=RetentionPolicy.from_days({"inference": 365}), actor="dpo")
    size = ledger.size()
    every = list(ledger.read_from(0))
    assert every == [ledger.read(s) for s in range(size)]
    assert [v.status for v in every if v.entry.type == "inference"] == ["purged"] * 4 + ["ok"]
    ranged = list(ledger.read_from(2, end=6, types=("inference",)))
    assert [v.entry.seq for v in ranged] == [2, 3, 4]
    assert list(ledger.read_from(size)) == []
    assert [v.entry.seq for v in ledger.read_from(-5, types=["training_run"])] == [0, 5]
