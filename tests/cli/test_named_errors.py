"""Settings and options the library refuses end in exit 2 and one line naming the setting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    monkeypatch.setenv("COLUMNS", "80")
    for key in (
        "CLINICAL_MLOPS_HOME",
        "CLINICAL_MLOPS_META_URL",
        "CLINICAL_MLOPS_LEDGER_URL",
        "CLINICAL_MLOPS_IDENTITY_URL",
        "CLINICAL_MLOPS_KEY_PROVIDER",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    return run


@pytest.mark.parametrize(
    ("value", "expected"),
    [("soon", "expected a whole number of milliseconds"), ("-5", "expected 0 or more")],
    ids=["not-a-number", "negative"],
)
def test_a_bad_busy_timeout_setting_is_named(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: str
) -> None:
    monkeypatch.setenv("CLINICAL_MLOPS_BUSY_TIMEOUT_MS", value)
    code, err = cli("registry", "list", "-w", str(tmp_path / "ws"))
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "CLINICAL_MLOPS_BUSY_TIMEOUT_MS" in lines[0], lines[0]
    assert expected in lines[0], lines[0]
