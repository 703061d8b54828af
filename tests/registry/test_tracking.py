"""MLflow tracking against a real `mlflow server` on loopback: run id in lineage."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from clinical_mlops.application.training import train_model
from clinical_mlops.data.raw import read_source
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.registry.tracking import default_tracking_uri
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from registry_helpers import FAST


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                "mlflow server did not start on loopback within 90 s (install the mlflow extra)"
            )
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_training_run_is_logged_to_a_real_mlflow_server(mlflow_server, small_source_dir, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    snap = build_snapshot(ws, load_task("icu_mortality_48h"), read_source(small_source_dir))
    result = train_model(ws, snap, config=FAST, tracking_uri=mlflow_server)
    lineage = json.loads((result.folder / "lineage.json").read_text())
    run_id = lineage["tracking"]["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=mlflow_server).get_run(run_id)
    assert run.data.metrics["auroc"] == pytest.approx(result.report.test.auroc)
    workload = result.report.workload
    assert run.data.metrics["alerts_per_100"] == pytest.approx(workload.alerts_per_100)
    assert run.data.metrics["reviews_per_100"] == pytest.approx(workload.reviews_per_100)
    assert run.data.metrics["deferred_per_100"] == pytest.approx(workload.deferred_per_100)
    assert run.data.params["selected_model"] == result.selected_model
    assert default_tracking_uri(ws).startswith("sqlite:///")
