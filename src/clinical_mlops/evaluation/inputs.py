"""What evaluation reads: one frozen bundle of test-set evidence, built from a trained model.

The model plane (:mod:`clinical_mlops.modeling`) fits and calibrates the model;
:func:`evaluation_input` applies it to the locked test stays, once, and evaluation
only reads the result, so every number in the report is computed from the same
arrays the model produced on the locked test set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.errors import WorkspaceError
from clinical_mlops.features.snapshot import Snapshot, locked_test_stays, open_snapshot
from clinical_mlops.modeling.escalation import EscalationReference
from clinical_mlops.modeling.trained import TrainedModel
from clinical_mlops.tasks.spec import BASELINE_COLUMN, TaskSpec
from clinical_mlops.workspace import Workspace

__all__ = [
    "EvaluationInput",
    "StoredEvaluation",
    "evaluated_stays",
    "evaluation_input",
    "fitted_on_words",
    "stored_evaluation_input",
]


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
    # the label column (spec.label.name), real_year, ethnicity, site (snapshots written before
    # sites were recorded have none), and the charted clinical
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
    # the model's held-out conformal-calibration stays, on which the task's escalation policy
    # is resolved at the operating threshold (None: no review figures can be computed)
    escalation_reference: EscalationReference | None = None


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
    fitted_on: str = "held-out training-period stays (isotonic half)",
) -> EvaluationInput:
    """Score the test stays with ``model`` and return the evidence evaluation reads.

    ``fitted_on`` says which stays the calibrator was fitted on (the report states it).
    """
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
                *(["site"] if "site" in test.columns else []),
                *([BASELINE_COLUMN] if BASELINE_COLUMN in test.columns else []),
            ]
        ].copy(),
        y_true=test[label].to_numpy(dtype=int),
        p_raw=pred.p_raw,
        p_cal=pred.p_cal,
        prediction_sets=pred.sets,
        conformal=model.conformal.to_dict(),
        calibration=model.calibrator.to_dict() | {"fitted_on": fitted_on},
        contributions=pred.contributions,
        predict_frame=model.probability,
        snapshot={k: v for k, v in snapshot.summary().items() if k != "path"},
        lineage=lineage,
        seed=seed,
        extra={"imputation_medians": dict(model.preprocessor.medians)},
        escalation_reference=model.escalation_reference,
    )


@dataclass(frozen=True)
class StoredEvaluation:
    """A model folder's evaluation input rebuilt from stored artifacts, with its resample count."""

    input: EvaluationInput
    n_boot: int
    lineage: dict[str, Any]


def evaluated_stays(snapshot: Snapshot, lineage: dict[str, Any]) -> pd.DataFrame:
    """Return the stays a model's validation is computed on, by its lineage.

    A trained model: the snapshot's locked test stays. A model recalibrated at a site
    (lineage ``recalibration``): that site's held-out stays, split as the recalibration
    split them (:func:`~clinical_mlops.modeling.recalibration.site_split`, same seed).
    """
    recal = lineage.get("recalibration")
    if not recal:
        return locked_test_stays(snapshot)
    from clinical_mlops.modeling.recalibration import site_split

    split = site_split(
        snapshot.frame(), snapshot.spec(), site=str(recal["site"]), seed=int(recal["split"]["seed"])
    )
    return split.held_out


def fitted_on_words(lineage: dict[str, Any]) -> str:
    """Return which stays a model's calibrator was fitted on, in the report's words."""
    recal = lineage.get("recalibration")
    if not recal:
        return "held-out training-period stays (isotonic half)"
    years = recal["split"]["fit_years"]
    return (
        f"site {recal['site']} stays of {years[0]}-{years[1]} (calibrator half), local "
        f"{recal['method']} recalibration of {recal['parent']['model_version']}"
    )


def stored_evaluation_input(workspace: Workspace, folder: Path) -> StoredEvaluation:
    """Return the evaluation input of the model in ``folder``, rebuilt from what was kept.

    Loads the model folder (JSON artifacts only), checks every artifact against the hashes
    in its lineage (:class:`WorkspaceError` naming those that differ), re-opens the
    snapshot named in the lineage (verifying its files) and re-scores the stays its
    validation was computed on (:func:`evaluated_stays`): the same input training (or
    local recalibration) evaluated, so a report recomputed from it at the
    training threshold and policy is byte-identical to the stored one.
    """
    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    model = TrainedModel.load(folder)
    hashes = model.artifact_hashes()
    bad = sorted(k for k, v in lineage["artifacts"].items() if hashes.get(k) != v)
    if bad:
        raise WorkspaceError(
            f"model {folder.name}: artifact(s) {', '.join(bad)} do not match their lineage hashes"
        )
    snapshot = open_snapshot(workspace, lineage["snapshot"]["id"])
    selection = lineage["selection"]
    inp = evaluation_input(
        model=model,
        snapshot=snapshot,
        test=evaluated_stays(snapshot, lineage),
        selected_model=selection["selected_model"],
        hyperparameters=selection["hyperparameters"],
        cv=selection["cv"],
        lineage=lineage,
        seed=int(lineage["seed"]),
        fitted_on=fitted_on_words(lineage),
    )
    return StoredEvaluation(
        input=inp, n_boot=int(lineage["training"]["config"]["n_boot"]), lineage=lineage
    )
