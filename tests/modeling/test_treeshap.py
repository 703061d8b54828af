"""Table TreeSHAP: XGBoost's pred_contribs, value for value, on boosters trained here."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification

from clinical_mlops.modeling import treeshap
from clinical_mlops.modeling.selection import PUBLISHED_XGBOOST, fit_candidate
from clinical_mlops.modeling.treeshap import TreeShapTables, decline_reason


def _data(seed: int, n: int = 1500, columns: int = 32, nan: float = 0.1) -> tuple:
    """A binary problem with continuous, integer and 0/1 one-hot-like columns, and NaNs."""
    X, y = make_classification(
        n_samples=n,
        n_features=columns - 6,
        n_informative=8,
        n_redundant=4,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 4, size=n) + (y * rng.integers(0, 2, size=n))
    onehot = (category[:, None] == np.arange(5)).astype(np.float64)  # exactly one 1 per row
    counts = np.round(np.abs(X[:, :1]) * 3)  # an integer column (ties at the thresholds)
    X = np.hstack([X, onehot, counts])
    # Missing values, informative ones in column 0 (so both default directions are learned).
    X[rng.random(X.shape) < nan] = np.nan
    X[(y == 1) & (rng.random(n) < 0.3), 0] = np.nan
    return X, y


def _train(X, y, rounds: int, **params) -> xgb.Booster:
    params = {"objective": "binary:logistic", "tree_method": "hist", "seed": 3, **params}
    return xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=rounds)


def _xgb_contribs(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    out = booster.predict(xgb.DMatrix(X), pred_contribs=True, validate_features=False)
    return out.astype(np.float64)


def _trees(booster: xgb.Booster) -> list[dict[str, Any]]:
    model = json.loads(bytes(booster.save_raw(raw_format="json")))
    return model["learner"]["gradient_booster"]["model"]["trees"]


def _assert_within(ours: np.ndarray, ref: np.ndarray, tolerance: np.ndarray) -> None:
    excess = np.abs(ours - ref) / tolerance
    assert excess.max() <= 1.0, f"off by {excess.max():.2f}x the tolerance at {excess.argmax()}"


def _assert_matches_xgboost(booster: xgb.Booster, X: np.ndarray) -> TreeShapTables:
    tables = TreeShapTables.compile(booster)
    assert tables is not None, decline_reason(booster)
    ours = tables.contributions(X)
    ref = _xgb_contribs(booster, X)
    assert ours.shape == ref.shape == (len(X), X.shape[1] + 1)
    assert ours.dtype == np.float64
    # XGBoost accumulates in float32: allow float32 rounding of the row's own magnitudes.
    scale = np.abs(ref).sum(axis=1, keepdims=True) + 1.0
    _assert_within(ours, ref, 2e-6 * scale)
    np.testing.assert_allclose(ours[:, -1], ref[:, -1], rtol=1e-6, atol=1e-6)
    # Additivity: contributions plus the bias are the model's margin.
    margin = booster.predict(xgb.DMatrix(X), output_margin=True, validate_features=False)
    margin = margin.astype(np.float64)
    _assert_within(ours.sum(axis=1), margin, 2e-6 * scale[:, 0])
    # The margins themselves are XGBoost's bit for bit: same leaves, same float32 order.
    assert tables.exact_margins
    assert np.array_equal(tables.margin(X), margin)
    both = tables.margin_and_contributions(X)
    assert np.array_equal(both[0], margin) and np.array_equal(both[1], ours)
    assert all(tables.margin(X[i : i + 1])[0] == margin[i] for i in range(0, len(X), 37))
    # Columns the model never splits on get exactly nothing.
    unused = np.abs(ref[:, :-1]).max(axis=0) == 0
    assert np.all(ours[:, :-1][:, unused] == 0)
    return tables


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_matches_xgboost_pred_contribs_at_every_depth(depth):
    X, y = _data(seed=depth)
    booster = _train(X, y, rounds=12, max_depth=depth, eta=0.3)
    _assert_matches_xgboost(booster, X)


def test_missing_values_follow_learned_default_directions_both_ways():
    X, y = _data(seed=7, nan=0.25)
    booster = _train(X, y, rounds=20, max_depth=4)
    defaults = {
        d
        for tree in _trees(booster)
        for d, child in zip(tree["default_left"], tree["left_children"], strict=True)
        if child != -1
    }
    assert defaults == {0, 1}  # both directions occur among the splits
    all_missing = np.full((3, X.shape[1]), np.nan)
    _assert_matches_xgboost(booster, np.vstack([X[:300], all_missing]))


def test_a_feature_split_twice_on_one_path_is_one_player():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 3))
    y = ((np.abs(X[:, 0]) < 0.6) ^ (X[:, 1] > 0.2)).astype(int)  # needs x0 split twice
    booster = _train(X, y, rounds=8, max_depth=5)
    # some root-to-leaf path splits on one column more than once
    tree = _trees(booster)[0]

    def repeats(nid: int, seen: tuple[int, ...]) -> bool:
        if tree["left_children"][nid] == -1:
            return len(seen) != len(set(seen))
        f = tree["split_indices"][nid]
        return repeats(tree["left_children"][nid], (*seen, f)) or repeats(
            tree["right_children"][nid], (*seen, f)
        )

    assert repeats(0, ())
    _assert_matches_xgboost(booster, X[:500])


@pytest.mark.parametrize(
    ("objective", "base_score"),
    [
        ("binary:logistic", None),
        ("binary:logistic", 0.2),
        ("binary:logistic", 0.93),
        ("binary:logitraw", None),
        ("binary:logitraw", -1.5),
    ],
)
def test_bias_is_the_base_margin_plus_expected_tree_values(objective, base_score):
    X, y = _data(seed=11)
    params = {"objective": objective} | ({} if base_score is None else {"base_score": base_score})
    booster = _train(X, y, rounds=10, max_depth=3, **params)
    tables = _assert_matches_xgboost(booster, X[:200])
    stumps = _train(X, y, rounds=3, max_depth=3, gamma=1e9, **params)  # no split pays: bias only
    stump_tables = _assert_matches_xgboost(stumps, X[:50])
    margin = float(stumps.predict(xgb.DMatrix(X[:1]), output_margin=True)[0])
    assert stump_tables.bias == pytest.approx(margin, abs=1e-6)
    assert np.all(stump_tables.contributions(X[:50])[:, :-1] == 0)
    if base_score is not None and objective == "binary:logistic":
        # the stored base_score is a probability; the bias starts from its logit
        assert stump_tables.bias - _leaf_sum(stumps) == pytest.approx(
            np.log(base_score / (1 - base_score)), abs=1e-6
        )
    assert tables.bias == pytest.approx(_xgb_contribs(booster, X[:1])[0, -1], abs=1e-6)


def _leaf_sum(booster: xgb.Booster) -> float:
    return sum(t["split_conditions"][0] for t in _trees(booster))


def test_random_forest_with_row_and_column_subsampling():
    X, y = _data(seed=13)
    booster = _train(
        X,
        y,
        rounds=3,
        max_depth=5,
        num_parallel_tree=6,
        subsample=0.632,
        colsample_bynode=0.3,
        eta=1.0,
    )
    assert len(booster.get_dump()) == 18
    _assert_matches_xgboost(booster, X[:400])


def test_values_at_and_next_to_thresholds_compare_in_float32():
    X, y = _data(seed=17, nan=0.0)
    booster = _train(X, y, rounds=10, max_depth=4)
    splits = [
        (f, c)
        for t in _trees(booster)
        for f, c, child in zip(
            t["split_indices"], t["split_conditions"], t["left_children"], strict=True
        )
        if child != -1
    ]
    rows = np.repeat(X[:1], 4 * len(splits), axis=0)
    for i, (f, c) in enumerate(splits):
        c32 = np.float32(c)
        rows[4 * i + 0, f] = float(c32)  # exactly the threshold: goes right
        rows[4 * i + 1, f] = np.nextafter(float(c32), -np.inf)  # below in float64, equal in float32
        rows[4 * i + 2, f] = float(np.nextafter(c32, np.float32(-np.inf)))  # below in float32
        rows[4 * i + 3, f] = float(np.nextafter(c32, np.float32(np.inf)))
    tables = _assert_matches_xgboost(booster, rows)
    leaves = booster.predict(xgb.DMatrix(rows), pred_leaf=True)
    assert len({tuple(r) for r in leaves}) > 1  # the rows really take different paths
    assert tables.n_groups > 0


def test_a_row_is_bit_identical_in_any_batch():
    X, y = _data(seed=19)
    booster = _train(X, y, rounds=30, max_depth=4)
    tables = TreeShapTables.compile(booster)
    assert tables is not None
    whole = tables.contributions(X)  # in several chunks
    assert len(X) > 1000 + treeshap.CHUNK
    for size in (1, 7, 64, treeshap.CHUNK + 1, 1000):
        for start in (0, 3, 500):
            part = tables.contributions(X[start : start + size])
            assert np.array_equal(part, whole[start : start + size])
    shuffled = np.random.default_rng(0).permutation(len(X))
    assert np.array_equal(tables.contributions(X[shuffled]), whole[shuffled])
    assert np.array_equal(tables.contributions(X[:0]), np.empty((0, X.shape[1] + 1)))


def test_smaller_groups_when_the_tables_would_be_too_large(monkeypatch):
    X, y = _data(seed=23)
    booster = _train(X, y, rounds=20, max_depth=6)
    roomy = TreeShapTables.compile(booster)
    assert roomy is not None
    monkeypatch.setattr(treeshap, "MAX_CELLS", roomy._table.size - 1)
    tight = _assert_matches_xgboost(booster, X[:300])
    assert tight.n_groups > roomy.n_groups
    assert tight._table.size < roomy._table.size
    np.testing.assert_allclose(
        tight.contributions(X[:300]), roomy.contributions(X[:300]), rtol=0, atol=1e-12
    )
    monkeypatch.setattr(treeshap, "MAX_CELLS", 1000)
    assert TreeShapTables.compile(booster) is None
    assert "MAX_CELLS" in (decline_reason(booster) or "")


def test_declines_what_it_does_not_cover():
    X, y = _data(seed=29, n=600, nan=0.0)
    deep = _train(X, y, rounds=2, max_depth=treeshap.MAX_DEPTH + 2, min_child_weight=0)
    assert TreeShapTables.compile(deep) is None
    assert "MAX_DEPTH" in (decline_reason(deep) or "")

    classes = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    softprob = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
        xgb.DMatrix(X, label=classes),
        num_boost_round=2,
    )
    assert TreeShapTables.compile(softprob) is None
    assert "objective" in (decline_reason(softprob) or "")

    dart = _train(X, y, rounds=2, booster="dart", max_depth=2)
    linear = xgb.train(
        {"objective": "binary:logistic", "booster": "gblinear"},
        xgb.DMatrix(X, label=y),
        num_boost_round=2,
    )
    for booster in (dart, linear):
        assert TreeShapTables.compile(booster) is None
        assert "gradient_booster" in (decline_reason(booster) or "")

    frame = pd.DataFrame({"a": X[:, 0], "c": pd.Categorical(np.where(X[:, 1] > 0, "p", "q"))})
    categorical = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "tree_method": "hist"},
        xgb.DMatrix(frame, label=(X[:, 1] > 0).astype(int), enable_categorical=True),
        num_boost_round=2,
    )
    assert TreeShapTables.compile(categorical) is None
    assert "categorical" in (decline_reason(categorical) or "")

    regression = _train(X, X[:, 1], rounds=2, objective="reg:squarederror")
    assert TreeShapTables.compile(regression) is None
    assert decline_reason(_train(X, y, rounds=2, max_depth=3)) is None


def test_rejects_a_matrix_of_the_wrong_width():
    X, y = _data(seed=31, n=300)
    tables = TreeShapTables.compile(_train(X, y, rounds=2, max_depth=2))
    assert tables is not None
    with pytest.raises(ValueError, match=f"expected a 2-d array of {X.shape[1]} model columns"):
        tables.contributions(X[:, :-1])


def test_the_project_models_demo_sized_xgboost_and_a_declined_default_forest():
    """fit_candidate's models: a demo-sized booster (152 trees of depth 4, 30 columns)."""
    X, y = _data(seed=37, n=3000, columns=30, nan=0.0)
    columns = [f"c{i}" for i in range(X.shape[1])]
    params = PUBLISHED_XGBOOST | {"n_estimators": 152, "max_depth": 4}
    model = fit_candidate("xgboost", params, X, y, columns=columns, seed=5, n_jobs=1)
    tables = _assert_matches_xgboost(model.booster, X[:1000])
    assert tables.n_groups <= 2 * 152  # a depth-4 tree is two 8-bit groups
    np.testing.assert_allclose(
        tables.contributions(X[:200]), model.contributions(X[:200]), rtol=0, atol=1e-5
    )
    forest = fit_candidate(
        "random_forest", {"n_estimators": 3, "max_depth": 10}, X, y, columns=columns, seed=5
    )
    assert TreeShapTables.compile(forest.booster) is None  # leaves 10 splits deep
    shallow = fit_candidate(
        "random_forest", {"n_estimators": 10, "max_depth": 6}, X, y, columns=columns, seed=5
    )
    _assert_matches_xgboost(shallow.booster, X[:500])
