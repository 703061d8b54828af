"""`train` on the user's machine: the snapshot is reused, progress shows in a pipe, threads obeyed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clinical_mlops.ledger import Ledger
from clinical_mlops.workspace import Workspace

SMALL = ("--task", "icu_mortality_48h", "--seed", "5", "--scale", "0.02")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line with standard output and standard error on pipes."""
    return subprocess.run(
        [sys.executable, "-m", "clinical_mlops", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def built_then_trained(tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("train-cli") / "ws"
    build = run("data", "build", *SMALL, "--json", "-w", str(ws))
    assert build.returncode == 0, build.stderr
    train = run(
        "train", *SMALL, "--search-iterations", "1", "--n-boot", "100", "--json", "-w", str(ws)
    )
    assert train.returncode == 0, train.stderr
    return Workspace.open(ws), build, train


def entry_types(ws: Workspace) -> list[str]:
    with Ledger.open(ws, create=False) as ledger:
        return [view.entry.type for view in ledger.read_from(0)]


def test_train_reuses_the_snapshot_already_built_from_the_same_inputs(built_then_trained):
    ws, build, train = built_then_trained
    snapshot_id = json.loads(build.stdout)["snapshot_id"]
    assert json.loads(train.stdout)["snapshot_id"] == snapshot_id
    assert entry_types(ws).count("snapshot_built") == 1
    assert [p.name for p in ws.snapshots_dir.iterdir() if not p.name.startswith(".")] == [
        snapshot_id
    ]
    assert f"snapshot {snapshot_id[:12]} was already built from these inputs" in train.stderr
    again = run("data", "build", *SMALL, "--json", "-w", str(ws.root))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["snapshot_id"] == snapshot_id
    assert entry_types(ws).count("snapshot_built") == 1


def test_progress_is_written_as_lines_when_standard_error_is_a_pipe(built_then_trained):
    _, build, train = built_then_trained
    built = build.stderr.splitlines()
    assert any(line.endswith("checking raw data contracts") for line in built)
    assert any(line.endswith("writing snapshot") for line in built)
    trained = train.stderr.splitlines()
    assert any("model selection: 5-fold CV inside train" in line for line in trained)
    assert any(line.endswith("scoring the locked test set (once)") for line in trained)
    assert not any("\r" in line or "\x1b[" in line for line in built + trained)
    json.loads(train.stdout)  # standard output holds the JSON alone


def test_threads_reach_xgboost_and_are_recorded_in_lineage(built_then_trained, tmp_path):
    _, _, default = built_then_trained
    train = run(
        "train", *SMALL, "--search-iterations", "1", "--n-boot", "100", "--threads", "1",
        "--json", "-w", str(tmp_path / "ws"),
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    one = json.loads(train.stdout)
    lineage = json.loads((Path(one["folder"]) / "lineage.json").read_text(encoding="utf-8"))
    assert lineage["training"]["config"]["n_jobs"] == 1
    # the thread count changes how fast, never what: the same snapshot, model and figures
    assert one["snapshot_id"] == json.loads(default.stdout)["snapshot_id"]
    assert one["model_sha256"] == json.loads(default.stdout)["model_sha256"]
    assert one["test"] == json.loads(default.stdout)["test"]


def test_threads_must_be_a_positive_number(tmp_path):
    r = run("train", *SMALL, "--threads", "0", "-w", str(tmp_path / "ws"))
    assert r.returncode == 2
    assert "--threads" in r.stderr and "Traceback" not in r.stderr
