"""Monitoring the clinicians' review workload: reviews per 100 scored predictions against the
release's review budget, the number of open cases and the time cases wait for a decision —
on simulated time (``test_workload_ledger`` reads them from a live ledger)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from clinical_mlops.monitoring.records import CaseRecords, InferenceRecords
from clinical_mlops.monitoring.scenarios import ScoredStays
from clinical_mlops.monitoring.windows import Monitor

START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


def _records(scored: ScoredStays, *, n: int, routed_every: int) -> InferenceRecords:
    """Return ``n`` predictions over ``n`` minutes; every ``routed_every``-th routed to review."""
    take = np.arange(n) % len(scored.p)
    return InferenceRecords.build(
        release=scored.reference.release,
        model_version=scored.reference.model_version,
        seq=np.arange(n),
        time=START + 60.0 * np.arange(n),
        probability=scored.p[take],
        inputs=scored.inputs.iloc[take].reset_index(drop=True),
        escalated=np.arange(n) % routed_every == 0,
    )


def _last(run: Any) -> dict[str, Any]:
    return next(w for w in reversed(run.windows) if not w.idle).quantities


def test_review_rate_open_cases_and_latency_are_measured_and_alerted(
    scored: ScoredStays,
) -> None:
    n, every = 600, 10  # 10 reviews per 100 scored, above the default budget of 5
    records = _records(scored, n=n, routed_every=every)
    end = START + 60.0 * n
    # 60 cases opened an hour apart... open ones, and decided ones with known waits
    waits = np.array([0.5, 1.0, 2.0, 3.0, 6.0, 7.5, 9.0, 12.0])
    decided_opened = end - 20 * HOUR + HOUR * np.arange(len(waits))
    decided_at = decided_opened + waits * HOUR
    still_open = end - 9 * HOUR + 60.0 * np.arange(55)
    cases = CaseRecords.build(
        opened=[*decided_opened.tolist(), *still_open.tolist()],
        decided=[*decided_at.tolist(), *[None] * len(still_open)],
    )
    monitor = Monitor(scored.reference)
    run = monitor.run(records, cases=cases, end=end + 15 * 60.0)
    q = _last(run)
    lookback = min(n, int(scored.reference.spec.monitoring.alert_volume_lookback_hours * 60))
    recent = records.escalated[-lookback:]
    assert q["review_lookback"] == lookback
    assert q["review_rate"] == pytest.approx(100.0 * recent.sum() / lookback)
    assert q["review_budget"] == 5.0
    assert q["open_cases"] == len(still_open)
    assert q["reviews_decided"] == len(waits)
    assert q["review_latency_median_hours"] == pytest.approx(float(np.median(waits)))
    assert q["review_latency_p90_hours"] == pytest.approx(float(np.quantile(waits, 0.9)))
    fired = {s.rule: s for s in run.signals}
    assert {"review_rate_high", "queue_size_high", "review_latency_high"} <= set(fired)
    for rule in ("review_rate_high", "queue_size_high", "review_latency_high"):
        assert fired[rule].kind == "workflow"
    assert fired["review_rate_high"].threshold == 5.0
    assert "review budget of 5 per 100" in fired["review_rate_high"].summary
    assert fired["queue_size_high"].value == len(still_open)
    assert fired["review_latency_high"].threshold == 4.0

    # the budget of the release's resolved policy (deployment.json) is the one applied
    generous = scored.reference.model_copy(update={"escalation": {"max_reviews_per_100": 12.0}})
    relaxed = Monitor(generous).run(records, cases=CaseRecords.empty(), end=end + 15 * 60.0)
    assert _last(relaxed)["review_budget"] == 12.0
    assert _last(relaxed)["open_cases"] == 0
    assert "review_rate_high" not in {s.rule for s in relaxed.signals}
    assert not {"queue_size_high", "review_latency_high"} & {s.rule for s in relaxed.signals}


def test_a_workload_within_its_limits_raises_nothing(scored: ScoredStays) -> None:
    records = _records(scored, n=600, routed_every=50)  # 2 per 100
    end = START + 60.0 * 600
    cases = CaseRecords.build(opened=[end - 3 * HOUR] * 6, decided=[end - 2 * HOUR] * 6)
    run = Monitor(scored.reference).run(records, cases=cases, end=end + 15 * 60.0)
    q = _last(run)
    assert q["review_rate"] == pytest.approx(2.0, abs=0.5)
    assert q["open_cases"] == 0 and q["review_latency_p90_hours"] == pytest.approx(1.0)
    assert not {"review_rate_high", "queue_size_high", "review_latency_high"} & {
        s.rule for s in run.signals
    }
