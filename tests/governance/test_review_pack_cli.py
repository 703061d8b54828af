"""`review pack` and `review record` on the command line: the live pack of the period is shown,
a breached checklist item needs a finding, and the recorded review names the pack's hash."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.incidents import open_incident
from clinical_mlops.hashing import sha256_json
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from identities import console, demo_proof

CLIN, COMP, ENG = "demo.dr.lena.ortiz", "demo.sam.okafor", "demo.priya.nair"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    def run(args: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, " ".join(out.err.split())

    return run


@pytest.fixture
def served(fresh_workspace, trained, clock) -> dict[str, Any]:
    ws = fresh_workspace("review-cli")
    version = govern_demo_release(ws, model_version=trained[1], clock=clock)["version"]
    with Registry.open(ws) as reg, Governance(reg) as gov:
        incident = open_incident(
            gov,
            version,
            actor=CLIN,
            summary="one analyser reported lactate in mg/dL",
            severity="high",
            roles={"incident_lead": COMP, "clinical_lead": CLIN, "communications_lead": ENG},
            identity=console(CLIN),
        )
    return {"ws": ws, "version": version, "incident": incident}


def _record(cli, served, incidents: str) -> tuple[int, str, str]:
    return cli(
        [
            "review",
            "record",
            served["version"],
            "--calibration",
            "ok",
            "--fairness",
            "ok",
            "--incidents",
            incidents,
            "--documentation",
            "ok",
            *demo_proof(served["ws"], CLIN),
            "--json",
            "-w",
            str(served["ws"].root),
        ]
    )


def test_review_record_refuses_a_bare_ok_on_an_item_the_live_figures_breach(cli, served):
    code, out, err = _record(cli, served, "ok")
    assert code == 2 and out == ""
    assert "the live figures breach incidents" in err and served["incident"]["id"] in err
    with Ledger.open(served["ws"]) as led:
        types = [led.entry(s).type for s in range(led.size())]
    assert "review" not in types and types[-1] == "governance_refused"


def test_review_pack_shows_the_period_and_the_recorded_review_names_its_hash(cli, served):
    root = str(served["ws"].root)
    code, out, err = cli(["review", "pack", served["version"], "--json", "-w", root])
    assert code == 0, err
    pack = json.loads(out)
    assert pack["since_what"] == "approval" and pack["sites"] == []
    assert [i["id"] for i in pack["incidents"]["opened"]] == [served["incident"]["id"]]
    assert pack["checklist"]["incidents"]["breached"] is True
    code, out, err = cli(["review", "pack", served["version"], "-w", root])
    assert code == 0 and "incidents: BREACHED" in out
    code, _, err = cli(["review", "pack", served["version"], "--as-of", "yesterday", "-w", root])
    assert code == 2 and "--as-of" in err
    code, out, err = _record(cli, served, "analyser fixed; incident being resolved")
    assert code == 0, err
    review = json.loads(out)
    assert review["review_pack_sha256"] == sha256_json(review["pack"])
    with Ledger.open(served["ws"]) as led:
        entry = led.read(led.size() - 1)
    assert entry.entry.type == "review"
    assert entry.payload["review_pack_sha256"] == review["review_pack_sha256"]
    assert entry.payload["breached"] == ["incidents"]
