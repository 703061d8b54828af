"""No command assumes a built-in task: the task is named, or the workspace's one task."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    for key in ("CLINICAL_MLOPS_META_URL", "CLINICAL_MLOPS_LEDGER_URL"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args, "-w", str(tmp_path / "ws")])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, " ".join(capsys.readouterr().err.split())

    return run


def test_data_build_without_a_task_in_a_new_workspace_asks_for_one(cli, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    code, err = cli("data", "build", "--source", "raw", "--path", str(raw))
    assert code == 2
    assert "name the task" in err and "icu_mortality_48h" in err  # offered, not assumed
    assert not (tmp_path / "ws" / "artifacts" / "snapshots").exists() or not any(
        (tmp_path / "ws" / "artifacts" / "snapshots").iterdir()
    )


def test_score_without_a_task_names_no_built_in_task(cli, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text("{}\n", encoding="utf-8")
    code, err = cli("score", str(requests), "--out", str(tmp_path / "out.jsonl"))
    assert code == 2
    assert "no release is registered" in err
    assert "icu_mortality_48h" not in err


def test_serve_without_a_task_names_no_built_in_task(cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40, encoding="utf-8")
    code, err = cli("serve", "--jwt-secret-file", str(secret), "--port", "1")
    assert code == 2
    assert "no release is registered" in err
    assert "icu_mortality_48h" not in err
