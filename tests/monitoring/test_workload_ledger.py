"""A monitor run reads the review workload from the ledger as the queue has it: predictions
routed to review at scoring, one case per encounter, decisions and how long cases waited."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.application.governance import case_queue, decide_case
from clinical_mlops.clock import FixedClock
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.runs import run_monitor, stored_windows
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace


def test_a_monitor_run_measures_the_workload_from_the_ledger(
    governed: dict[str, Any], tmp_path: Path
) -> None:
    """Predictions routed at scoring, one case per encounter, decisions: as the queue has them."""
    root = tmp_path / "ws"
    shutil.copytree(governed["ws"].root, root)
    ws = Workspace.open(root)
    t0 = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    clock = FixedClock(t0)
    rows = governed["rows"]
    with Predictor.open(ws, clock=clock, status_ttl=0) as p:
        results = p.predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{i}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[i],
                    encounter=f"ENC-{i}",
                )
                for i in range(80)
            ],
            requester="system:ehr",
        )
        routed = [r for r in results if r.escalated]
        assert len(routed) >= 4, "the test model should route some of 80 stays to review"
        clock.advance(timedelta(hours=2))
        # the first routed encounter scored again: still one case
        again = p.predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{results.index(routed[0])}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[results.index(routed[0])],
                    encounter=f"ENC-{results.index(routed[0])}",
                )
            ],
            requester="system:ehr",
        )
        assert again[0].escalated
    clock.advance(timedelta(hours=1))
    with Ledger.open(ws, clock=clock) as led:
        decide_case(led, routed[0].audit_seq, action="accept", actor="user:dr.a")
        clock.advance(timedelta(hours=2))
        decide_case(led, routed[1].audit_seq, action="override", actor="user:dr.a")
        open_total = case_queue(led, now=clock.now(), limit=0).total
    until = clock.now() + timedelta(minutes=30)
    run_monitor(ws, until=until, since=t0 - timedelta(hours=1), clock=FixedClock(until))
    [window] = [w for w in stored_windows(ws, governed["release"]) if not w.idle][-1:]
    q = window.quantities
    assert q.get("review_lookback") == 81
    assert q["review_rate"] == pytest.approx(100.0 * (len(routed) + 1) / 81)
    assert q["open_cases"] == open_total == len(routed) - 2
    assert q["reviews_decided"] == 2
    # case 1 waited 3 h (scored at t0, accepted at t0+3h), case 2 5 h
    assert q["review_latency_median_hours"] == pytest.approx(4.0, abs=1e-3)
    assert q["review_latency_p90_hours"] == pytest.approx(4.8, abs=1e-3)
