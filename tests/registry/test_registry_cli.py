"""`registry show --json` and refusals through the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from clinical_mlops.application.walkthrough import DEMO_PEOPLE, govern_demo_release
from clinical_mlops.cli import app
from identities import demo_proof


def test_show_json_has_status_sha_lineage_gates_approvals(fresh_workspace, trained):
    ws = fresh_workspace("cli")
    shown = govern_demo_release(ws, model_version=trained[1])
    assert shown["status"] == "approved"
    runner = CliRunner()
    res = runner.invoke(app, ["registry", "show", shown["version"], "--json", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["status"] == "approved"
    assert len(body["sha256"]) == 64
    assert body["lineage"]["snapshot"]["id"]
    assert {n: g["passed"] for n, g in body["gates"].items()} == {
        "schema_contract": True,
        "metrics": True,
        "evidence": True,
        "approvals": True,
    }
    assert "test_auroc" in body["gates"]["metrics"]["evidence"]
    assert sorted(a["person"] for a in body["approvals"]) == sorted(
        p for p in DEMO_PEOPLE if p != "demo.alex.kim"
    )
    listed = json.loads(
        runner.invoke(app, ["registry", "list", "--json", "-w", str(ws.root)]).stdout
    )
    assert [r["status"] for r in listed["releases"]] == ["approved"]

    refused = runner.invoke(
        app,
        [
            "registry",
            "approve",
            shown["version"],
            "--role",
            "clinical",
            *demo_proof(ws, "demo.dr.lena.ortiz"),
            "--why",
            "sound",
            "--json",
            "-w",
            str(ws.root),
        ],
    )
    assert refused.exit_code != 0
    assert isinstance(refused.exception, Exception)
    assert "status is approved" in str(refused.exception)
