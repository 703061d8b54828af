"""What the model plane hands to evaluation: one frozen bundle of test-set evidence.

The model plane (:mod:`clinical_mlops.modeling`) fits, calibrates and applies
the model; evaluation only reads this object, so every number in the report is
computed from the same arrays the model produced on the locked test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["EvaluationInput"]


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
    # the label column (spec.label.name), real_year, ethnicity.
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
