"""The published drift scenario, planted faults and bad input, on simulated time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clinical_mlops.errors import MonitoringError, ReferenceProfileMissing
from clinical_mlops.evaluation.metrics import auroc
from clinical_mlops.monitoring.records import OutcomeRecords
from clinical_mlops.monitoring.scenarios import (
    DETECTORS,
    DriftScenario,
    PlantedScenario,
    ScoredStays,
    _stream,
    clean_stream,
    count_alerts,
    drift_scenario,
    fairness_scenario,
    workflow_scenario,
)
from clinical_mlops.monitoring.windows import Monitor


@pytest.fixture(scope="module")
def drift_result(scored: ScoredStays):
    return drift_scenario(scored, DriftScenario())


def test_ventilation_shift_is_detected_and_escalated_within_48_hours(drift_result) -> None:
    f = drift_result.figures
    assert f["feature_prevalence_after"] == pytest.approx(0.72, abs=0.005)
    assert abs(f["feature_prevalence_before"] - 0.72) > 0.2
    assert f["detected"] and f["detected_within_48h"] and f["escalated_within_48h"]
    assert set(f["detection_delay_hours"]) == set(DETECTORS) == set(f["detection_delay_stays"])
    # PSI on the shifted input and a river detector on it both fire, well inside 48 h.
    for name in ("psi_input", "adwin_input", "page_hinkley_input"):
        assert f["detection_delay_hours"][name] is not None
        assert 0 < f["detection_delay_hours"][name] <= 48
        assert 0 < f["detection_delay_stays"][name] <= 2000
    # The goal: about 6 hours (250 shifted stays) for the fastest detector.
    assert min(h for h in f["detection_delay_hours"].values() if h is not None) <= 6
    escalate = f["escalation"]["escalate"]
    assert escalate["after_hours"] <= 48 and escalate["rule"].startswith("input_")
    # Shifted stays seen agree with the hours at 40 stays per hour (Poisson arrivals).
    h, n = f["detection_delay_hours"]["psi_input"], f["detection_delay_stays"]["psi_input"]
    assert n == pytest.approx(40 * h, rel=0.35)


def test_no_more_than_one_false_alarm_in_30_unshifted_days(drift_result) -> None:
    f = drift_result.figures
    assert f["clean_stream"]["days"] >= 30 and f["clean_stream"]["stays"] >= 28_000
    assert f["false_alarms_30d"] <= 1
    assert f["false_alarms_before_shift"] == 0


def test_auroc_before_and_after_are_the_stays_own(drift_result, scored: ScoredStays) -> None:
    f = drift_result.figures
    stream = drift_result.stream
    n_shift = 2000
    y, p = stream.y, stream.inferences.probability
    assert f["auroc_before"] == pytest.approx(auroc(y[:-n_shift], p[:-n_shift]), abs=1e-4)
    assert f["auroc_after"] == pytest.approx(auroc(y[-n_shift:], p[-n_shift:]), abs=1e-4)
    assert f["auroc_validated"] == pytest.approx(scored.reference.validated_auroc, abs=1e-4)


def test_the_shift_changes_only_the_flag(scored: ScoredStays) -> None:
    from clinical_mlops.monitoring.scenarios import _shift_flag

    rows = np.arange(len(scored.p))
    frame, before, after = _shift_flag(
        scored, rows, feature="ventilation", target=0.72, rng=np.random.default_rng(0)
    )
    other = [c for c in frame.columns if c != "ventilation"]
    assert frame[other].equals(scored.inputs[other])
    new, old = frame["ventilation"].to_numpy(), scored.inputs["ventilation"].to_numpy()
    raised = (new != old) & ~(np.isnan(new) & np.isnan(old))  # an unmeasured flag stays so
    assert (old[raised] == 0).all()
    assert after == pytest.approx(0.72, abs=0.01) and before < after


def test_scenario_parameters_are_checked(scored: ScoredStays) -> None:
    with pytest.raises(MonitoringError, match="clean_days: the false-alarm stream"):
        drift_scenario(scored, DriftScenario(clean_days=10))
    with pytest.raises(MonitoringError, match="feature: 'age' is not a flag"):
        drift_scenario(scored, DriftScenario(feature="age"))


def test_planted_degradation_in_one_age_group_raises_the_fairness_alert(
    scored: ScoredStays,
) -> None:
    planted, _ = fairness_scenario(scored, attribute="age_group", group="65-79")
    fairness = [a for a in planted if a.rule == "fairness_gap"]
    assert [a.subgroup for a in fairness] == ["age_group=65-79"]
    assert fairness[0].kind == "fairness" and fairness[0].action == "escalate"
    clean, run = fairness_scenario(scored, attribute="age_group", group="65-79", planted=False)
    assert [a for a in clean if a.kind == "fairness"] == []
    assert clean == []
    assert run.n_windows >= 6 * 24 * 4


def test_zero_overrides_and_a_very_high_override_rate_raise_workflow_alerts(
    scored: ScoredStays,
) -> None:
    never, _ = workflow_scenario(scored, override_rate=0.0)
    assert [(a.rule, a.kind) for a in never] == [("override_rate_zero", "workflow")]
    assert "no override" in never[0].summary
    most, _ = workflow_scenario(scored, override_rate=0.6)
    assert [(a.rule, a.kind) for a in most] == [("override_rate_high", "workflow")]
    usual, _ = workflow_scenario(scored, override_rate=0.05)
    assert usual == []


def test_windows_without_traffic_raise_nothing(scored: ScoredStays) -> None:
    sc = DriftScenario(clean_days=30)
    stream = clean_stream(scored, replace(sc, clean_days=30))
    inf = stream.inferences
    # A 12-hour outage on day 3: nothing arrives, nothing is decided.
    t0 = inf.time[0] + 3 * 86400
    keep = (inf.time < t0) | (inf.time > t0 + 12 * 3600)
    keep[inf.time > inf.time[0] + 5 * 86400] = False
    rows = np.flatnonzero(keep)
    from clinical_mlops.monitoring.records import InferenceRecords, OverrideRecords

    sub = InferenceRecords.build(
        release=inf.release,
        model_version=inf.model_version,
        seq=inf.seq[rows],
        time=inf.time[rows],
        probability=inf.probability[rows],
        inputs=inf.inputs.iloc[rows].reset_index(drop=True),
    )
    seqs = set(inf.seq[rows].tolist())
    o = stream.outcomes
    ok = np.array([s in seqs for s in o.seq.tolist()])
    v = stream.overrides
    vk = np.array([s in seqs for s in v.seq.tolist()])
    run = Monitor(scored.reference).run(
        sub,
        OutcomeRecords.build(seq=o.seq[ok], outcome=o.outcome[ok], time=o.time[ok]),
        OverrideRecords.build(
            seq=v.seq[vk],
            time=v.time[vk],
            action=[a for a, k in zip(v.action, vk, strict=True) if k],
        ),
    )
    in_gap = [w for w in run.windows if t0 + 7 * 3600 < w.at <= t0 + 12 * 3600]
    assert in_gap and all(w.idle or w.quantities["insufficient_inputs"] for w in in_gap)
    assert all(not w.signals for w in in_gap)
    assert count_alerts(run.signals) == []


def test_repeated_unknown_and_shuffled_outcomes_change_nothing(scored: ScoredStays) -> None:
    sc = PlantedScenario(days=4)
    rng = np.random.default_rng(5)
    n = round(40 * 24 * sc.days)
    times = np.sort(rng.uniform(0, sc.days * 86400, n)) + 1.7e9
    rows = rng.integers(0, len(scored.p), n)
    stream = _stream(scored, rows, times, rng=rng, outcome_delay_hours=48, override_rate=0.05)
    o = stream.outcomes
    baseline = Monitor(scored.reference).run(stream.inferences, o, stream.overrides)
    # Every outcome twice, a third copy flipped, 500 for predictions nobody made, all shuffled.
    messy_seq = np.r_[o.seq, o.seq, o.seq[:300], np.arange(10**6, 10**6 + 500)]
    messy_y = np.r_[o.outcome, o.outcome, 1 - o.outcome[:300], np.ones(500)]
    messy_t = np.r_[o.time, o.time + 60, o.time[:300] + 120, o.time[:500]]
    order = rng.permutation(len(messy_seq))
    messy = OutcomeRecords.build(seq=messy_seq[order], outcome=messy_y[order], time=messy_t[order])
    run = Monitor(scored.reference).run(stream.inferences, messy, stream.overrides)
    assert run.rejected == {
        "unknown": 500,
        "duplicate": len(o.seq),
        "conflicting": 300,
        "invalid": 0,
    }
    assert count_alerts(run.signals) == count_alerts(baseline.signals) == []
    last, base_last = run.windows[-1].quantities, baseline.windows[-1].quantities
    assert last["auroc"] == base_last["auroc"] and last["n_outcomes"] == base_last["n_outcomes"]
    assert last["outcomes_unknown"] == 500


def test_a_release_without_reference_profile_is_still_monitored(scored: ScoredStays) -> None:
    ref = scored.reference.model_copy(update={"profile": None})
    with pytest.raises(ReferenceProfileMissing, match="no reference profile"):
        ref.require_profile()
    stream = clean_stream(scored, DriftScenario(clean_days=30))
    run = Monitor(ref).run(
        stream.inferences,
        stream.outcomes,
        stream.overrides,
        end=stream.inferences.time[0] + 5 * 86400,
    )
    assert any("input and score drift are not monitored" in n for n in run.notes)
    assert not any(k.startswith("psi:") for w in run.windows for k in w.quantities)
    assert any(w.quantities.get("auroc") is not None for w in run.windows)
    assert [s for s in run.signals if s.kind == "data"] == []
