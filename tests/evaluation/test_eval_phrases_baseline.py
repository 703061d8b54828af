"""Clinical phrasing of contributions and the SOFA-like baseline score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.errors import EvaluationError
from clinical_mlops.evaluation.baseline import SOFA_LIKE, baseline_comparison
from clinical_mlops.evaluation.metrics import auroc, resample_counts
from clinical_mlops.evaluation.phrases import (
    Phraser,
    describe_contribution,
    format_value,
    top_phrases,
    without_reference,
)
from clinical_mlops.tasks import load_task

SPEC = load_task("icu_mortality_48h")


@pytest.mark.parametrize(
    ("name", "value", "contribution", "imputed", "expected"),
    [
        ("lactate", 4.13, 0.62, None, "Lactate 4.1 mmol/L raised the risk"),
        ("albumin", np.nan, -0.12, 3.2, "Albumin not measured (median 3.2 g/dL used) lowered the risk slightly"),
        ("albumin", None, -0.12, None, "Albumin not measured lowered the risk slightly"),
        ("heart_rate", 112.4, 0.9, None, "Heart rate 112 beats/min raised the risk strongly"),
        ("temperature", 38.64, 0.01, None, "Temperature 38.6 °C had almost no effect on the risk"),
        ("spo2", 91.6, 0.3, None, "Oxygen saturation 92% raised the risk"),
        ("inr", 1.84, 0.3, None, "INR 1.8 raised the risk"),
        ("vasopressor", 1.0, 0.7, None, "Vasopressor support present raised the risk"),
        ("diagnosis_category", "infectious", 0.5, None, "Primary diagnosis category: infectious raised the risk"),
        ("creatinine", 0.58, -0.2, None, "Creatinine 0.58 mg/dL lowered the risk slightly"),
    ],
)  # fmt: skip
def test_describe_contribution(name, value, contribution, imputed, expected):
    assert describe_contribution(SPEC, name, value, contribution, imputed_value=imputed) == expected


def test_display_unit_is_used_and_empty_display_unit_means_none():
    assert format_value(SPEC.feature("platelets"), 85) == "85 ×10⁹/L"
    assert format_value(SPEC.feature("gcs"), 7.0) == "7 points"
    assert format_value(SPEC.feature("inr"), 2.0) == "2"


def test_top_phrases_rank_by_size_skip_bias_and_allow_anonymised_values():
    values = {"age": 83.0, "lactate": 5.0, "gcs": 15.0}
    contribs = {"age": 0.4, "lactate": 0.9, "gcs": -0.1, "bias": -3.0}
    top = top_phrases(SPEC, values, contribs, k=2, shown_as={"age": "80-84 years"})
    assert [t["feature"] for t in top] == ["lactate", "age"]
    assert top[1]["phrase"] == "Age 80-84 years raised the risk"


def test_phraser_gives_the_words_and_order_of_top_phrases_for_every_row():
    """The batch ranking (numpy, ties by name) and words equal the one-row function's."""
    rng = np.random.default_rng(7)
    names = list(SPEC.feature_names)
    imputed = {"lactate": 1.4, "albumin": 3.1, "gcs": 15.0}
    phraser = Phraser(SPEC, names, imputed)
    rows, contribs = [], []
    for i in range(400):
        values = {}
        for f in SPEC.features:
            if rng.random() < 0.15:
                values[f.name] = None
            elif f.kind == "categorical":
                values[f.name] = str(rng.choice(list(f.categories or ())))
            elif f.kind == "flag":
                values[f.name] = int(rng.integers(0, 2))
            else:
                low, high = f.valid_range or (0.0, 100.0)
                values[f.name] = float(rng.uniform(low, high))
        c = rng.normal(0, 0.4, len(names))
        if i % 5 == 0:  # ties (equal sizes of either sign, zeros) break by name
            c[rng.choice(len(names), 4, replace=False)] = [0.3, -0.3, 0.0, -0.0]
        rows.append(values)
        contribs.append(c)
    got = phraser.top(rows, np.array(contribs))
    for values, c, top in zip(rows, contribs, got, strict=True):
        want = top_phrases(
            SPEC,
            values,
            dict(zip(names, c.tolist(), strict=True)) | {"bias": -2.0},
            imputed_values=imputed,
        )
        assert top == want
    assert phraser.top([], np.zeros((0, len(names)))) == []


def test_a_contribution_is_shown_with_the_training_median_it_is_compared_with():
    """A measured value reads beside its reference; a missing one says the median was used;
    a categorical input has no median; the entry carries the reference as data."""
    medians = {"heart_rate": 88.0, "albumin": 3.2, "vasopressor": 0.0}
    phraser = Phraser(SPEC, ["heart_rate", "albumin", "vasopressor", "diagnosis_category"], medians)
    [top] = phraser.top(
        [{"heart_rate": 106.0, "albumin": None, "vasopressor": 1, "diagnosis_category": "cardiac"}],
        np.array([[-0.3, 0.2, 0.9, 0.1]]),
        k=4,
    )
    by = {t["feature"]: t for t in top}
    assert by["heart_rate"]["phrase"] == (
        "Heart rate 106 beats/min (training median 88 beats/min) lowered the risk"
    )
    assert by["heart_rate"]["reference"] == {
        "statistic": "training median",
        "value": 88.0,
        "shown": "88 beats/min",
    }
    assert by["albumin"]["phrase"] == (
        "Albumin not measured (median 3.2 g/dL used) raised the risk slightly"
    )
    assert by["vasopressor"]["phrase"] == (
        "Vasopressor support present (training median absent) raised the risk strongly"
    )
    assert by["diagnosis_category"]["reference"] is None
    assert "training median" not in by["diagnosis_category"]["phrase"]
    # a record listed before references existed compares equal to the recomputation
    legacy = {t["feature"]: t for t in without_reference(top)}
    assert legacy["heart_rate"]["phrase"] == "Heart rate 106 beats/min lowered the risk"
    assert all("reference" not in t for t in legacy.values())


def _frame(**overrides):
    row = {
        "platelets": 200.0, "bilirubin": 0.5, "gcs": 15.0, "creatinine": 0.8, "map": 80.0,
        "spo2": 97.0, "vasopressor": 0.0, "ventilation": 0.0,
    }  # fmt: skip
    row.update(overrides)
    return pd.DataFrame([row])


@pytest.mark.parametrize(
    ("overrides", "points"),
    [
        ({}, 0),
        ({"platelets": 149.0}, 1),
        ({"platelets": 19.0}, 4),
        ({"bilirubin": 2.0}, 2),
        ({"bilirubin": 12.0}, 4),
        ({"gcs": 14.0}, 1),
        ({"gcs": 5.0}, 4),
        ({"creatinine": 3.5}, 3),
        ({"map": 69.0}, 1),
        ({"map": 69.0, "vasopressor": 1.0}, 3),
        ({"spo2": 91.0}, 1),
        ({"spo2": 88.0, "ventilation": 1.0}, 4),
        ({"ventilation": 1.0}, 2),
        ({"platelets": np.nan, "bilirubin": np.nan}, 0),  # missing scores as normal
        ({"platelets": 40.0, "gcs": 9.0, "creatinine": 2.5}, 3 + 3 + 2),
    ],
)
def test_sofa_like_point_table(overrides, points):
    assert SOFA_LIKE.score(_frame(**overrides)).tolist() == [points]


def test_sofa_like_score_documents_its_source_and_approximations():
    assert "Vincent" in SOFA_LIKE.source and "1996" in SOFA_LIKE.source
    text = " ".join(SOFA_LIKE.approximations)
    assert "PaO2/FiO2" in text and "urine output" in text and "dose" in text
    with pytest.raises(EvaluationError, match="lacks the feature columns"):
        SOFA_LIKE.score(pd.DataFrame({"gcs": [15.0]}))


def test_baseline_comparison_is_paired_and_workload_matched(evaluation_input):
    inp = evaluation_input
    counts = resample_counts(len(inp.y_true), n_boot=200, seed=inp.seed)
    th = SPEC.thresholds.operating
    res = baseline_comparison(inp.y_true, inp.p_cal, inp.test_frame, threshold=th, counts=counts)
    score = SOFA_LIKE.score(inp.test_frame)
    assert res["auroc"] == pytest.approx(auroc(inp.y_true, score), abs=1e-12)
    diff = res["auroc_difference"]
    assert diff["value"] == pytest.approx(auroc(inp.y_true, inp.p_cal) - res["auroc"], abs=1e-12)
    assert diff["ci"][0] <= diff["value"] <= diff["ci"][1]
    assert res["alert_fraction"] <= np.mean(inp.p_cal >= th)
    assert np.mean(score >= res["cutoff"] - 1) > np.mean(inp.p_cal >= th)


def test_lace_like_points_follow_the_published_bands():
    import pandas as pd

    from clinical_mlops.evaluation.baseline import LACE_LIKE

    frame = pd.DataFrame(
        {
            "length_of_stay": [0.5, 1.0, 3.5, 5.0, 10.0, 20.0],
            "charlson_index": [0, 1, 2, 3, 4, 9],
            "prior_admissions_12m": [0, 1, 2, 3, 4, 12],
        }
    )
    # L: 0, 1, 3, 4, 5, 7; C: 0, 1, 2, 3, 5, 5; E: 0, 1, 2, 3, 4, 4
    assert LACE_LIKE.score(frame).tolist() == [0, 3, 7, 10, 14, 16]
    assert LACE_LIKE.max_points == 7 + 5 + 4


def test_a_task_without_a_declared_baseline_is_refused():
    import pytest

    from clinical_mlops.errors import EvaluationError
    from clinical_mlops.evaluation.baseline import score_for
    from clinical_mlops.tasks import load_task, task_from_mapping

    data = load_task("icu_mortality_48h").model_dump(mode="json")
    data["clinical_baseline"] = None
    with pytest.raises(EvaluationError, match="declares no clinical_baseline"):
        score_for(task_from_mapping(data, source="test"))
    data["clinical_baseline"] = "lace_like"
    with pytest.raises(EvaluationError, match="needs feature"):
        score_for(task_from_mapping(data, source="test"))
