"""Subgroups and fairness: cross-checked against fairlearn, small-group rule, alerts."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from clinical_mlops.errors import EvaluationError
from clinical_mlops.evaluation.fairness import (
    INSUFFICIENT_DATA,
    auroc_gap_alerts,
    fairness_metrics,
    group_masks,
    subgroup_matrix,
    subgroup_metrics,
)
from clinical_mlops.evaluation.metrics import resample_counts
from clinical_mlops.tasks import load_task

SPEC = load_task("icu_mortality_48h")
TH = SPEC.thresholds.operating


def _sensitive(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    labels = np.full(n, None, dtype=object)
    for label, mask in masks.items():
        labels[mask] = label
    return labels


def _fairlearn(y, flagged, sensitive):
    keep = sensitive != None  # noqa: E711 - elementwise comparison on an object array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fairlearn/sklearn warn on degenerate groups
        eod = equalized_odds_difference(y[keep], flagged[keep], sensitive_features=sensitive[keep])
        dpd = demographic_parity_difference(
            y[keep], flagged[keep], sensitive_features=sensitive[keep]
        )
        frame = MetricFrame(
            metrics={
                "ppv": lambda a, b: precision_score(a, b, zero_division=0),
                "tpr": lambda a, b: recall_score(a, b, zero_division=0),
            },
            y_true=y[keep],
            y_pred=flagged[keep],
            sensitive_features=sensitive[keep],
        )
    return eod, dpd, frame


@pytest.fixture(scope="module")
def setup(evaluation_input):
    inp = evaluation_input
    masks = group_masks(SPEC, inp.test_frame)
    counts = resample_counts(len(inp.y_true), n_boot=200, seed=inp.seed)
    return inp, masks, counts


def test_groups_follow_the_spec(setup):
    inp, masks, _ = setup
    assert list(masks) == ["sex", "age_group", "ethnicity"]
    assert list(masks["age_group"]) == ["18-44", "45-64", "65-79", "80+"]
    age = inp.test_frame["age"]
    assert masks["age_group"]["18-44"].sum() == int(((age >= 18) & (age < 45)).sum())
    # UNKNOWN ethnicity belongs to no group.
    covered = np.any(np.column_stack(list(masks["ethnicity"].values())), axis=1)
    assert (~covered).sum() == int((inp.test_frame["ethnicity"] == "UNKNOWN").sum()) > 0


def test_optional_attribute_skipped_but_required_one_enforced(setup):
    inp, _, _ = setup
    assert "ethnicity" not in group_masks(SPEC, inp.test_frame.drop(columns=["ethnicity"]))
    with pytest.raises(EvaluationError, match="column 'sex' is not in the test frame"):
        group_masks(SPEC, inp.test_frame.drop(columns=["sex"]))


def test_age_bands_use_completed_years():
    frame = pd.DataFrame({"sex": ["F"] * 4, "age": [44.9, 45.0, 79.99, 80.0]})
    bands = group_masks(SPEC, frame)["age_group"]
    assert bands["18-44"].tolist() == [True, False, False, False]
    assert bands["65-79"].tolist() == [False, False, True, False]
    assert bands["80+"].tolist() == [False, False, False, True]


def test_fairness_matches_fairlearn(setup):
    inp, masks, counts = setup
    y, p = inp.y_true, inp.p_cal
    flagged = (p >= TH).astype(int)
    result = fairness_metrics(y, p, masks, threshold=TH, counts=counts)
    for attr, groups in masks.items():
        eod, dpd, frame = _fairlearn(y, flagged, _sensitive(groups, len(y)))
        ours = {name: m["by_attribute"][attr] for name, m in result.items()}
        assert ours["equalized_odds_difference"]["value"] == pytest.approx(eod, abs=1e-12)
        assert ours["demographic_parity_difference"]["value"] == pytest.approx(dpd, abs=1e-12)
        assert ours["predictive_parity_difference"]["value"] == pytest.approx(
            frame.difference()["ppv"], abs=1e-12
        )
        for label, rates in ours["equalized_odds_difference"]["groups"].items():
            assert rates["tpr"] == pytest.approx(frame.by_group.loc[label, "tpr"], abs=1e-12)
    worst = max(result["equalized_odds_difference"]["by_attribute"].items(),
                key=lambda kv: kv[1]["value"])  # fmt: skip
    assert result["equalized_odds_difference"]["attribute"] == worst[0]
    for m in result.values():
        lo, hi = m["ci"]
        assert lo <= m["value"] <= hi


def test_subgroup_auroc_matches_fairlearn_metricframe(setup):
    inp, masks, counts = setup
    y, p = inp.y_true, inp.p_cal
    matrix = subgroup_matrix(y, p, masks, threshold=TH, counts=counts)
    sensitive = _sensitive(masks["sex"], len(y))
    frame = MetricFrame(metrics=roc_auc_score, y_true=y, y_pred=p, sensitive_features=sensitive)
    for label in ("Female", "Male"):
        assert matrix[f"sex={label}"]["auroc"] == pytest.approx(
            frame.by_group.loc[label], abs=1e-12
        )
    assert set(matrix) >= {"sex=Female", "age_group=80+", "ethnicity=Asian"}


def test_small_subgroups_report_insufficient_data():
    rng = np.random.default_rng(1)
    counts = resample_counts(20, n_boot=20, seed=1)
    row = subgroup_metrics(rng.integers(0, 2, 20), rng.random(20), threshold=TH, counts=counts)
    assert row["auroc"] == INSUFFICIENT_DATA.format(n=20) == "insufficient data (n=20)"
    assert row["sensitivity"] == row["ece"] == "insufficient data (n=20)"
    assert row["n"] == 20
    # Enough stays, but only 3 deaths: AUROC and sensitivity withheld, specificity given.
    y = np.r_[np.ones(3, dtype=int), np.zeros(97, dtype=int)]
    p = np.linspace(0, 1, 100)
    row = subgroup_metrics(y, p, threshold=TH, counts=resample_counts(100, n_boot=20, seed=1))
    assert row["auroc"].startswith("insufficient data (n=100")
    assert row["sensitivity"].startswith("insufficient data (n=100")
    assert isinstance(row["specificity"], float)


def test_groups_too_small_are_left_out_of_fairness_differences():
    n = 400
    rng = np.random.default_rng(2)
    y = (rng.random(n) < 0.3).astype(int)
    p = rng.random(n)
    tiny = np.zeros(n, dtype=bool)
    tiny[:10] = True
    masks = {"sex": {"Female": ~tiny, "Male": tiny}}
    res = fairness_metrics(y, p, masks, threshold=TH, counts=resample_counts(n, n_boot=20, seed=0))
    eod = res["equalized_odds_difference"]
    assert np.isnan(eod["value"]) and eod["attribute"] is None
    assert eod["by_attribute"]["sex"]["excluded_groups"] == ["Male"]


def test_auroc_gap_alert_raised_only_above_tolerance():
    matrix = {
        "sex=Female": {"attribute": "sex", "group": "Female", "auroc": 0.85},
        "sex=Male": {"attribute": "sex", "group": "Male", "auroc": 0.83},
        "age_group=18-44": {"attribute": "age_group", "group": "18-44", "auroc": 0.90},
        "age_group=80+": {"attribute": "age_group", "group": "80+", "auroc": 0.80},
        "age_group=45-64": {"attribute": "age_group", "group": "45-64", "auroc": "insufficient data (n=3)"},
    }  # fmt: skip
    alerts = auroc_gap_alerts(matrix, tolerance=0.03)
    assert [a["attribute"] for a in alerts] == ["age_group"]
    assert alerts[0]["gap"] == pytest.approx(0.10)
    assert (alerts[0]["best_group"], alerts[0]["worst_group"]) == ("18-44", "80+")


def test_no_subgroup_with_enough_flagged_stays_gives_no_ppv_gap():
    import numpy as np

    from clinical_mlops.evaluation.fairness import fairness_metrics
    from clinical_mlops.evaluation.metrics import resample_counts

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    p = np.full(400, 0.05)
    p[:3] = 0.9  # three flagged stays in all: too few for any group's PPV
    masks = {"sex": {"F": np.arange(400) < 200, "M": np.arange(400) >= 200}}
    out = fairness_metrics(
        y, p, masks, threshold=0.4, counts=resample_counts(400, n_boot=50, seed=1)
    )
    ppv = out["predictive_parity_difference"]["by_attribute"]["sex"]
    assert ppv["note"] == "fewer than two subgroups with sufficient data"
    assert np.isnan(ppv["value"])
