"""The model-building use cases: build a snapshot, train a model, replay its validation.

Every front end calls these; none repeats their rules:

* :func:`build_task_snapshot` opens the source the user named (generating the synthetic
  one when it is not cached), then builds the snapshot — or finds the one already built
  from the same inputs, without redoing the work or recording a second ``snapshot_built``
  event. ``threads`` bounds the feature engine (DuckDB ``SET threads``).
* :func:`train_model` runs the protocol: fit (``modeling.train``), score the locked test
  set once and evaluate (``evaluation``), write the model folder with its report and
  model card, lineage (``registry.lineage``), optional MLflow tracking
  (``registry.tracking``), then the ``training_run`` and ``report_written`` ledger events.
* :func:`replay_evaluation` recomputes a model's validation from stored artifacts alone
  (SPEC R-A2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

from clinical_mlops import ledger
from clinical_mlops.application.tasks import require_trainable
from clinical_mlops.data.sources import SourceKind, open_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.errors import EngineUnavailable, SourceInvalid
from clinical_mlops.evaluation.inputs import (
    EvaluationInput,
    evaluation_input,
    stored_evaluation_input,
)
from clinical_mlops.evaluation.model_card import write_model_card
from clinical_mlops.evaluation.report import evaluate, write_report
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.features.engine import DuckDBEngine, FeatureEngine
from clinical_mlops.features.snapshot import (
    Snapshot,
    build_snapshot,
    build_table_snapshot,
    open_snapshot,
)
from clinical_mlops.features.task_choice import snapshot_task
from clinical_mlops.hashing import canonical_json, sha256_file
from clinical_mlops.modeling.train import (
    DEFAULT_SEARCH_ITERATIONS,
    FittedModel,
    TrainingConfig,
    all_cores,
    fit_model,
)
from clinical_mlops.modeling.trained import TrainedModel, model_folder
from clinical_mlops.registry import tracking
from clinical_mlops.registry.lineage import lineage_record
from clinical_mlops.tasks import TaskSpec, load_task
from clinical_mlops.workspace import Workspace

__all__ = [
    "ENGINES",
    "SOURCES",
    "BuildProgress",
    "TrainingResult",
    "build_task_snapshot",
    "feature_engine",
    "replay_evaluation",
    "tracked_metrics",
    "train_model",
    "train_task",
]

#: the feature engines a snapshot can be built on
ENGINES = ("duckdb", "spark")
#: the sources a snapshot can be built from (``table``: one prepared row per patient)
SOURCES: tuple[str, ...] = (*get_args(SourceKind), "table")

Step = Callable[[str], None]
Tick = Callable[[int, int], None]


@dataclass(frozen=True)
class BuildProgress:
    """Where a snapshot build reports progress; every callback is optional.

    ``status`` receives what is being prepared, ``progress(done, total)`` the synthetic
    generator's count, ``on_step`` each step of the build.
    """

    on_step: Step | None = None
    status: Step | None = None
    progress: Tick | None = None


def feature_engine(
    name: str, *, spark_master: str = "local[2]", threads: int | None = None
) -> FeatureEngine:
    """Return the feature engine called ``name`` (``duckdb`` or ``spark``), ready to run.

    ``threads`` bounds DuckDB's thread pool (``SET threads``; default: every core). A Spark
    session is started here, so a missing pyspark or Java fails (:class:`EngineUnavailable`,
    saying what to install) before any work.
    """
    if name == "duckdb":
        return DuckDBEngine(threads=threads)
    if name == "spark":
        from clinical_mlops.features.spark import SparkEngine

        runner = SparkEngine(master=spark_master)
        runner.session  # noqa: B018 - start (or fail, saying what to install) before any work
        return runner
    raise EngineUnavailable(f"feature engine {name!r}: expected {' or '.join(ENGINES)}")


def build_task_snapshot(
    workspace: Workspace,
    *,
    task: str | TaskSpec | None,
    source: str = "synthetic",
    path: Path | None = None,
    seed: int = 7,
    scale: float = 1.0,
    engine: str = "duckdb",
    spark_master: str = "local[2]",
    threads: int | None = None,
    actor: str = "pipeline",
    report: BuildProgress = BuildProgress(),
) -> Snapshot:
    """Return the snapshot of ``task`` over the named source, built or found.

    ``source`` is one of :data:`SOURCES`; ``path`` is the source folder (raw, mimic-iv) or
    the table file (table); ``seed`` and ``scale`` shape the synthetic source. With no
    ``task``, the one task of the workspace's snapshots (none or several: name it). When the
    workspace already holds the snapshot of the same inputs it is returned as it is:
    nothing is recomputed and no second ``snapshot_built`` event is recorded.
    ``threads`` bounds the feature engine (default: every core).
    """
    if source not in SOURCES:
        raise SourceInvalid(f"--source: expected {', '.join(SOURCES)}, got {source!r}")
    spec = task if isinstance(task, TaskSpec) else load_task(snapshot_task(workspace, task))
    if source == "table":
        if path is None:
            raise SourceInvalid("--path is required with --source table (a .csv or .parquet file)")
        return build_table_snapshot(workspace, spec, path, on_step=report.on_step, actor=actor)
    runner = feature_engine(engine, spark_master=spark_master, threads=threads)
    raw = open_source(
        workspace,
        kind=cast(SourceKind, source),
        path=path,
        config=SyntheticConfig(seed=seed, scale=scale),
        setting=spec.cohort.setting,
        progress=report.progress,
        status=report.status,
    )
    return build_snapshot(workspace, spec, raw, engine=runner, on_step=report.on_step, actor=actor)


@dataclass
class TrainingResult:
    """What a training run produced, and where; ``snapshot`` is the one it was trained on."""

    model: TrainedModel
    snapshot: Snapshot
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


def tracked_metrics(report: ValidationReport) -> dict[str, float]:
    """Return the figures a training run logs to MLflow: the locked-test metrics and the workload.

    Every number of the report's ``test`` section (AUROC, AUPRC, Brier, ECE, calibration,
    conformal coverage, confusion counts), each confidence interval as ``<name>_low`` and
    ``<name>_high`` (``auroc_ci_low``), then alerts, clinician reviews and deferred cases
    per 100 test stays at the operating threshold and escalation policy (the review
    figures only when the report states them).
    """
    w = report.workload
    numbers: dict[str, Any] = report.test.to_json() | {
        "alerts_per_100": w.alerts_per_100,
        "reviews_per_100": w.reviews_per_100,
        "deferred_per_100": w.deferred_per_100,
    }
    out: dict[str, float] = {}
    for k, v in numbers.items():
        if _is_number(v):
            out[k] = float(v)
        elif isinstance(v, list) and len(v) == 2 and all(_is_number(b) for b in v):
            out[f"{k}_low"], out[f"{k}_high"] = float(v[0]), float(v[1])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


#: the model-folder files a tracked run carries as MLflow artifacts (aggregates only)
TRACKED_FILES = (
    "report.json",
    "report.html",
    "model_card.md",
    "model_card.html",
    "model_card.json",
    "lineage.json",
)


def _run_record(
    fit: FittedModel,
    snapshot: Snapshot,
    config: TrainingConfig,
    report: ValidationReport,
    inp: EvaluationInput,
    folder: Path,
) -> tracking.TrainingRunRecord:
    """Return what a training run logs to MLflow, from the fit's aggregates and written files."""
    model = fit.model
    task = snapshot.manifest["task"]
    counts = snapshot.manifest.get("counts", {})
    params: dict[str, Any] = {
        **config.as_dict(),
        "task": task["name"],
        "task_spec_sha256": task.get("spec_sha256"),
        "snapshot_id": snapshot.id,
        "split_membership_sha256": snapshot.manifest.get("split_membership_sha256"),
        **{f"snapshot_{k}": v for k, v in counts.items()},
        **{k: v for k, v in fit.training.items() if k.startswith("n_") or k == "scale_pos_weight"},
        "selected_model": fit.selected_model,
        **fit.hyperparameters,
    }
    from sklearn.metrics import average_precision_score

    metrics = tracked_metrics(report)
    # AUPRC (average precision) of the calibrated risk: not a report figure, but what
    # teams compare runs on when the outcome is rare.
    metrics["auprc"] = float(average_precision_score(inp.y_true, inp.p_cal))
    selected_cv = fit.cv.get(fit.selected_model, {})
    if "mean_auroc" in selected_cv:
        metrics["cv_mean_auroc"] = float(selected_cv["mean_auroc"])
    tags = {
        "clinical_mlops.model_version": model.version,
        "clinical_mlops.model_sha256": model.model_sha256,
        "clinical_mlops.snapshot_id": snapshot.id,
        "clinical_mlops.task": str(task["name"]),
        "clinical_mlops.selected_model": fit.selected_model,
    }
    return tracking.TrainingRunRecord(
        run_name=model.version,
        params={k: v for k, v in params.items() if v is not None},
        metrics=metrics,
        tags=tags,
        candidates=_cv_candidates(fit),
        files=[folder / name for name in TRACKED_FILES if (folder / name).is_file()],
        scorer=model.scorer,
        columns=list(model.preprocessor.columns),
    )


def _cv_candidates(fit: FittedModel) -> list[dict[str, Any]]:
    """Return every cross-validated configuration (fixed candidates, then each search draw)."""
    found: list[dict[str, Any]] = []
    search = fit.selection.get("search", [])
    for family, result in fit.cv.items():
        if family == "xgboost" and search:
            for i, draw in enumerate(search, start=1):
                found.append({**draw, "family": family, "name": f"{family} search {i}"})
        else:
            found.append({**result, "family": family, "name": family})
    winner = next(
        (
            c
            for c in found
            if c["family"] == fit.selected_model and c["params"] == fit.hyperparameters
        ),
        None,
    )
    for c in found:
        c["selected"] = c is winner
    return found


def train_model(
    workspace: Workspace,
    snapshot: Snapshot,
    *,
    config: TrainingConfig | None = None,
    on_step: Step | None = None,
    command_line: list[str] | None = None,
    actor: str = "pipeline",
    tracking_uri: str | None = None,
) -> TrainingResult:
    """Run the training protocol on ``snapshot`` and write the model folder; return the result.

    Raises :class:`TaskSpecInvalid` before any work when the snapshot's spec cannot be
    trained (the rule ``tasks check`` runs: :func:`~clinical_mlops.application.tasks.
    trainability_problems`), :class:`ContractViolation` when the data cannot support the
    protocol (a split or fold without both classes). Nothing is written on failure.
    ``config`` defaults to :class:`TrainingConfig`'s defaults (every core for XGBoost).
    ``training_run`` and ``report_written`` events naming ``actor`` are appended
    to the audit ledger. With ``tracking_uri`` the run is also logged to MLflow
    and its run id recorded in lineage (``registry.tracking``).
    """
    require_trainable(snapshot.spec())
    config = config or TrainingConfig()
    # Ask the tracking store before any work: an unusable one stops the run here.
    experiment = tracking.probe(tracking_uri) if tracking_uri else None
    step = on_step or (lambda _msg: None)
    fit = fit_model(snapshot, config=config, on_step=step)
    model = fit.model

    step("scoring the locked test set (once)")
    hashes = model.artifact_hashes()
    lineage = lineage_record(
        snapshot_manifest=snapshot.manifest,
        snapshot_id=snapshot.id,
        seed=config.seed,
        selection=fit.selection,
        training=fit.training,
        artifacts=hashes,
        command_line=[
            tracking.mask_secrets(a) for a in (sys.argv if command_line is None else command_line)
        ],
    )
    run_id = None
    if tracking_uri and experiment is not None:
        run_id = tracking.start_training_run(tracking_uri, experiment, run_name=model.version)
        lineage["tracking"] = {
            "mlflow_run_id": run_id,
            "tracking_uri": tracking.public_uri(tracking_uri),
        }
    inp = evaluation_input(
        model=model,
        snapshot=snapshot,
        test=fit.test,
        selected_model=fit.selected_model,
        hyperparameters=fit.hyperparameters,
        cv=fit.cv,
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
        if tracking_uri and experiment is not None and run_id is not None:
            # Logged from the staging folder: a store failing now leaves no model behind.
            tracking.log_training_run(
                tracking_uri,
                experiment,
                run_id,
                _run_record(fit, snapshot, config, report, inp, stage),
            )
        workspace.publish(stage, final)
    paths = {Path(p).name: final / Path(p).name for p in written}
    ledger.record(
        workspace,
        type="training_run",
        actor=actor,
        payload={
            "model_version": model.version,
            "model_sha256": model.model_sha256,
            "snapshot_id": snapshot.id,
            "selected_model": fit.selected_model,
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
        snapshot=snapshot,
        folder=final,
        report=report,
        lineage=lineage,
        cv=fit.cv,
        selected_model=fit.selected_model,
        hyperparameters=fit.hyperparameters,
        paths=paths,
        conformal_bounds=model.conformal.coverage_bounds(inp.y_true),
    )


def train_task(
    workspace: Workspace,
    *,
    task: str | TaskSpec | None,
    snapshot: str | None = None,
    seed: int = 7,
    scale: float = 1.0,
    search_iterations: int = DEFAULT_SEARCH_ITERATIONS,
    n_boot: int = 1000,
    threads: int | None = None,
    actor: str = "pipeline",
    build: BuildProgress = BuildProgress(),
    on_step: Step | None = None,
    tracking_uri: str | None = None,
    track: bool | None = None,
) -> TrainingResult:
    """Train on the named snapshot, or on the task's synthetic snapshot; return the result.

    Without ``snapshot`` (an id or a unique prefix) the snapshot of ``task`` over the
    synthetic source of ``seed`` and ``scale`` is built, or found when the workspace
    already holds it (no second build, no second ``snapshot_built`` event). ``threads``
    bounds DuckDB and XGBoost (default: every core); it never changes the model.
    MLflow tracking follows :func:`~clinical_mlops.registry.tracking.resolve_tracking_uri`:
    ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the workspace's ``mlflow.db`` when
    ``track`` is true; ``track`` false turns it off. The store is checked before any
    work (:class:`TrackingUnavailable` naming the URI).
    """
    uri = tracking.resolve_tracking_uri(workspace, uri=tracking_uri, track=track)
    if uri:
        tracking.probe(uri)  # before the snapshot build, not after it
    if snapshot:
        snap = open_snapshot(workspace, snapshot)
    else:
        # Refuse an untrainable spec before the build, not after it.
        require_trainable(
            task if isinstance(task, TaskSpec) else load_task(snapshot_task(workspace, task))
        )
        snap = build_task_snapshot(
            workspace, task=task, seed=seed, scale=scale, threads=threads, actor=actor, report=build
        )
    config = TrainingConfig(
        seed=seed,
        search_iterations=search_iterations,
        n_boot=n_boot,
        n_jobs=threads or all_cores(),
    )
    return train_model(
        workspace, snap, config=config, on_step=on_step, actor=actor, tracking_uri=uri
    )


def replay_evaluation(workspace: Workspace, version: str) -> dict[str, Any]:
    """Return {model_version, identical, artifacts_verified, test} after replaying the validation.

    Loads the model folder (JSON artifacts only), checks every artifact against the hashes
    in its lineage (:class:`WorkspaceError` naming those that differ), re-opens the
    snapshot named in the lineage (verifying its files), re-scores the test stays and
    recomputes the report. ``identical`` is true when it equals the stored one byte for
    byte — the evidence that a past result can be reproduced from what was kept.
    """
    folder = model_folder(workspace, version)
    stored_input = stored_evaluation_input(workspace, folder)
    report = evaluate(stored_input.input, n_boot=stored_input.n_boot)
    stored = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return {
        "model_version": folder.name,
        "identical": canonical_json(report.to_json()) == canonical_json(stored),
        "artifacts_verified": True,
        "test": report.test.to_json(),
    }
