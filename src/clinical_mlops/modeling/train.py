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
5. Only then is the test set scored, once, and handed to evaluation.

Everything is seeded; the same snapshot and seed give identical metrics and an
identical ``model_sha256`` (SPEC R-L8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from clinical_mlops import ledger
from clinical_mlops.data.snapshot import Snapshot
from clinical_mlops.errors import ContractViolation
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.hashing import canonical_json, sha256_file
from clinical_mlops.modeling.calibration import IsotonicCalibrator
from clinical_mlops.modeling.conformal import MondrianConformal
from clinical_mlops.modeling.model import Explainer, ModelKind
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.modeling.selection import (
    CANDIDATES,
    fit_candidate,
    select_model,
    stratified_folds,
)
from clinical_mlops.modeling.trained import TrainedModel, explanation_config
from clinical_mlops.registry.lineage import lineage_record
from clinical_mlops.workspace import Workspace

__all__ = ["DEFAULT_SEARCH_ITERATIONS", "TrainingConfig", "TrainingResult", "train_model"]

#: how the release's explanations are computed, as the model card and report say it
_EXPLAINERS: dict[Explainer, str] = {
    "treeshap-tables": (
        "exact path-dependent TreeSHAP from tables compiled from the booster "
        "(xgboost pred_contribs to float32 rounding)"
    ),
    "xgboost-pred-contribs": "TreeSHAP (xgboost pred_contribs)",
    "linear": "linear SHAP",
}

DEFAULT_SEARCH_ITERATIONS = 20
CALIBRATION_FRACTION = 0.2

Step = Callable[[str], None]


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of one training run; all of them are recorded in lineage."""

    seed: int = 7
    search_iterations: int = DEFAULT_SEARCH_ITERATIONS
    n_jobs: int = 2
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
class TrainingResult:
    """What a training run produced, and where."""

    model: TrainedModel
    folder: Path
    report: ValidationReport
    lineage: dict[str, Any]
    cv: dict[str, dict[str, Any]]
    selected_model: str
    hyperparameters: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    conformal_bounds: dict[str, Any] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return self.model.version

    def summary(self) -> dict[str, Any]:
        """The ``train --json`` object."""
        r = self.report
        return {
            "model_version": self.model_version,
            "model_sha256": self.model.model_sha256,
            "snapshot_id": self.lineage["snapshot"]["id"],
            "selected_model": self.selected_model,
            "hyperparameters": self.hyperparameters,
            "cv_auroc": {k: v["mean_auroc"] for k, v in self.cv.items()},
            "cv": self.cv,
            "test": r.test.to_json(),
            "conformal_guarantee": self.conformal_bounds,
            "subgroups": {k: v.to_json() for k, v in r.subgroups.items()},
            "fairness": {k: v.to_json() for k, v in r.fairness.items()},
            "fairness_alerts": [a.to_json() for a in r.fairness_alerts],
            "baseline": r.baseline.to_json(),
            "report_html": str(self.paths["report.html"]),
            "report_json": str(self.paths["report.json"]),
            "model_card": str(self.paths["model_card.md"]),
            "model_card_html": str(self.paths["model_card.html"]),
            "folder": str(self.folder),
        }


def _frame(snapshot: Snapshot) -> pd.DataFrame:
    return snapshot.features().merge(
        snapshot.cohort(), on="stay_id", how="inner", validate="one_to_one"
    )


def train_model(
    workspace: Workspace,
    snapshot: Snapshot,
    *,
    config: TrainingConfig = TrainingConfig(),
    on_step: Step | None = None,
    command_line: list[str] | None = None,
    actor: str = "pipeline",
    tracking_uri: str | None = None,
) -> TrainingResult:
    """Run the training protocol on ``snapshot`` and write the model folder; return the result.

    Raises :class:`ContractViolation` when the data cannot support the protocol
    (a split or fold without both classes). Nothing is written on failure.
    ``training_run`` and ``report_written`` events naming ``actor`` are appended
    to the audit ledger. With ``tracking_uri`` the run is also logged to MLflow
    and its run id recorded in lineage (``registry.tracking``).
    """
    from clinical_mlops.evaluation.model_card import write_model_card
    from clinical_mlops.evaluation.report import evaluate, write_report

    step = on_step or (lambda _msg: None)
    spec = snapshot.spec()
    label = spec.label.name
    frame = _frame(snapshot)
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
    conformal = MondrianConformal.fit(
        calibrator.transform(scorer.margin(X[conf_idx])),
        y[conf_idx],
        alpha=spec.thresholds.conformal_alpha,
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
    )

    step("scoring the locked test set (once)")
    hashes = model.artifact_hashes()
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
    lineage = lineage_record(
        snapshot_manifest=snapshot.manifest,
        snapshot_id=snapshot.id,
        seed=config.seed,
        selection=selection,
        training=training,
        artifacts=hashes,
        command_line=command_line,
    )
    if tracking_uri:
        from clinical_mlops.registry import tracking

        run_id = tracking.start_run(tracking_uri=tracking_uri, run_name=model.version)
        lineage["tracking"] = {"mlflow_run_id": run_id, "tracking_uri": tracking_uri}
    inp = evaluation_input(
        model=model,
        snapshot=snapshot,
        test=test,
        selected_model=winner.kind,
        hyperparameters=winner.params,
        cv=cv,
        lineage=lineage,
        seed=config.seed,
    )

    step(f"evaluating ({config.n_boot} bootstrap resamples) and writing the report")
    report = evaluate(inp, n_boot=config.n_boot)
    final = workspace.models_dir / model.version
    with workspace.staging_dir(workspace.models_dir) as stage:
        model.save(stage)
        (stage / "lineage.json").write_bytes(canonical_json(lineage))
        written = [
            *write_report(report, inp, stage).values(),
            *write_model_card(report, inp, stage).values(),
        ]
        workspace.publish(stage, final)
    paths = {Path(p).name: final / Path(p).name for p in written}
    if tracking_uri:
        tracking.finish_run(
            params={**config.as_dict(), "selected_model": winner.kind, **winner.params},
            metrics={
                k: v
                for k, v in report.test.to_json().items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            files=[paths["report.json"], paths["model_card.md"]],
        )
    ledger.record(
        workspace,
        type="training_run",
        actor=actor,
        payload={
            "model_version": model.version,
            "model_sha256": model.model_sha256,
            "snapshot_id": snapshot.id,
            "selected_model": winner.kind,
            "seed": config.seed,
            "artifacts": hashes,
            "test_auroc": report.test.auroc,
        },
    )
    ledger.record(
        workspace,
        type="report_written",
        actor=actor,
        payload={
            "model_version": model.version,
            "files": {name: sha256_file(path) for name, path in sorted(paths.items())},
        },
    )
    return TrainingResult(
        model=model,
        folder=final,
        report=report,
        lineage=lineage,
        cv=cv,
        selected_model=winner.kind,
        hyperparameters=winner.params,
        paths=paths,
        conformal_bounds=conformal.coverage_bounds(inp.y_true),
    )


def locked_test_stays(snapshot: Snapshot) -> pd.DataFrame:
    """Return the locked test stays of ``snapshot`` (features, label, year, ethnicity)."""
    frame = _frame(snapshot)
    return frame.loc[frame["split"] == "test"].reset_index(drop=True)


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
        test_frame=test[["stay_id", *spec.feature_names, label, "real_year", "ethnicity"]].copy(),
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
