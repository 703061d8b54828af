"""Workload evidence at a release's threshold and escalation policy: alerts and reviews per
100 test stays with bootstrap CIs, reviews by reason, and the policy recorded in the report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.report import evaluate, json_ready
from clinical_mlops.modeling.escalation import EscalationReference, resolve
from clinical_mlops.tasks.spec import EscalationPolicy
from conftest import SPEC, make_input

N_BOOT = 100  # one chunk of resample_counts: the draws equal one integers() call


@pytest.fixture(scope="module")
def reference() -> EscalationReference:
    """Calibration stays of the fake model: another draw of the same population."""
    cal = make_input(seed=11, n=1500)
    features = list(SPEC.feature_names)
    return EscalationReference.build(
        cal.p_cal,
        cal.prediction_sets,
        missing_count=cal.test_frame[features].isna().sum(axis=1).to_numpy(),
        n_features=len(features),
        max_missing=SPEC.cohort.max_missing_feature_fraction,
    )


@pytest.fixture(scope="module")
def inp(evaluation_input, reference):
    return dataclasses.replace(evaluation_input, escalation_reference=reference)


def _queued_by_hand(inp, resolved) -> tuple[np.ndarray, np.ndarray]:
    """The default policy's routing, written out: out_of_scope, empty_set, near_threshold."""
    p = inp.p_cal
    features = list(SPEC.feature_names)
    missing = inp.test_frame[features].isna().sum(axis=1).to_numpy()
    lo, hi = resolved.band
    met = np.column_stack(
        [
            missing / len(features) > SPEC.cohort.max_missing_feature_fraction,
            inp.prediction_sets.sum(axis=1) == 0,
            (p >= lo) & (p <= hi),
        ]
    )
    eligible = met.any(axis=1)
    first = met.argmax(axis=1)
    cut = resolved.cutoff
    if cut is None:
        return eligible, first
    rank = list(resolved.review_on).index(cut["condition"])
    floor = np.inf if cut["min_probability"] is None else cut["min_probability"]
    return eligible & ((first < rank) | ((first == rank) & (p >= floor))), first


def test_workload_is_computed_at_the_given_threshold_and_policy(inp, reference):
    # A declared band wider than the budget: the cutoff defers the lowest risks in it.
    policy = EscalationPolicy.model_validate({"near_threshold": {"band": [0.2, 0.45]}})
    resolved = resolve(policy, threshold=0.3, reference=reference)
    assert resolved.cutoff is not None
    report = evaluate(inp, n_boot=N_BOOT, threshold=0.3, escalation=resolved)
    w, p = report.workload, inp.p_cal
    assert w.threshold == report.test.threshold == report.decision_curve.operating_threshold == 0.3
    assert w.alerts_per_100 == pytest.approx(100 * np.mean(p >= 0.3))
    assert report.test.alerts == int(np.sum(p >= 0.3))
    queued, first = _queued_by_hand(inp, resolved)
    assert 0 < queued.sum() < len(p)
    assert w.reviews_per_100 == pytest.approx(100 * queued.mean())
    eligible, _ = _queued_by_hand(inp, dataclasses.replace(resolved, cutoff=None))
    assert w.deferred_per_100 == pytest.approx(100 * (eligible & ~queued).mean())
    assert w.deferred_per_100 > 0
    assert w.reviews_by_reason == pytest.approx(
        {c: 100 * np.mean(queued & (first == i)) for i, c in enumerate(resolved.review_on)}
    )
    assert report.to_json()["escalation"] == json_ready(resolved.to_json())
    assert "0.3" in report.methods.flag_rule


def test_bootstrap_intervals_match_an_independent_resampling(inp, reference):
    resolved = resolve(EscalationPolicy(), threshold=0.3, reference=reference)
    report = evaluate(inp, n_boot=N_BOOT, threshold=0.3, escalation=resolved)
    n = len(inp.p_cal)
    idx = np.random.default_rng(inp.seed).integers(0, n, size=(N_BOOT, n))
    queued, _ = _queued_by_hand(inp, resolved)
    for indicator, ci in (
        (inp.p_cal >= 0.3, report.workload.alerts_per_100_ci),
        (queued, report.workload.reviews_per_100_ci),
    ):
        means = 100 * indicator[idx].mean(axis=1)
        assert ci == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
        assert ci[0] < 100 * indicator.mean() < ci[1]


def test_default_threshold_and_policy_come_from_the_spec(inp, reference):
    report = evaluate(inp, n_boot=N_BOOT)
    expected = resolve(SPEC.escalation, threshold=SPEC.thresholds.operating, reference=reference)
    assert report.workload.threshold == SPEC.thresholds.operating
    assert report.to_json()["escalation"] == json_ready(expected.to_json())
    assert report.workload.reviews_per_100 is not None


def test_a_policy_resolved_at_another_threshold_is_refused(inp, reference):
    resolved = resolve(EscalationPolicy(), threshold=0.4, reference=reference)
    with pytest.raises(ValueInvalid, match=r"escalation: resolved at threshold 0\.4.* 0\.3"):
        evaluate(inp, n_boot=N_BOOT, threshold=0.3, escalation=resolved)
    with pytest.raises(ValueInvalid, match="threshold"):
        evaluate(inp, n_boot=N_BOOT, threshold=1.0)


def test_without_calibration_stays_there_are_no_review_figures(validation_report):
    assert validation_report.escalation is None
    assert validation_report.workload.reviews_per_100 is None
    assert validation_report.workload.alerts_per_100_ci is not None
