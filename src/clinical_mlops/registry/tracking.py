"""MLflow experiment tracking (R-I1), optional: ``pip install 'clinical-mlops[mlflow]'``.

Where a run goes (:func:`resolve_tracking_uri`, the one rule every front end uses): the
``--tracking-uri`` a user gave, else the ``MLFLOW_TRACKING_URI`` environment variable,
else the workspace's own store (``sqlite:///<workspace>/mlflow.db``) when tracking is
asked for (``--track``; the demo asks by default), else nowhere. Training never imports
MLflow when tracking is off.

What one training run logs (:func:`log_training_run`): parameters (configuration, seed,
task, snapshot id and row counts, selected family and hyperparameters), the locked-test
metrics with their confidence bounds, one nested child run per cross-validated candidate
with its fold AUROCs, the report, model card and lineage files, and the fitted scorer
in its MLflow flavour (``mlflow.xgboost`` for tree models, ``mlflow.sklearn`` for the
logistic regression) with a signature from the feature contract, tagged with the model
version and hash. No patient row is ever sent; no input example is logged. The release
bundle stays pickle-free; the MLflow copy of a logistic regression is pickled by
MLflow's sklearn flavour and is a convenience copy, never what the bedside runs.

A store that cannot be used raises :class:`TrackingUnavailable` naming the URI (with any
password in it masked); the training use case asks before it writes anything.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clinical_mlops.errors import TrackingUnavailable, ValueInvalid

__all__ = [
    "EXPERIMENT",
    "TRACKING_ENV",
    "TrainingRunRecord",
    "default_tracking_uri",
    "log_training_run",
    "mask_secrets",
    "probe",
    "public_uri",
    "resolve_tracking_uri",
    "start_training_run",
    "tag_release",
]

EXPERIMENT = "clinical-mlops"
#: the environment variable MLflow itself reads; a team's existing setting is honoured
TRACKING_ENV = "MLFLOW_TRACKING_URI"
#: tag namespace on runs and logged models
TAG = "clinical_mlops"
#: how long one request to a tracking server may take before the store is called unusable
PROBE_TIMEOUT_S = 20


def default_tracking_uri(workspace: Any) -> str:
    """Return the workspace's local MLflow store URI (``sqlite:///<workspace>/mlflow.db``)."""
    return f"sqlite:///{workspace.path('mlflow')}"


def resolve_tracking_uri(
    workspace: Any,
    *,
    uri: str | None = None,
    track: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Return the MLflow tracking URI a training run logs to, or None when tracking is off.

    ``uri`` (``--tracking-uri``) wins, then ``MLFLOW_TRACKING_URI``, then the workspace's
    store when ``track`` is true. ``track`` false (``--no-track``) turns tracking off even
    when the variable is set; with ``uri`` as well it is refused (:class:`ValueInvalid`).
    """
    env = os.environ if environ is None else environ
    given = (uri or "").strip()
    if track is False:
        if given:
            raise ValueInvalid("--tracking-uri: cannot be combined with --no-track")
        return None
    if given:
        return given
    from_env = env.get(TRACKING_ENV, "").strip()
    if from_env:
        return from_env
    return default_tracking_uri(workspace) if track else None


_USERINFO = re.compile(r"(://[^/\s:@]*):[^@\s/]*@")


def mask_secrets(text: str) -> str:
    """Return ``text`` with the password of every URL in it (``scheme://user:pw@host``) masked."""
    return _USERINFO.sub(r"\1:***@", text)


def public_uri(uri: str) -> str:
    """Return ``uri`` with any password in it masked, fit for lineage, logs and errors."""
    return mask_secrets(uri)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(
            "MLflow tracking was asked for but mlflow is not installed; "
            "install it with: pip install 'clinical-mlops[mlflow]'"
        ) from None
    return mlflow


def _unusable(uri: str, exc: BaseException) -> TrackingUnavailable:
    # Never echo a password the URI or the server's message carried.
    reason = mask_secrets(" ".join(str(exc).split())[:300]) or type(exc).__name__
    return TrackingUnavailable(f"MLflow tracking store {public_uri(uri)} unusable: {reason}")


def probe(uri: str) -> str:
    """Return the id of the ``clinical-mlops`` experiment in the store at ``uri``, made if new.

    Called before a training run writes anything. An ``http(s)`` server is asked once,
    without MLflow's minutes of retries, so an unreachable one fails in seconds.
    """
    mlflow = _mlflow()
    try:
        if urlsplit(uri).scheme in ("http", "https"):
            from mlflow.utils.credentials import get_default_host_creds
            from mlflow.utils.rest_utils import http_request

            response = http_request(
                get_default_host_creds(uri),
                "/api/2.0/mlflow/experiments/get-by-name",
                "GET",
                max_retries=0,
                timeout=PROBE_TIMEOUT_S,
                params={"experiment_name": EXPERIMENT},
            )
            if response.status_code not in (200, 404):
                raise RuntimeError(f"HTTP {response.status_code} from the tracking server")
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(EXPERIMENT)
        return str(found.experiment_id if found else client.create_experiment(EXPERIMENT))
    except TrackingUnavailable:
        raise
    except Exception as exc:  # MLflow raises many types for an unusable store
        raise _unusable(uri, exc) from None


@dataclass(frozen=True)
class TrainingRunRecord:
    """What one training run sends to MLflow; built from aggregates only, never patient rows."""

    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    candidates: list[dict[str, Any]]
    files: list[Path]
    scorer: Any
    columns: list[str]


def _param(value: Any) -> str:
    return str(value)[:500]


def _key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . space / only.
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def start_training_run(uri: str, experiment_id: str, *, run_name: str) -> str:
    """Return the id of a new, running MLflow run in ``experiment_id``."""
    mlflow = _mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        return str(client.create_run(experiment_id, run_name=run_name).info.run_id)
    except Exception as exc:
        raise _unusable(uri, exc) from None


def log_training_run(uri: str, experiment_id: str, run_id: str, record: TrainingRunRecord) -> None:
    """Log ``record`` to the open run ``run_id`` and end it FINISHED (FAILED, then raise, if not).

    Child runs (one per cross-validated candidate) carry the tag ``mlflow.parentRunId``
    so the MLflow UI nests them under the training run. MLflow's own "View run" lines
    never reach standard output (``--json`` output stays one document).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        _log_training_run(uri, experiment_id, run_id, record)


def _log_training_run(uri: str, experiment_id: str, run_id: str, record: TrainingRunRecord) -> None:
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        ts = _now_ms()
        client.log_batch(
            run_id,
            metrics=[Metric(_key(k), float(v), ts, 0) for k, v in sorted(record.metrics.items())],
            params=[Param(_key(k), _param(v)) for k, v in sorted(record.params.items())],
            tags=[RunTag(k, v) for k, v in sorted(record.tags.items())],
        )
        for child in record.candidates:
            _log_candidate(client, experiment_id, run_id, child)
        for f in record.files:
            client.log_artifact(run_id, str(f))
        _log_scorer(mlflow, uri, run_id, record)
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        # The store is already failing: report the first error, not this one.
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        if isinstance(exc, TrackingUnavailable):
            raise
        raise _unusable(uri, exc) from None


def _log_candidate(client: Any, experiment_id: str, parent: str, child: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(
        experiment_id,
        run_name=child["name"],
        tags={"mlflow.parentRunId": parent, f"{TAG}.selected": str(child["selected"]).lower()},
    )
    ts = _now_ms()
    metrics = [Metric("cv_auroc", float(v), ts, i + 1) for i, v in enumerate(child["folds"])]
    metrics += [
        Metric(f"fold_{i + 1}_auroc", float(v), ts, 0) for i, v in enumerate(child["folds"])
    ]
    metrics.append(Metric("mean_cv_auroc", float(child["mean_auroc"]), ts, 0))
    if child.get("ci"):
        metrics += [
            Metric("mean_cv_auroc_ci_low", float(child["ci"][0]), ts, 0),
            Metric("mean_cv_auroc_ci_high", float(child["ci"][1]), ts, 0),
        ]
    params = [Param("model_family", child["family"])]
    params += [Param(_key(k), _param(v)) for k, v in sorted(child["params"].items())]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=params,
        tags=[RunTag(f"{TAG}.model_family", child["family"])],
    )
    client.set_terminated(run.info.run_id, "FINISHED")


def _log_scorer(mlflow: Any, uri: str, run_id: str, record: TrainingRunRecord) -> None:
    """Log the fitted scorer in its MLflow flavour, linked to ``run_id`` as its output model."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # The feature contract: the model-matrix columns, in order, as doubles (NaN = missing).
    signature = ModelSignature(inputs=Schema([ColSpec("double", name) for name in record.columns]))
    tags = {k: v for k, v in record.tags.items() if k.startswith(f"{TAG}.")}
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        if getattr(record.scorer, "booster", None) is not None:
            import xgboost

            mlflow.xgboost.log_model(
                record.scorer.booster,
                name="model",
                signature=signature,
                model_format="json",
                pip_requirements=[f"xgboost=={xgboost.__version__}"],
                tags=tags,
            )
        else:
            import sklearn

            mlflow.sklearn.log_model(
                _sklearn_pipeline(record.scorer),
                name="model",
                signature=signature,
                serialization_format="cloudpickle",
                pyfunc_predict_fn="predict_proba",
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                tags=tags,
            )


def _sklearn_pipeline(scorer: Any) -> Any:
    """Return the logistic-regression scorer as a fitted scikit-learn pipeline (same margins)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.asarray(scorer.mean, dtype=np.float64)
    scaler.scale_ = np.asarray(scorer.scale, dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = len(scorer.columns)
    scaler.feature_names_in_ = np.asarray(scorer.columns, dtype=object)
    scaler.n_samples_seen_ = 0
    lr = LogisticRegression()
    lr.coef_ = np.asarray(scorer.coef, dtype=np.float64).reshape(1, -1)
    lr.intercept_ = np.asarray([scorer.intercept], dtype=np.float64)
    lr.classes_ = np.asarray([0, 1])
    lr.n_features_in_ = len(scorer.columns)
    lr.n_iter_ = np.asarray([0])
    return Pipeline([("standardise", scaler), ("logistic_regression", lr)])


def tag_release(uri: str, run_id: str, *, tags: dict[str, str], manifest: Path) -> None:
    """Tag the training run ``run_id`` with a release built from it and log the bundle manifest."""
    mlflow = _mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        with contextlib.redirect_stdout(io.StringIO()):
            for k, v in sorted(tags.items()):
                client.set_tag(run_id, k, v)
            client.log_artifact(run_id, str(manifest), artifact_path="release")
    except Exception as exc:
        raise _unusable(uri, exc) from None


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
