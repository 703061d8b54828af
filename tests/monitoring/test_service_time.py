"""The zero-override rule counts the release's time in service, never the look-back's length:
a release live for minutes is not "without an override for 14 days"."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from monitoring_world import requests_for

from clinical_mlops.clock import FixedClock
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.monitoring.alerts import list_alerts
from clinical_mlops.monitoring.records import epoch
from clinical_mlops.monitoring.runs import run_monitor, stored_windows
from clinical_mlops.monitoring.scenarios import PlantedScenario, ScoredStays, _resampled, _stream
from clinical_mlops.monitoring.windows import Monitor
from clinical_mlops.serving import Predictor
from clinical_mlops.workspace import Workspace

# After every entry the copied workspace holds: the ledger refuses a clock behind it.
T0 = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
WINDOW = 15 * 60.0


@pytest.fixture
def monitored(governed: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "ws"
    shutil.copytree(governed["ws"].root, root)
    return {"ws": Workspace.open(root), "release": governed["release"], "rows": governed["rows"]}


def _service_start(ws: Workspace, release: str) -> float:
    """Return when the release first began serving: its first rollout or deployment event."""
    with Ledger.open(ws) as led:
        with led.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entries.c.seq, entries.c.time)
                .where(entries.c.type.in_(("rollout_change", "deployment")))
                .order_by(entries.c.seq)
            ).all()
        return min(
            epoch(str(t)) for seq, t in rows if led.read(int(seq)).payload["release"] == release
        )


def _serve(ws: Workspace, rows: list[dict[str, Any]], at: datetime, first: int, n: int) -> None:
    with Predictor.open(ws, clock=FixedClock(at), status_ttl=0) as p:
        results = p.predict_many(
            requests_for(rows, range(first, first + n), ventilated=False, prefix="svc"),
            requester="system:ehr",
        )
    assert all(r.status == "scored" for r in results)


def test_a_release_live_for_minutes_raises_no_zero_override_alert(
    monitored: dict[str, Any],
) -> None:
    ws, release, rows = monitored["ws"], monitored["release"], monitored["rows"]
    # 600 predictions shown to clinicians within 48 minutes, none overridden
    for k in range(4):
        _serve(ws, rows, T0 + timedelta(minutes=12 * k), 150 * k, 150)
    until = T0 + timedelta(minutes=48)
    summary = run_monitor(ws, until=until, clock=FixedClock(until), act=False)
    assert summary["releases"][0]["records"] == 600
    assert [a for a in list_alerts(ws) if a.rule == "override_rate_zero"] == []
    started = _service_start(ws, release)
    last = stored_windows(ws, release)[-1]
    # the time in service since the release began serving, not the 14-day look-back
    assert last.quantities["hours_since_override"] == pytest.approx((last.at - started) / 3600)
    assert last.quantities["hours_since_override"] < 24 * 7

    # a week in service later, still without an override: now it fires, counting service time
    later = datetime.fromtimestamp(started, tz=UTC) + timedelta(days=7, hours=1)
    _serve(ws, rows, later, 600, 25)
    until = later + timedelta(minutes=15)
    run_monitor(ws, until=until, clock=FixedClock(until), act=False)
    (alert,) = [a for a in list_alerts(ws) if a.rule == "override_rate_zero"]
    window_end = math.floor(later.timestamp() / WINDOW) * WINDOW + WINDOW
    assert epoch(alert.opened_at) == window_end
    days = (window_end - started) / 86400
    assert 7 <= days < 14
    assert f"no override in {days:.1f} days in service while 625 predictions" in alert.summary


def test_time_out_of_service_does_not_count_towards_zero_overrides(scored: ScoredStays) -> None:
    sc = PlantedScenario(days=9.0, override_rate=0.0)
    rng = np.random.default_rng(sc.seed)
    rows, times = _resampled(scored, rng, days=sc.days, rate_per_hour=sc.rate_per_hour)
    stream = _stream(
        scored, rows, times, rng=rng, outcome_delay_hours=sc.outcome_delay_hours, override_rate=0.0
    )
    start = math.floor(float(times[0]) / WINDOW) * WINDOW
    monitor = Monitor(scored.reference)
    args = (stream.inferences, stream.outcomes, stream.overrides)

    def first_firing(**kw: Any) -> tuple[float, float]:
        run = monitor.run(*args, start=start, keep_windows=False, **kw)
        fired = [s for s in run.signals if s.rule == "override_rate_zero"]
        assert fired
        return epoch(fired[0].at), float(fired[0].value or 0.0)

    always_at, always_hours = first_firing()
    # taken out of service for a day on day 2: the alert comes a day later, at the same 7 days
    gap_at, gap_hours = first_firing(
        in_service=[(start, start + 2 * 86400), (start + 3 * 86400, None)]
    )
    assert always_at == start + 7 * 86400 and always_hours == pytest.approx(24 * 7)
    assert gap_at == always_at + 86400 and gap_hours == pytest.approx(always_hours)
    # in service from day 3 only: a week in service is reached on day 10 (outcomes still arrive)
    late_at, late_hours = first_firing(in_service=[(start + 3 * 86400, None)])
    assert late_at == start + 10 * 86400 and late_hours == pytest.approx(24 * 7)
