"""The command line: exact JSON shape, human output, and readable failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from raw_fixture import stay, write_source


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clinical_mlops", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_data_build_json(tmp_path):
    ws = str(tmp_path / "ws")
    first = run(
        "data",
        "build",
        "--task",
        "icu_mortality_48h",
        "--seed",
        "5",
        "--scale",
        "0.02",
        "--json",
        "-w",
        ws,
    )
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    for key in (
        "snapshot_id",
        "cohort_flow",
        "n_stays",
        "n_train",
        "n_test",
        "prevalence",
        "missingness",
    ):
        assert key in out
    assert out["cohort_flow"][0] == {
        "step": "ICU stays in source",
        "remaining": out["cohort_flow"][0]["remaining"],
        "excluded": 0,
    }
    assert all(set(step) == {"step", "remaining", "excluded"} for step in out["cohort_flow"])
    assert out["n_stays"] == out["n_train"] + out["n_test"]
    again = run("data", "build", "--seed", "5", "--scale", "0.02", "--json", "-w", ws)
    assert json.loads(again.stdout)["snapshot_id"] == out["snapshot_id"]
    shown = run("data", "show", out["snapshot_id"][:12], "-w", ws)
    assert shown.returncode == 0
    assert "Cohort flow" in shown.stdout and "published" in shown.stdout


def test_unknown_snapshot_exits_2_with_a_message(tmp_path):
    r = run("data", "show", "0123456789abcdef", "-w", str(tmp_path))
    assert r.returncode == 2
    assert "snapshot '0123456789abcdef' does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_raw_source_exits_2_naming_table_and_column(tmp_path):
    raw = write_source(tmp_path / "raw", [stay(1), stay(1)])
    r = run(
        "data",
        "build",
        "--task",
        "icu_mortality_48h",
        "--source",
        "raw",
        "--path",
        str(raw),
        "-w",
        str(tmp_path / "ws"),
        "--json",
    )
    assert r.returncode == 2
    assert "icustays.stay_id" in r.stderr
    assert r.stdout == ""
    snaps = tmp_path / "ws" / "artifacts" / "snapshots"
    assert not snaps.exists() or not any(snaps.iterdir())


def test_invalid_spec_file_exits_2_naming_the_field(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: Bad Name\n", encoding="utf-8")
    r = run("data", "build", "--task", str(spec), "-w", str(tmp_path / "ws"))
    assert r.returncode == 2
    assert "name:" in r.stderr and "version: Field required" in r.stderr


def test_every_command_has_help():
    from typer.testing import CliRunner

    from clinical_mlops.cli import app

    runner = CliRunner()
    for args in (
        ["data", "build"],
        ["data", "generate"],
        ["data", "show"],
        ["data", "list"],
        ["demo"],
    ):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0, args
        assert "Usage" in r.output
