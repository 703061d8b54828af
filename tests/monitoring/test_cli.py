"""The monitor and simulate commands: one library call each, JSON on standard output."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.ledger import Ledger
from identities import demo_proof

CLIN, ENG = "demo.dr.lena.ortiz", "demo.priya.nair"


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


def _json(cli, args: list[str]) -> Any:
    code, out, err = cli(args)
    assert code == 0, err
    return json.loads(out)


def test_simulate_drift_json_has_the_published_keys(
    cli, trained: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", root / "artifacts")
    report = tmp_path / "scenario.html"
    out = _json(
        cli,
        [
            "simulate",
            "drift",
            "-w",
            str(root),
            "--model",
            trained[1],
            "--no-governed",
            "--json",
            "--report",
            str(report),
        ],
    )
    for key in (
        "detected",
        "detection_delay_hours",
        "detection_delay_stays",
        "auroc_before",
        "auroc_after",
        "escalation",
        "false_alarms_30d",
    ):
        assert key in out
    assert out["detected"] is True and out["false_alarms_30d"] <= 1
    assert all(v is None or v > 0 for v in out["detection_delay_hours"].values())
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4 and "Simulated drift scenario" in html


def test_simulate_drift_refuses_a_short_false_alarm_stream(
    cli, trained: tuple[Path, str], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", root / "artifacts")
    code, _, err = cli(
        ["simulate", "drift", "-w", str(root), "--model", trained[1], "--clean-days", "7"]
    )
    assert code == 2 and "at least 30 days" in err


def test_monitor_run_alerts_and_report(cli, live: dict[str, Any], tmp_path: Path) -> None:
    ws = str(live["ws"].root)
    until = (datetime.now(UTC) + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    summary = _json(cli, ["monitor", "run", "-w", ws, "--until", until, "--json"])
    (rel,) = summary["releases"]
    assert rel["release"] == live["release"] and rel["records"] == 300
    assert rel["alerts_opened"]
    listed = _json(cli, ["monitor", "alerts", "-w", ws, "--status", "open", "--json"])["alerts"]
    assert {a["id"] for a in listed} == set(rel["alerts_opened"])
    psi = next(a for a in listed if a["rule"] == "input_psi")
    assert psi["subgroup"] == "ventilation" and psi["kind"] == "data"
    shown = _json(cli, ["monitor", "alerts", "-w", ws, "--show", psi["id"], "--json"])
    assert shown["series"] and shown["series"][-1]["value"] == psi["detail"]["value"]
    acked = _json(
        cli,
        [
            "monitor", "alerts", "-w", ws, "--acknowledge", psi["id"],
            *demo_proof(live["ws"], CLIN), "--json",
        ],
    )  # fmt: skip
    assert acked["status"] == "acknowledged"
    code, _, err = cli(["monitor", "alerts", "-w", ws, "--resolve", psi["id"]])
    assert code == 2 and "needs a comment" in err
    done = _json(
        cli,
        [
            "monitor",
            "alerts",
            "-w",
            ws,
            "--resolve",
            psi["id"],
            "--comment",
            "audit of ventilation coding",
            "--json",
        ],
    )
    assert done["status"] == "resolved"
    out = tmp_path / "monitoring.html"
    report = _json(
        cli, ["monitor", "report", "-w", ws, "--release", live["release"], "-o", str(out), "--json"]
    )
    assert report["release"] == live["release"] and len(report["alerts"]) == len(listed)
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 4
    code, _, err = cli(["monitor", "run", "-w", ws, "--since", "yesterday"])
    assert code == 2 and "--since: expected an ISO-8601 time" in err


def test_acknowledging_an_alert_needs_the_persons_signature_and_records_its_identity(
    cli, live: dict[str, Any]
) -> None:
    """``--as`` alone, or a key of someone else, acknowledges nothing; the person's own
    registered key does, and the ledger names the key that proved it."""
    ws = str(live["ws"].root)
    until = (datetime.now(UTC) + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (rel,) = _json(cli, ["monitor", "run", "-w", ws, "--until", until, "--json"])["releases"]
    alert = rel["alerts_opened"][0]
    with Ledger.open(live["ws"]) as led:
        before = led.size()
    code, _, err = cli(["monitor", "alerts", "-w", ws, "--acknowledge", alert, "--as", CLIN])
    assert code == 2 and f"needs proof that {CLIN!r} makes it" in err, err
    with Ledger.open(live["ws"]) as led:
        assert led.size() == before
    someone_else = demo_proof(live["ws"], ENG)[-1]
    code, _, err = cli(
        ["monitor", "alerts", "-w", ws, "--acknowledge", alert, "--as", CLIN, "--key", someone_else]
    )
    assert code == 2 and f"registered to {ENG!r}, not {CLIN!r}" in err, err
    shown = _json(cli, ["monitor", "alerts", "-w", ws, "--show", alert, "--json"])
    assert shown["status"] == "open"
    acked = _json(
        cli,
        ["monitor", "alerts", "-w", ws, "--acknowledge", alert, *demo_proof(live["ws"], CLIN),
         "--comment", "looking at the coding", "--json"],
    )  # fmt: skip
    assert acked["status"] == "acknowledged"
    with Ledger.open(live["ws"]) as led:
        (entry,) = [
            v
            for v in led.read_from(before, types=("alert",))
            if (v.payload or {}).get("event") == "acknowledged"
        ]
    assert entry.entry.actor == CLIN
    identity = entry.payload["identity"]
    assert identity["person"] == CLIN and identity["method"] == "ssh-signature"
    assert identity["subject"].startswith("SHA256:")
