"""MLflow experiment tracking (R-I1), optional: ``pip install 'clinical-mlops[mlflow]'``.

One MLflow run per training run: parameters (seed, configuration, selected model,
hyperparameters), test metrics, and report.json / model_card.md as artifacts. The
run id is recorded in the model's lineage (``lineage["tracking"]``). The default
tracking URI is a SQLite store inside the workspace (``mlflow.db``; MLflow 3
refuses plain ``file://`` stores unless told otherwise); any ``http://`` server URI
works too. Training never needs MLflow unless tracking is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical_mlops.errors import TrackingUnavailable

__all__ = ["default_tracking_uri", "finish_run", "start_run"]

EXPERIMENT = "clinical-mlops"


def default_tracking_uri(workspace: Any) -> str:
    """Return the workspace's local MLflow store URI (``sqlite:///<workspace>/mlflow.db``)."""
    return f"sqlite:///{workspace.path('mlflow')}"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(
            "MLflow tracking was asked for but mlflow is not installed; "
            "install it with: pip install 'clinical-mlops[mlflow]'"
        ) from None
    return mlflow


def start_run(*, tracking_uri: str, run_name: str) -> str:
    """Return the id of a new MLflow run (left open for :func:`finish_run`)."""
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(EXPERIMENT)
        run = mlflow.start_run(run_name=run_name)
    except Exception as exc:  # MLflow raises many types for an unreachable store
        raise TrackingUnavailable(f"MLflow tracking store {tracking_uri} unusable: {exc}") from None
    return str(run.info.run_id)


def finish_run(*, params: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> None:
    """Log ``params``, ``metrics`` and ``files`` to the active run and end it."""
    mlflow = _mlflow()
    try:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for f in files:
            mlflow.log_artifact(str(f))
    finally:
        mlflow.end_run()
