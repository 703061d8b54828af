"""What evaluation reads: one frozen bundle of test-set evidence, built from a trained model.

The model plane (:mod:`clinical_mlops.modeling`) fits and calibrates the model;
:func:`evaluation_input` applies it to the locked test stays, once, and evaluation
only reads the result, so every number in the report is computed from the same
arrays the model produced on the locked test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.features.snapshot import Snapshot
from clinical_mlops.modeling.trained import TrainedModel
from clinical_mlops.tasks.spec import BASELINE_COLUMN, TaskSpec

__all__ = ["EvaluationInput", "evaluation_input"]


@dataclass(frozen=True)
class EvaluationInput:
    """Test-set predictions and the context needed to judge them.

    Arrays are aligned row by row with ``test_frame`` (one row per test stay).
    """

    spec: TaskSpec
    model_version: str
    selected_model: str  # "xgboost" | "random_forest" | "logistic_regression"
    hyperparameters: dict[str, Any]
    # candidate -> {"mean_auroc": float, "ci": [lo, hi], "folds": [float, ...]}
    cv: dict[str, dict[str, Any]]
    # stay_id, every spec feature as extracted (unimputed, NaN = not measured),
    # the label column (spec.label.name), real_year, ethnicity, and the charted clinical
    # score (tasks.spec.BASELINE_COLUMN) when the baseline is a table column.
    test_frame: pd.DataFrame
    y_true: np.ndarray  # int 0/1
    p_raw: np.ndarray  # model score before calibration
    p_cal: np.ndarray  # calibrated probability of the label
    prediction_sets: np.ndarray  # bool (n, 2): column 0 = set contains "no", 1 = contains "yes"
    # {"method": "mondrian_split_conformal", "alpha": 0.1, "quantiles": {"0": q0, "1": q1},
    #  "n_calibration": {"0": n0, "1": n1}, "guarantee": "..."}
    conformal: dict[str, Any]
    # {"method": "isotonic", "n": int, "fitted_on": "...", "x": [...], "y": [...]}
    calibration: dict[str, Any]
    # per test stay, log-odds contribution of each spec feature (columns = spec feature names)
    # plus a "bias" column; rows sum to the raw model margin.
    contributions: pd.DataFrame
    # raw feature frame (same columns as test_frame's features) -> calibrated probability
    predict_frame: Callable[[pd.DataFrame], np.ndarray]
    snapshot: dict[str, Any]  # Snapshot.summary()
    lineage: dict[str, Any]
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


def evaluation_input(
    *,
    model: TrainedModel,
    snapshot: Snapshot,
    test: pd.DataFrame,
    selected_model: str,
    hyperparameters: dict[str, Any],
    cv: dict[str, dict[str, Any]],
    lineage: dict[str, Any],
    seed: int,
) -> EvaluationInput:
    """Score the test stays with ``model`` and return the evidence evaluation reads."""
    spec = snapshot.spec()
    label = spec.label.name
    pred = model.apply(test)
    return EvaluationInput(
        spec=spec,
        model_version=model.version,
        selected_model=selected_model,
        hyperparameters=hyperparameters,
        cv=cv,
        test_frame=test[
            [
                "stay_id",
                *spec.feature_names,
                label,
                "real_year",
                "ethnicity",
                *([BASELINE_COLUMN] if BASELINE_COLUMN in test.columns else []),
            ]
        ].copy(),
        y_true=test[label].to_numpy(dtype=int),
        p_raw=pred.p_raw,
        p_cal=pred.p_cal,
        prediction_sets=pred.sets,
        conformal=model.conformal.to_dict(),
        calibration=model.calibrator.to_dict()
        | {"fitted_on": "held-out training-period stays (isotonic half)"},
        contributions=pred.contributions,
        predict_frame=model.probability,
        snapshot={k: v for k, v in snapshot.summary().items() if k != "path"},
        lineage=lineage,
        seed=seed,
        extra={"imputation_medians": dict(model.preprocessor.medians)},
    )
