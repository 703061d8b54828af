"""The monitor acts on the release the registry says is served, never the newest model file."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.workspace import Workspace


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run the command line as a user would (errors become exit code 2 and a message)."""

    def run(args: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, " ".join(out.err.split())

    return run


def _later_model(ws: Workspace, version: str) -> str:
    """Copy model ``version`` under a new name whose files are newer than every other model's."""
    task, digest = version.rsplit("-", 1)
    later = f"{task}-{''.join('e' if c == 'f' else 'f' for c in digest)}"
    shutil.copytree(ws.models_dir / version, ws.models_dir / later)
    future = time.time() + 3600
    for path in [ws.models_dir / later, *(ws.models_dir / later).rglob("*")]:
        os.utime(path, (future, future))
    return later


def test_simulate_drift_runs_on_the_served_release_not_a_newer_trained_model(
    cli, governed: dict[str, Any], trained: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(governed["ws"].root, root)
    served = trained[1]  # the model of the governed, approved release
    later = _later_model(Workspace.open(root), served)
    code, out, err = cli(
        ["simulate", "drift", "-w", str(root), "--shifted-stays", "300", "--no-governed", "--json"]
    )
    assert code == 0, err
    assert json.loads(out)["model_version"] == served != later


def test_simulate_drift_with_no_served_release_refuses_rather_than_take_the_newest_model(
    cli, trained: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", root / "artifacts")
    _later_model(Workspace.open(root), trained[1])
    code, out, err = cli(
        ["simulate", "drift", "-t", "icu_mortality_48h", "-w", str(root), "--json"]
    )
    assert code == 2 and out == ""
    assert "icu_mortality_48h has no served release" in err and "--model" in err


def test_monitor_report_with_no_served_release_names_what_to_do(
    cli, trained: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", root / "artifacts")
    out = tmp_path / "report.html"
    code, _, err = cli(["monitor", "report", "-w", str(root), "-o", str(out)])
    assert code == 2 and not out.exists()
    assert "no served release" in err and "--release" in err
