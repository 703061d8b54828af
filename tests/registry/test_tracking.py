"""MLflow tracking against a real `mlflow server` on loopback, through the command line.

The server is started once for the module on a free port with one worker; a server
that does not come up (or an environment without mlflow) fails the tests, showing the
server's own error output. What a run logged is read back through the server's REST
API, as a team's tooling would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import clinical_mlops
from clinical_mlops.data.raw import read_source
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.registry.tracking import default_tracking_uri
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SRC = str(Path(clinical_mlops.__file__).resolve().parents[1])
TRAIN = ["train", "--search-iterations", "2", "--n-boot", "100", "--threads", "1", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("mlflow") is None:
        pytest.fail("mlflow is not installed: install the mlflow extra to run the tracking tests")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = (root / "server.log").open("w+b")
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
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # the server's job runner (a dozen queue consumers) serves nothing tracking uses and
        # would take the 2-core machine from the tests
        env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a loaded 2-core machine migrates the store slowly
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-4000:]
            pytest.fail(f"mlflow server did not start on {url} (exit {proc.returncode}):\n{tail}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=60)
    log.close()


@pytest.fixture(scope="module")
def prepared(small_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A workspace holding one snapshot, copied for each training run."""
    ws = Workspace.open(tmp_path_factory.mktemp("tracked-src") / "ws")
    snap = build_snapshot(ws, load_task("icu_mortality_48h"), read_source(small_source_dir))
    return ws.root, snap.id


def _workspace(prepared: tuple[Path, str], tmp_path: Path, name: str) -> Path:
    import shutil

    target = tmp_path / name
    shutil.copytree(prepared[0], target)
    return target


def _cli(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    base |= {"PYTHONPATH": SRC, "CLINICAL_MLOPS_ACTOR": "dr.test", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "clinical_mlops", *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _api(url: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    if body is None:
        r = httpx.get(f"{url}/api/2.0/mlflow/{endpoint}", timeout=30)
    else:
        r = httpx.post(f"{url}/api/2.0/mlflow/{endpoint}", json=body, timeout=30)
    assert r.status_code == 200, f"{endpoint}: {r.status_code} {r.text[:500]}"
    return dict(r.json())


def _experiment(url: str) -> str:
    found = _api(url, "experiments/get-by-name?experiment_name=clinical-mlops")
    return str(found["experiment"]["experiment_id"])


def _kv(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in items}


def _train(
    prepared: tuple[Path, str], ws: Path, extra: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    done = _cli([*TRAIN, "--snapshot", prepared[1], "--workspace", str(ws), *extra], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def _run_of(url: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Return the top-level run the training run's lineage names, found by its model's tag.

    Training is reproducible, so runs of the same snapshot and configuration in one
    server share the model version: the lineage's run id tells them apart.
    """
    model_version = summary["model_version"]
    lineage = json.loads((Path(summary["folder"]) / "lineage.json").read_text())
    run_id = lineage["tracking"]["mlflow_run_id"]
    found = _api(
        url,
        "runs/search",
        {
            "experiment_ids": [_experiment(url)],
            "filter": f"tags.`clinical_mlops.model_version` = '{model_version}'",
        },
    )
    runs = [
        r
        for r in found.get("runs", [])
        if "mlflow.parentRunId" not in _kv(r["data"]["tags"]) and r["info"]["run_id"] == run_id
    ]
    assert len(runs) == 1, found
    return dict(runs[0])


@pytest.mark.slow
def test_cli_train_run_is_visible_through_the_mlflow_rest_api(
    mlflow_server: str, prepared: tuple[Path, str], tmp_path: Path
) -> None:
    ws = _workspace(prepared, tmp_path, "ws")
    summary = _train(prepared, ws, ["--tracking-uri", mlflow_server])
    folder = Path(summary["folder"])
    lineage = json.loads((folder / "lineage.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    run = _run_of(mlflow_server, summary)
    run_id = run["info"]["run_id"]
    assert lineage["tracking"] == {"mlflow_run_id": run_id, "tracking_uri": mlflow_server}
    got = _api(mlflow_server, f"runs/get?run_id={run_id}")["run"]
    assert got["info"]["status"] == "FINISHED"

    params = _kv(got["data"]["params"])
    assert params["seed"] == "7"
    assert params["task"] == "icu_mortality_48h"
    assert params["snapshot_id"] == prepared[1]
    assert params["selected_model"] == summary["selected_model"]
    for name, value in summary["hyperparameters"].items():
        assert params[name] == str(value)
    assert int(params["snapshot_n_test"]) == report["test"]["n"]

    metrics = _kv(got["data"]["metrics"])
    test = summary["test"]
    for name in ("auroc", "brier", "ece", "calibration_slope", "sensitivity"):
        assert metrics[name] == pytest.approx(test[name])
    assert test["prevalence"] < metrics["auprc"] <= 1.0
    assert metrics["auroc_ci_low"] == pytest.approx(test["auroc_ci"][0])
    assert metrics["auroc_ci_high"] == pytest.approx(test["auroc_ci"][1])
    assert metrics["cv_mean_auroc"] == pytest.approx(summary["cv_auroc"][summary["selected_model"]])

    tags = _kv(got["data"]["tags"])
    assert tags["clinical_mlops.model_sha256"] == summary["model_sha256"]
    assert tags["clinical_mlops.snapshot_id"] == prepared[1]

    children = _api(
        mlflow_server,
        "runs/search",
        {
            "experiment_ids": [run["info"]["experiment_id"]],
            "filter": f"tags.`mlflow.parentRunId` = '{run_id}'",
        },
    )["runs"]
    lineage_search = lineage["selection"]["search"]
    assert len(children) == len(summary["cv"]) - 1 + len(lineage_search)
    selected = [c for c in children if _kv(c["data"]["tags"])["clinical_mlops.selected"] == "true"]
    assert len(selected) == 1
    assert _kv(selected[0]["data"]["params"])["model_family"] == summary["selected_model"]
    for child in children:
        family = _kv(child["data"]["params"])["model_family"]
        child_metrics = _kv(child["data"]["metrics"])
        if family != "xgboost":
            folds = summary["cv"][family]["folds"]
            assert [child_metrics[f"fold_{i + 1}_auroc"] for i in range(len(folds))] == (
                pytest.approx(folds)
            )
            assert child_metrics["mean_cv_auroc"] == pytest.approx(
                summary["cv"][family]["mean_auroc"]
            )

    listed = _api(mlflow_server, f"artifacts/list?run_id={run_id}")
    names = {f["path"] for f in listed.get("files", [])}
    assert {"report.json", "report.html", "model_card.md", "lineage.json"} <= names

    models = _api(
        mlflow_server,
        "logged-models/search",
        {"experiment_ids": [run["info"]["experiment_id"]]},
    )["models"]
    mine = [m for m in models if m["info"].get("source_run_id") == run_id]
    assert len(mine) == 1, models
    model_tags = _kv(mine[0]["info"].get("tags", []))
    assert model_tags["clinical_mlops.model_sha256"] == summary["model_sha256"]
    assert mine[0]["info"]["status"] == "LOGGED_MODEL_READY"


@pytest.mark.slow
def test_env_var_tracks_and_tracking_never_changes_the_model(
    mlflow_server: str, prepared: tuple[Path, str], tmp_path: Path
) -> None:
    tracked = _train(
        prepared,
        _workspace(prepared, tmp_path, "env"),
        [],
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    run = _run_of(mlflow_server, tracked)
    assert _kv(run["data"]["tags"])["clinical_mlops.model_sha256"] == tracked["model_sha256"]

    plain_ws = _workspace(prepared, tmp_path, "plain")
    plain = _train(prepared, plain_ws, [])
    assert plain["model_sha256"] == tracked["model_sha256"]
    assert plain["model_version"] == tracked["model_version"]
    lineage = json.loads((Path(plain["folder"]) / "lineage.json").read_text())
    assert "tracking" not in lineage
    assert not (plain_ws / "mlflow.db").exists()


@pytest.mark.slow
def test_unreachable_tracking_uri_is_one_line_and_writes_nothing(
    prepared: tuple[Path, str], tmp_path: Path
) -> None:
    ws = _workspace(prepared, tmp_path, "down")
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    done = _cli([*TRAIN, "--snapshot", prepared[1], "--workspace", str(ws), "--tracking-uri", uri])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: MLflow tracking store http://alice:***@127.0.0.1:")
    assert "s3cret" not in done.stderr + done.stdout
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before


def test_tracking_uri_rule(tmp_path: Path) -> None:
    from clinical_mlops.registry.tracking import resolve_tracking_uri

    ws = Workspace.open(tmp_path / "ws")
    env = {"MLFLOW_TRACKING_URI": "http://team:5000"}
    assert resolve_tracking_uri(ws, uri="http://given:1", environ=env) == "http://given:1"
    assert resolve_tracking_uri(ws, environ=env) == "http://team:5000"
    assert resolve_tracking_uri(ws, track=True, environ=env) == "http://team:5000"
    assert resolve_tracking_uri(ws, environ={}) is None
    assert resolve_tracking_uri(ws, track=True, environ={}) == default_tracking_uri(ws)
    assert resolve_tracking_uri(ws, track=False, environ=env) is None
    assert default_tracking_uri(ws) == f"sqlite:///{ws.root / 'mlflow.db'}"


def test_demo_tracks_to_the_workspace_store_by_default() -> None:
    import typer.main

    from clinical_mlops.cli import app

    demo = typer.main.get_command(app).get_command(None, "demo")  # type: ignore[attr-defined]
    options = {o: p for p in demo.params for o in getattr(p, "opts", ())}
    assert options["--track"].default is True
    assert "--tracking-uri" in options
