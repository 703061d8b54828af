"""`registry bundle --escalation FILE`: a release under another escalation policy, bad ones refused.

The file holds an escalation section (as in a task spec). A valid one gives a new,
signed bundle whose ``deployment.json`` carries the policy resolved at the release's
threshold; an unknown condition, a band outside [0, 1] or a budget of 0 is refused
with the field named, one line, exit 2, and no bundle written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.workspace import Workspace


def _bundle(ws: Workspace, model: str, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        app, ["registry", "bundle", model, "--json", "--as", "eng.a", "-w", str(ws.root), *extra]
    )
    return res.exit_code, res.output


def _guarded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run the command as the installed entry point does; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
    code = run_guarded(app)
    return code, capsys.readouterr().err


def test_a_policy_file_gives_a_release_under_that_policy(
    fresh_workspace: Callable[[str], Workspace], trained: tuple, tmp_path: Path
) -> None:
    ws = fresh_workspace("esc-ok")
    code, out = _bundle(ws, trained[1])
    assert code == 0, out
    default = json.loads(out)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "escalation:\n"
        "  review_on: [out_of_scope, ambiguous_set, near_threshold]\n"
        "  near_threshold: {band: [0.2, 0.5]}\n"
        "  max_reviews_per_100: 12\n"
        "  beyond_budget: queue\n"
    )
    code, out = _bundle(ws, trained[1], "--escalation", str(policy))
    assert code == 0, out
    made = json.loads(out)
    assert made["sha256"] != default["sha256"]  # another policy, another release
    esc = made["escalation"]
    assert esc["review_on"] == ["out_of_scope", "ambiguous_set", "near_threshold"]
    assert esc["band"] == [0.2, 0.5] and esc["band_sizing"] == "declared"
    assert esc["max_reviews_per_100"] == 12 and esc["cutoff"] is None
    signed = json.loads((Path(made["path"]) / "deployment.json").read_text())
    assert signed["escalation"] == esc
    assert default["escalation"]["review_on"] == ["out_of_scope", "empty_set", "near_threshold"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("escalation:\n  review_on: [out_of_scope, bored]\n", "escalation.review_on.1"),
        ("escalation:\n  near_threshold: {band: [0.3, 1.4]}\n", "escalation.near_threshold.band"),
        ("escalation:\n  max_reviews_per_100: 0\n", "escalation.max_reviews_per_100"),
        ("escalation:\n  beyond_budget: shrug\n", "escalation.beyond_budget"),
        ("review_on: [out_of_scope]\nsurprise: 1\n", "escalation.surprise"),
        # a declared band must hold the release's threshold (0.40 for this task)
        ("escalation:\n  near_threshold: {band: [0.1, 0.2]}\n", "escalation.near_threshold.band"),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_field(
    fresh_workspace: Callable[[str], Workspace],
    trained: tuple,
    tmp_path: Path,
    text: str,
    field: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = fresh_workspace("esc-bad")
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    bundles = ws.root / "artifacts" / "bundles"
    before = sorted(p.name for p in bundles.iterdir()) if bundles.exists() else []
    code, err = _guarded(
        monkeypatch,
        capsys,
        *("registry", "bundle", trained[1], "--escalation", str(policy), "-w", str(ws.root)),
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert field in err
    after = sorted(p.name for p in bundles.iterdir()) if bundles.exists() else []
    assert after == before


def test_tasks_check_prints_the_declared_policy() -> None:
    res = CliRunner().invoke(app, ["tasks", "check", "icu_mortality_48h"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "escalation: review on out_of_scope, empty_set, near_threshold" in out
    assert "budget 5 per 100 stays" in out
    body = json.loads(
        CliRunner().invoke(app, ["tasks", "check", "icu_mortality_48h", "--json"]).output
    )
    assert body["escalation"]["max_reviews_per_100"] == 5
