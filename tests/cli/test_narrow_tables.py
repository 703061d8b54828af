"""At 80 columns, CLI tables keep every id, hash, interval and subgroup name whole."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from registry_helpers import trained  # noqa: F401


def _num(value: float) -> str:
    return f"{value:.3f}"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    for key in ("CLINICAL_MLOPS_META_URL", "CLINICAL_MLOPS_LEDGER_URL"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        assert code == 0, out.err
        if "--json" not in args:
            assert "…" not in out.out, out.out  # nothing cut short with an ellipsis
            assert max(len(line) for line in out.out.splitlines()) <= 80, out.out
        return out.out

    return run


def _whole(text: str, output: str) -> None:
    assert any(text in line for line in output.splitlines()), f"{text!r} broken in:\n{output}"


def test_every_table_keeps_its_values_whole_at_80_columns(
    cli,
    trained: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", ws / "artifacts")
    model = trained[1]
    w = ["-w", str(ws)]

    shown = cli("report", model, *w)
    data = json.loads((ws / "artifacts" / "models" / model / "report.json").read_text("utf-8"))
    _whole(model, shown)
    low, high = data["test"]["auroc_ci"]
    _whole(f"({_num(low)}–{_num(high)})", shown)
    for name, m in data["subgroups"].items():
        _whole(name, shown)
        if isinstance(m, dict) and m.get("auroc_ci") and isinstance(m.get("auroc"), float):
            _whole(f"({_num(m['auroc_ci'][0])}–{_num(m['auroc_ci'][1])})", shown)
    for metric, v in data["fairness"].items():
        if isinstance(v, dict):
            _whole(metric, shown)

    lineage = json.loads((ws / "artifacts" / "models" / model / "lineage.json").read_text("utf-8"))
    snapshot = lineage["snapshot"]["id"]
    listed = cli("data", "list", *w)
    _whole(snapshot[:12], listed)
    shown = cli("data", "show", snapshot, *w)
    _whole(
        ["at", "most", "50%", "of", "the", "17", "features", "missing", "in", "the", "window"][-1],
        shown,
    )

    cli("registry", "grant", "dr.test", "--role", "compliance", "--role", "engineering", *w)
    bundle = json.loads(cli("registry", "bundle", model, "--json", *w))
    cli("registry", "register", bundle["path"], *w)
    listed = cli("registry", "list", *w)
    _whole("icu_mortality_48h@1", listed)
    _whole(bundle["sha256"][:12], listed)

    keys = cli("keys", "list", *w)
    for key in json.loads(cli("keys", "list", "--json", *w))["keys"]:
        _whole(key["key_id"], keys)
        _whole(key["created"], keys)

    entry = cli("audit", "show", "0", *w)
    _whole(json.loads(cli("audit", "show", "0", "--json", *w))["time"], entry)

    tasks = cli("tasks", "list")
    _whole("icu_mortality_48h", tasks)
