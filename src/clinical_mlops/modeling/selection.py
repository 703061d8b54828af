"""Candidate models and model selection by mean cross-validated AUROC (SPEC R-T5).

Candidates
----------
* ``logistic_regression`` — L2, C=1, on standardised inputs.
* ``random_forest`` — 300 trees of depth 10, grown by XGBoost in random-forest
  mode (bootstrap-like row subsampling 0.632, √p features per split) so the
  forest is stored as XGBoost JSON and explained with exact TreeSHAP.
* ``xgboost`` — gradient-boosted trees; hyperparameters by random search over
  the R-T5 space (the published configuration is always tried first).

Tree models weight the positive class by ``scale_pos_weight = neg / pos``.
All folds are stratified and seeded; every fit is deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.modeling.model import LinearModel, ModelKind, TreeModel

__all__ = [
    "CANDIDATES",
    "PUBLISHED_XGBOOST",
    "CVResult",
    "cross_validate",
    "fit_candidate",
    "sample_search_space",
    "select_model",
]

CANDIDATES: tuple[ModelKind, ...] = ("logistic_regression", "random_forest", "xgboost")
PUBLISHED_XGBOOST = {
    "n_estimators": 400,
    "max_depth": 5,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 3,
}
FIXED_PARAMS: dict[ModelKind, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "penalty": "l2"},
    "random_forest": {"n_estimators": 300, "max_depth": 10},
    "xgboost": {},
}

Progress = Callable[[str], None]


def sample_search_space(n: int, *, seed: int) -> list[dict[str, Any]]:
    """Return ``n`` XGBoost configurations: the published one, then seeded random draws.

    Space (R-T5): n_estimators 100–500, max_depth 3–8, learning_rate 0.01–0.3
    (log-uniform), subsample 0.6–1, colsample_bytree 0.6–1, min_child_weight 1–10.
    """
    if n < 1:
        raise ValueInvalid(f"search_iterations: expected at least 1, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    configs = [dict(PUBLISHED_XGBOOST)]
    while len(configs) < n:
        configs.append(
            {
                "n_estimators": int(rng.integers(100, 501)),
                "max_depth": int(rng.integers(3, 9)),
                "learning_rate": round(float(np.exp(rng.uniform(np.log(0.01), np.log(0.3)))), 4),
                "subsample": round(float(rng.uniform(0.6, 1.0)), 3),
                "colsample_bytree": round(float(rng.uniform(0.6, 1.0)), 3),
                "min_child_weight": int(rng.integers(1, 11)),
            }
        )
    return configs


def fit_candidate(
    kind: ModelKind,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    columns: list[str],
    seed: int,
    n_jobs: int = 2,
) -> TreeModel | LinearModel:
    """Return candidate ``kind`` fitted on (X, y)."""
    y = np.asarray(y, dtype=int)
    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        raise ValueError(
            "cannot fit a model on a single class; every fold needs positives and negatives"
        )
    spw = (len(y) - pos) / pos
    if kind == "logistic_regression":
        scaler = StandardScaler().fit(X)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        lr = LogisticRegression(C=params.get("C", 1.0), l1_ratio=0.0, solver="lbfgs", max_iter=5000)
        lr.fit((X - scaler.mean_) / scale, y)
        return LinearModel(
            kind=kind,
            mean=scaler.mean_.astype(np.float64),
            scale=scale.astype(np.float64),
            coef=lr.coef_[0].astype(np.float64),
            intercept=float(lr.intercept_[0]),
            columns=columns,
        )
    common = {
        "tree_method": "hist",
        "random_state": seed,
        "n_jobs": n_jobs,
        "scale_pos_weight": spw,
    }
    if kind == "random_forest":
        clf: xgb.XGBModel = xgb.XGBRFClassifier(
            n_estimators=params.get("n_estimators", 300),
            max_depth=params.get("max_depth", 10),
            subsample=0.632,
            colsample_bynode=float(np.sqrt(X.shape[1]) / X.shape[1]),
            learning_rate=1.0,
            reg_lambda=1e-5,
            **common,
        )
    elif kind == "xgboost":
        clf = xgb.XGBClassifier(**params, objective="binary:logistic", **common)
    else:
        raise ValueInvalid(
            f"candidates: unknown candidate {kind!r}; expected one of {', '.join(CANDIDATES)}"
        )
    clf.fit(X, y)
    booster = clf.get_booster()
    booster.feature_names = columns
    return TreeModel(kind=kind, booster=booster, columns=columns)


@dataclass
class CVResult:
    """Cross-validated AUROC of one configuration."""

    kind: ModelKind
    params: dict[str, Any]
    folds: list[float]
    oof: np.ndarray = field(repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def ci(self) -> tuple[float, float]:
        """95 % t-interval of the mean over folds."""
        k = len(self.folds)
        half = float(stats.t.ppf(0.975, k - 1) * np.std(self.folds, ddof=1) / np.sqrt(k))
        return (self.mean - half, self.mean + half)

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.ci
        return {
            "mean_auroc": round(self.mean, 6),
            "ci": [round(lo, 6), round(hi, 6)],
            "folds": [round(f, 6) for f in self.folds],
            "params": self.params,
        }


def cross_validate(
    kind: ModelKind,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    *,
    columns: list[str],
    seed: int,
    n_jobs: int = 2,
) -> CVResult:
    """Return the per-fold AUROC and out-of-fold scores of one configuration."""
    oof = np.full(len(y), np.nan)
    scores = []
    for tr, va in folds:
        model = fit_candidate(kind, params, X[tr], y[tr], columns=columns, seed=seed, n_jobs=n_jobs)
        oof[va] = model.margin(X[va])
        scores.append(float(roc_auc_score(y[va], oof[va])))
    return CVResult(kind=kind, params=params, folds=scores, oof=oof)


def stratified_folds(y: np.ndarray, *, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``k`` seeded stratified folds as (train index, validation index) pairs."""
    y = np.asarray(y, dtype=int)
    pos = int(y.sum())
    if pos < k or len(y) - pos < k:
        raise ValueError(
            f"cannot make {k} stratified folds: the training set has {pos} positive and "
            f"{len(y) - pos} negative stays; every fold needs both"
        )
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in skf.split(np.zeros(len(y)), y)]


def select_model(
    X: np.ndarray,
    y: np.ndarray,
    *,
    columns: list[str],
    folds: list[tuple[np.ndarray, np.ndarray]],
    search_iterations: int,
    seed: int,
    candidates: tuple[ModelKind, ...] = CANDIDATES,
    n_jobs: int = 2,
    progress: Progress | None = None,
) -> tuple[CVResult, dict[str, CVResult], list[CVResult]]:
    """Return (winner, best result per candidate, every XGBoost search result).

    The winner is the candidate with the highest mean CV AUROC; ties go to the
    simpler model (the order of ``CANDIDATES``).
    """
    tick = progress or (lambda _label: None)
    best: dict[str, CVResult] = {}
    search: list[CVResult] = []
    for kind in candidates:
        if kind == "xgboost":
            for i, params in enumerate(sample_search_space(search_iterations, seed=seed)):
                res = cross_validate(
                    kind, params, X, y, folds, columns=columns, seed=seed, n_jobs=n_jobs
                )
                search.append(res)
                tick(f"xgboost search {i + 1}/{search_iterations}: CV AUROC {res.mean:.3f}")
            best[kind] = max(search, key=lambda r: r.mean)
        else:
            res = cross_validate(
                kind, FIXED_PARAMS[kind], X, y, folds, columns=columns, seed=seed, n_jobs=n_jobs
            )
            best[kind] = res
            tick(f"{kind}: CV AUROC {res.mean:.3f}")
    order = {k: i for i, k in enumerate(CANDIDATES)}
    winner = max(best.values(), key=lambda r: (round(r.mean, 10), -order[r.kind]))
    return winner, best, search
