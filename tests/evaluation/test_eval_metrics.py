"""Metrics: cross-checked against scikit-learn, hand-computed cases and definitional identities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score

from clinical_mlops.errors import EvaluationError
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    brier_score,
    calibration_slope_intercept,
    conformal_coverage,
    confusion_at,
    decision_curve,
    expected_calibration_error,
    percentile_ci,
    reliability_curve,
    resample_counts,
    set_type_distribution,
    workload,
)


def _data(seed: int = 0, n: int = 3000, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    s = rng.random(n) * 0.7 + 0.3 * y
    return y, (np.round(s, 2) if ties else s)


@pytest.mark.parametrize("ties", [True, False])
def test_auroc_matches_sklearn_exactly(ties):
    y, s = _data(ties=ties)
    assert abs(auroc(y, s) - roc_auc_score(y, s)) < 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), min_size=2, max_size=60).filter(
        lambda rows: len({r[0] for r in rows}) == 2
    )
)
def test_auroc_matches_sklearn_on_any_small_sample(rows):
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=float)
    assert abs(auroc(y, s) - roc_auc_score(y, s)) < 1e-12


def test_auroc_single_class_is_nan():
    assert np.isnan(auroc(np.zeros(10, dtype=int), np.arange(10.0)))


def test_bootstrap_replicates_equal_auroc_of_explicit_resamples():
    y, s = _data(n=400)
    counts = resample_counts(len(y), n_boot=5, seed=3)
    reps = auroc_replicates(y, s, counts)
    for row, rep in zip(counts, reps, strict=True):
        idx = np.repeat(np.arange(len(y)), row)
        assert abs(rep - roc_auc_score(y[idx], s[idx])) < 1e-12
    assert counts.sum(axis=1).tolist() == [len(y)] * 5


def test_bootstrap_is_seeded_and_ci_brackets_point():
    y, s = _data()
    a = resample_counts(len(y), n_boot=300, seed=11)
    assert np.array_equal(a, resample_counts(len(y), n_boot=300, seed=11))
    assert not np.array_equal(a, resample_counts(len(y), n_boot=300, seed=12))
    lo, hi = percentile_ci(auroc_replicates(y, s, a))
    assert lo < auroc(y, s) < hi
    assert 0.01 < hi - lo < 0.1


def test_percentile_ci_refuses_mostly_undefined_replicates():
    reps = np.array([0.7, np.nan, np.nan, np.nan])
    assert all(np.isnan(v) for v in percentile_ci(reps))


def test_confusion_counts_flag_at_threshold_inclusive():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.4, 0.39, 0.4, 0.1, 0.9, 0.8])
    c = confusion_at(y, p, threshold=0.4)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 2, 1, 1)
    assert c["sensitivity"] == pytest.approx(2 / 3)
    assert c["specificity"] == pytest.approx(1 / 3)
    assert c["ppv"] == pytest.approx(0.5)
    assert c["npv"] == pytest.approx(0.5)


def test_workload_counts_alerts_per_100():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1])
    w = workload(y, p, threshold=0.4)
    assert w["alerts_per_100"] == pytest.approx(20.0)
    assert w["true_alerts_per_100"] == pytest.approx(10.0)
    assert w["number_needed_to_evaluate"] == pytest.approx(2.0)


def test_brier_matches_sklearn():
    y, s = _data()
    assert brier_score(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-15)


def test_ece_hand_computed():
    # Bin [0.1, 0.2): p 0.1, 0.1, y 0, 1 -> |0.5 - 0.1| = 0.4 on 2 stays.
    # Bin [0.9, 1.0]: p 0.9, 1.0, y 1, 1 -> |1 - 0.95| = 0.05 on 2 stays.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 1.0])
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.4 + 2 * 0.05) / 4)
    bins = reliability_curve(y, p)
    assert [(b["bin_lower"], b["n"]) for b in bins] == [(0.1, 2), (0.9, 2)]


def test_ece_equal_mass_bins_hold_equal_counts():
    y, s = _data(n=1000, ties=False)
    curve = reliability_curve(y, s, strategy="quantile")
    assert [pt["n"] for pt in curve] == [100] * 10
    with pytest.raises(EvaluationError, match="strategy"):
        expected_calibration_error(y, s, strategy="bogus")  # type: ignore[arg-type]


def test_perfectly_calibrated_probabilities_have_slope_one_intercept_zero():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.98, 200_000)
    y = (rng.random(len(p)) < p).astype(int)
    cal = calibration_slope_intercept(y, p)
    assert cal["slope"] == pytest.approx(1.0, abs=0.03)
    assert cal["intercept"] == pytest.approx(0.0, abs=0.02)
    # Overconfident predictions (logit doubled) give a slope near 1/2.
    logit = np.log(p / (1 - p))
    over = 1 / (1 + np.exp(-2 * logit))
    assert calibration_slope_intercept(y, over)["slope"] == pytest.approx(0.5, abs=0.03)


def test_decision_curve_identities():
    y, s = _data()
    grid = [0.05, 0.2, 0.5]
    everyone = decision_curve(y, np.ones(len(y)), thresholds=grid)
    no_one = decision_curve(y, np.zeros(len(y)), thresholds=grid)
    for pt in everyone:
        assert pt["net_benefit_model"] == pytest.approx(pt["net_benefit_treat_all"], abs=1e-15)
    assert all(pt["net_benefit_model"] == 0 == pt["net_benefit_treat_none"] for pt in no_one)
    prev = y.mean()
    assert everyone[1]["net_benefit_treat_all"] == pytest.approx(prev - (1 - prev) * 0.25)
    with pytest.raises(EvaluationError, match="strictly between"):
        decision_curve(y, s, thresholds=[0.0])


def test_conformal_coverage_and_set_types_count():
    y = np.array([0, 0, 1, 1, 1])
    sets = np.array([[True, False], [False, True], [True, True], [False, False], [False, True]])
    cov = conformal_coverage(y, sets)
    assert cov["overall"] == pytest.approx(3 / 5)
    assert cov["by_class"] == {"0": 0.5, "1": pytest.approx(2 / 3)}
    types = set_type_distribution(sets)
    assert {k: v["count"] for k, v in types.items()} == {
        "{no}": 1,
        "{yes}": 2,
        "{no,yes}": 1,
        "empty": 1,
    }
    with pytest.raises(EvaluationError, match="shape"):
        conformal_coverage(y, sets[:, :1])


def test_misaligned_or_non_binary_inputs_are_refused():
    with pytest.raises(EvaluationError, match="not aligned"):
        auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(EvaluationError, match="only 0 and 1"):
        brier_score(np.array([0, 2]), np.array([0.1, 0.2]))
