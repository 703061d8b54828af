"""A release's model card states its status as of rendering, never a status frozen at signing:
the signed card points to the registry; `registry card` renders status and approvals, dated."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from clinical_mlops.application.walkthrough import DEMO_PEOPLE, govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.registry.registry import Registry

STATUS_AS_OF = re.compile(r"Status as of (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")


def test_approved_release_card_shows_approved_and_the_render_date(fresh_workspace, trained):
    ws = fresh_workspace("card")
    shown = govern_demo_release(ws, model_version=trained[1])
    version = shown["version"]
    assert shown["status"] == "approved"
    approvers = sorted(a["person"] for a in shown["approvals"])
    assert approvers == sorted(p for p in DEMO_PEOPLE if p != "demo.alex.kim")

    # the signed card in the bundle claims no status that could go stale
    with Registry.open(ws) as reg:
        folder = reg.bundle(version).path
    for name in ("model_card.md", "model_card.html", "model_card.json"):
        signed = (folder / name).read_text(encoding="utf-8")
        assert "awaiting" not in signed.lower(), name
        assert "clinical-mlops registry card" in signed, name
    assert "stage" not in json.loads((folder / "model_card.json").read_text())["release_info"]

    runner = CliRunner()
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    for fmt in ("md", "html"):
        res = runner.invoke(app, ["registry", "card", version, "--format", fmt, "-w", str(ws.root)])
        assert res.exit_code == 0, res.output
        text = res.stdout
        found = STATUS_AS_OF.search(text)
        assert found, text[:600]
        rendered = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        assert before <= rendered <= datetime.now(UTC)
        assert "approved" in text and "awaiting" not in text.lower()
        for person in approvers:
            assert f"approve by {person} as " in text, (fmt, person)
        assert text.index("Status as of") < text.index("Key metrics") < text.index("Appendix")
    assert res.stdout.lstrip().startswith("<!DOCTYPE html>")


def test_card_of_the_application_is_dated_by_the_governance_clock(fresh_workspace, trained, clock):
    from clinical_mlops.application.releases import model_card
    from clinical_mlops.governance.board import Governance

    ws = fresh_workspace("card-clock")
    version = govern_demo_release(ws, model_version=trained[1], clock=clock)["version"]
    clock.advance(timedelta(days=40, hours=3, minutes=7))
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        md = model_card(gov, version, fmt="md")
    assert "## Status as of 2026-04-11 12:07 UTC" in md
    assert "- **Status**: approved" in md
    assert "- **Release**: icu_mortality_48h@1" in md


def test_card_refuses_an_unknown_format_naming_the_option(fresh_workspace, trained):
    ws = fresh_workspace("card-format")
    version = govern_demo_release(ws, model_version=trained[1])["version"]
    res = CliRunner().invoke(
        app, ["registry", "card", version, "--format", "pdf", "-w", str(ws.root)]
    )
    assert res.exit_code != 0
    assert "format 'pdf': expected one of md, html" in str(res.exception)
