"""The training protocol, end to end, with the test set touched exactly once.

1. Temporal split from the snapshot (train 2008–2016, test 2017–2019 for the ICU task).
2. Preprocessing (median imputation, declared one-hot) fitted on train, frozen.
3. Model selection by mean AUROC over stratified K-fold CV *inside train*:
   logistic regression, random forest, and XGBoost with a random search whose
   budget is ``search_iterations`` (the full protocol uses 100).
4. The winner is refitted on 80 % of train (stratified, seeded). The other 20 %
   — stays from the training period the model never saw — is split in half:
   one half fits the isotonic calibrator, the other the conformal thresholds,
   so the conformal guarantee is not weakened by reusing calibration data.
5. Only then is the test set scored, once, by evaluation
   (:func:`clinical_mlops.evaluation.inputs.evaluation_input`).

:func:`fit_model` does steps 1–4 and returns a :class:`FittedModel`: the model and what
evaluation and lineage need. ``application.training.train_model`` runs the whole use
case (fit, evaluate, report, model card, lineage, tracking, ledger).

Everything is seeded; the same snapshot and seed give identical metrics and an
identical ``model_sha256`` (SPEC R-L8).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from clinical_mlops.errors import ContractViolation
from clinical_mlops.features.snapshot import Snapshot
from clinical_mlops.modeling.calibration import IsotonicCalibrator
from clinical_mlops.modeling.conformal import MondrianConformal
from clinical_mlops.modeling.defaults import DEFAULT_SEARCH_ITERATIONS
from clinical_mlops.modeling.escalation import EscalationReference
from clinical_mlops.modeling.model import Explainer, ModelKind
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.modeling.selection import (
    CANDIDATES,
    fit_candidate,
    select_model,
    stratified_folds,
)
from clinical_mlops.modeling.trained import TrainedModel, explanation_config

__all__ = [
    "CALIBRATION_FRACTION",
    "DEFAULT_SEARCH_ITERATIONS",
    "FittedModel",
    "TrainingConfig",
    "all_cores",
    "fit_model",
]

#: how the release's explanations are computed, as the model card and report say it
_EXPLAINERS: dict[Explainer, str] = {
    "treeshap-tables": (
        "exact path-dependent TreeSHAP from tables compiled from the booster "
        "(xgboost pred_contribs to float32 rounding)"
    ),
    "xgboost-pred-contribs": "TreeSHAP (xgboost pred_contribs)",
    "linear": "linear SHAP",
}

CALIBRATION_FRACTION = 0.2

Step = Callable[[str], None]


def all_cores() -> int:
    """Return the number of cores of this machine (the default number of threads)."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of one training run; all of them are recorded in lineage.

    ``n_jobs`` is the number of threads XGBoost uses (default: every core). It changes
    how fast a model is fitted, never the model: the same snapshot and seed give the
    same ``model_sha256`` whatever the thread count.
    """

    seed: int = 7
    search_iterations: int = DEFAULT_SEARCH_ITERATIONS
    n_jobs: int = field(default_factory=all_cores)
    n_boot: int = 1000
    candidates: tuple[ModelKind, ...] = CANDIDATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "search_iterations": self.search_iterations,
            "n_jobs": self.n_jobs,
            "n_boot": self.n_boot,
            "candidates": list(self.candidates),
            "calibration_fraction": CALIBRATION_FRACTION,
        }


@dataclass
class FittedModel:
    """What a fit produced: the model, the locked test stays, and the selection evidence.

    ``selection`` and ``training`` are the lineage sections of the run (chosen model,
    CV results, search, sizes of every split); ``test`` holds the locked test stays,
    not yet scored.
    """

    model: TrainedModel
    test: pd.DataFrame
    selected_model: str
    hyperparameters: dict[str, Any]
    cv: dict[str, dict[str, Any]]
    selection: dict[str, Any]
    training: dict[str, Any]
    seed: int


def fit_model(
    snapshot: Snapshot, *, config: TrainingConfig = TrainingConfig(), on_step: Step | None = None
) -> FittedModel:
    """Select, fit, calibrate and wrap a model on ``snapshot``'s training stays; return it.

    Raises :class:`ContractViolation` when the data cannot support the protocol (a
    split or fold without both classes). The test stays are split off but not scored.
    Writes nothing.
    """
    step = on_step or (lambda _msg: None)
    spec = snapshot.spec()
    label = spec.label.name
    frame = snapshot.frame()
    train = frame.loc[frame["split"] == "train"].reset_index(drop=True)
    test = frame.loc[frame["split"] == "test"].reset_index(drop=True)
    y = train[label].to_numpy(dtype=int)

    step("fitting preprocessing on the training stays")
    pre = Preprocessor.fit(train, spec)
    X = pre.transform(train)
    columns = pre.columns
    try:
        folds = stratified_folds(y, k=spec.split.cv_folds, seed=config.seed)
    except ValueError as exc:
        raise ContractViolation(f"training split of snapshot {snapshot.id[:12]}: {exc}") from None

    step(
        f"model selection: {spec.split.cv_folds}-fold CV inside train, {config.search_iterations} search iterations"
    )
    winner, best, search = select_model(
        X,
        y,
        columns=columns,
        folds=folds,
        search_iterations=config.search_iterations,
        seed=config.seed,
        candidates=config.candidates,
        n_jobs=config.n_jobs,
        progress=step,
    )
    cv = {k: v.as_dict() for k, v in best.items()}

    step(f"refitting {winner.kind} and calibrating on held-out training-period stays")
    idx = np.arange(len(y))
    fit_idx, cal_idx = train_test_split(
        idx, test_size=CALIBRATION_FRACTION, stratify=y, random_state=config.seed
    )
    iso_idx, conf_idx = train_test_split(
        cal_idx, test_size=0.5, stratify=y[cal_idx], random_state=config.seed
    )
    scorer = fit_candidate(
        winner.kind,
        winner.params,
        X[fit_idx],
        y[fit_idx],
        columns=columns,
        seed=config.seed,
        n_jobs=config.n_jobs,
    )
    calibrator = IsotonicCalibrator.fit(scorer.margin(X[iso_idx]), y[iso_idx])
    p_conf = calibrator.transform(scorer.margin(X[conf_idx]))
    conformal = MondrianConformal.fit(p_conf, y[conf_idx], alpha=spec.thresholds.conformal_alpha)
    # What escalation policies are sized on when a release fixes its threshold.
    reference = EscalationReference.build(
        p_conf,
        conformal.predict_sets(p_conf),
        missing_count=train.loc[conf_idx, list(pre.features)].isna().sum(axis=1).to_numpy(),
        n_features=len(pre.features),
        max_missing=spec.cohort.max_missing_feature_fraction,
    )
    method = _EXPLAINERS[scorer.explainer]
    explanation = explanation_config(
        spec.name,
        [
            {"name": f.name, "label": f.label, "unit": f.shown_unit, "kind": f.kind}
            for f in spec.features
        ],
        method,
    )
    model = TrainedModel(
        task=spec.name,
        preprocessor=pre,
        scorer=scorer,
        calibrator=calibrator,
        conformal=conformal,
        explanation=explanation,
        escalation_reference=reference,
    )

    training = {
        "config": config.as_dict(),
        "n_train": len(y),
        "n_fit": len(fit_idx),
        "n_calibration_isotonic": len(iso_idx),
        "n_calibration_conformal": len(conf_idx),
        "n_test": len(test),
        "scale_pos_weight": round(float((len(fit_idx) - y[fit_idx].sum()) / y[fit_idx].sum()), 6),
    }
    selection = {
        "selected_model": winner.kind,
        "hyperparameters": winner.params,
        "cv": cv,
        "search": [r.as_dict() for r in search],
        "rule": "highest mean CV AUROC; ties to the simpler model",
    }
    return FittedModel(
        model=model,
        test=test,
        selected_model=winner.kind,
        hyperparameters=winner.params,
        cv=cv,
        selection=selection,
        training=training,
        seed=config.seed,
    )
