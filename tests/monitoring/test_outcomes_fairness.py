"""Outcome linkage rules, live metrics against scikit-learn, subgroup metrics against fairlearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from clinical_mlops.evaluation.metrics import (
    calibration_slope_intercept,
    expected_calibration_error,
)
from clinical_mlops.monitoring.fairness import group_metrics, subgroup_findings
from clinical_mlops.monitoring.outcomes import auroc_se, ece, outcome_metrics, rank_auroc
from clinical_mlops.monitoring.records import InferenceRecords, OutcomeRecords, link_outcomes


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 20).map(lambda k: k / 20)),
        min_size=2,
        max_size=80,
    )
)
def test_rank_auroc_and_ece_equal_sklearn_and_the_report(pairs: list[tuple[int, float]]) -> None:
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    assert ece(y, p) == pytest.approx(expected_calibration_error(y, p), abs=1e-12)
    if 0 < y.sum() < len(y):
        assert rank_auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    else:
        assert np.isnan(rank_auroc(y, p))


def test_outcome_metrics_and_their_gates() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(2000) * 0.5
    y = (rng.random(2000) < p).astype(int)
    m = outcome_metrics(y, p, validated_auroc=0.8, min_per_class=30)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["auroc_degradation"] == pytest.approx((0.8 - m["auroc"]) / 0.8)
    cal = calibration_slope_intercept(y, p)
    assert m["calibration_slope"] == pytest.approx(cal["slope"])
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    few = outcome_metrics(y[:50], p[:50], validated_auroc=0.8, min_per_class=30)
    assert few["auroc"] is None and few["n"] == 50


def test_hanley_mcneil_se_is_conservative_against_the_bootstrap() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(1500) < 0.12).astype(int)
    p = np.clip(0.12 + 0.15 * (y - 0.12) + rng.normal(0, 0.1, 1500), 0, 1)
    area = rank_auroc(y, p)
    boot = []
    for _ in range(300):
        i = rng.integers(0, 1500, 1500)
        boot.append(rank_auroc(y[i], p[i]))
    se = auroc_se(area, int(y.sum()), int(1500 - y.sum()))
    # Conservative (wider than the bootstrap) but of the same order: it errs towards no alert.
    assert np.std(boot) <= se <= 1.6 * np.std(boot)


def test_group_metrics_equal_fairlearn_metricframe() -> None:
    rng = np.random.default_rng(2)
    n = 900
    group = rng.choice(["18-44", "45-64", "80+"], size=n)
    p = rng.random(n)
    y = (rng.random(n) < 0.3 * p + 0.05).astype(int)
    pred = (p >= 0.4).astype(int)
    frame = MetricFrame(
        metrics={
            "precision": lambda a, b: precision_score(a, b, zero_division=0),
            "recall": recall_score,
            "f1": f1_score,
        },
        y_true=y,
        y_pred=pred,
        sensitive_features=group,
    )
    for g in ("18-44", "45-64", "80+"):
        mask = group == g
        ours = group_metrics(y[mask], p[mask], threshold=0.4, min_per_class=5)
        for key in ("precision", "recall", "f1"):
            assert ours[key] == pytest.approx(frame.by_group.loc[g, key], abs=1e-12)
        assert ours["auroc"] == pytest.approx(roc_auc_score(y[mask], p[mask]), abs=1e-12)


def test_widening_is_relative_to_validation_and_bonferroni_bounded() -> None:
    groups = {
        "age_group": {
            "18-44": {"auroc": 0.60, "auroc_se": 0.03},
            "80+": {"auroc": 0.84, "auroc_se": 0.03},
            "tiny": {"auroc": None, "auroc_se": None},
        }
    }
    found = {
        f.subgroup: f
        for f in subgroup_findings(
            groups,
            live_overall=0.80,
            validated_overall=0.85,
            validated_groups={"age_group=18-44": 0.75},
            confidence=0.99,
        )
    }
    assert set(found) == {"age_group=18-44", "age_group=80+"}
    young = found["age_group=18-44"]
    assert young.widening == pytest.approx((0.75 - 0.60) - (0.85 - 0.80))
    # Two groups compared: Bonferroni z at 1 - 0.01 / 2.
    from scipy import stats

    z = stats.norm.ppf(1 - 0.005)
    assert young.lower_bound == pytest.approx(young.widening - z * 0.03)
    # A group without a validated AUROC of its own is held to the population's.
    assert found["age_group=80+"].validated == 0.85


def _inferences(n: int) -> InferenceRecords:
    return InferenceRecords.build(
        release="r@1",
        model_version="m",
        seq=np.arange(100, 100 + n),
        time=np.arange(n, dtype=float) * 60,
        probability=np.linspace(0.1, 0.9, n),
        inputs=pd.DataFrame({"age": [70] * n}),
    )


def test_outcome_linkage_rules() -> None:
    inf = _inferences(5)
    out = OutcomeRecords.build(
        #     ok   later dup  conflict  unknown  not 0/1  before pred  out of order (ok)
        seq=[100, 100, 100, 999, 101, 102, 103],
        outcome=[1, 1, 0, 1, 7, 0, 0],
        time=[500, 600, 700, 500, 500, 10, 400],
    )
    linked = link_outcomes(inf, out)
    # Taken in arrival order: seq 103 (t=400) comes before seq 100 (t=500).
    assert linked.index.tolist() == [3, 0]
    assert linked.y.tolist() == [0, 1]
    assert linked.time.tolist() == [400.0, 500.0]
    assert {k: len(v) for k, v in linked.rejected.items()} == {
        "unknown": 1,
        "duplicate": 1,
        "conflicting": 1,
        "invalid": 2,
    }


def test_linkage_with_no_predictions_sets_everything_aside() -> None:
    inf = _inferences(0)
    linked = link_outcomes(inf, OutcomeRecords.build(seq=[1, 2], outcome=[0, 1], time=[5, 6]))
    assert len(linked) == 0 and len(linked.rejected["unknown"]) == 2
