"""Scoring models: deterministic, serialised as data, explained exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.data.raw import read_source
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.modeling.explain import feature_contributions, global_importance
from clinical_mlops.modeling.model import load_scoring_model
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.modeling.selection import (
    PUBLISHED_XGBOOST,
    fit_candidate,
    sample_search_space,
    stratified_folds,
)
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SPEC = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def train_frame(small_source_dir, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("models"))
    snap = build_snapshot(ws, SPEC, read_source(small_source_dir))
    return snap.features().merge(snap.cohort(), on="stay_id")


@pytest.fixture(scope="module")
def matrix(train_frame):
    pre = Preprocessor.fit(train_frame, SPEC)
    return pre, pre.transform(train_frame), train_frame["death_48h"].to_numpy()


def test_preprocessor_imputes_train_medians_and_encodes_declared_categories(train_frame, matrix):
    pre, X, _ = matrix
    assert pre.medians["lactate"] == pytest.approx(float(np.nanmedian(train_frame["lactate"])))
    assert X.shape == (len(train_frame), len(pre.columns))
    assert not np.isnan(X).any()
    assert "diagnosis_category=infectious" in pre.columns and "sex=F" in pre.columns
    row = pd.DataFrame(
        [train_frame.iloc[0].to_dict() | {"lactate": np.nan, "diagnosis_category": "unseen"}]
    )
    x = pre.transform(row)[0]
    assert x[pre.columns.index("lactate")] == pre.medians["lactate"]
    dx_cols = [i for i, c in enumerate(pre.columns) if c.startswith("diagnosis_category=")]
    assert x[dx_cols].sum() == 0  # an undeclared category encodes as all zeros
    assert Preprocessor.from_dict(pre.to_dict()) == pre


@pytest.mark.parametrize("kind", ["logistic_regression", "random_forest", "xgboost"])
def test_models_round_trip_as_data_and_explain_exactly(matrix, kind):
    pre, X, y = matrix
    params = {
        "xgboost": PUBLISHED_XGBOOST,
        "random_forest": {"n_estimators": 50, "max_depth": 6},
    }.get(kind, {})
    model = fit_candidate(kind, params, X, y, columns=pre.columns, seed=3)
    data = model.to_bytes()
    assert b"pickle" not in data
    loaded = load_scoring_model(data)
    np.testing.assert_array_equal(loaded.margin(X), model.margin(X))
    contrib = feature_contributions(loaded, pre, X)
    assert list(contrib.columns) == [*SPEC.feature_names, "bias"]
    np.testing.assert_allclose(contrib.sum(axis=1).to_numpy(), model.margin(X), atol=1e-4)
    importance = global_importance(contrib)
    assert list(importance) == sorted(importance, key=importance.get, reverse=True)


@pytest.mark.parametrize("kind", ["random_forest", "xgboost"])
def test_same_seed_same_bytes(matrix, kind):
    pre, X, y = matrix
    params = {"xgboost": PUBLISHED_XGBOOST, "random_forest": {"n_estimators": 30, "max_depth": 6}}[
        kind
    ]
    a = fit_candidate(kind, params, X, y, columns=pre.columns, seed=5).to_bytes()
    b = fit_candidate(kind, params, X, y, columns=pre.columns, seed=5).to_bytes()
    c = fit_candidate(kind, params, X, y, columns=pre.columns, seed=6).to_bytes()
    assert a == b
    assert a != c


def test_search_space_starts_with_the_published_pick_and_stays_in_bounds():
    configs = sample_search_space(30, seed=1)
    assert configs[0] == PUBLISHED_XGBOOST
    for c in configs:
        assert 100 <= c["n_estimators"] <= 500 and 3 <= c["max_depth"] <= 8
        assert 0.01 <= c["learning_rate"] <= 0.3 and 1 <= c["min_child_weight"] <= 10
        assert 0.6 <= c["subsample"] <= 1 and 0.6 <= c["colsample_bytree"] <= 1
    assert sample_search_space(30, seed=1) == configs
    assert sample_search_space(30, seed=2) != configs


def test_folds_need_both_classes():
    with pytest.raises(ValueError, match="every fold needs both"):
        stratified_folds(np.array([0] * 50 + [1] * 3), k=5, seed=0)
