"""Consent and erasure use cases: every grant, withdrawal and erasure has its ledger entry.

Whichever front end grants consent (the command line, the demo's walkthrough), the ledger
holds a ``consent_recorded`` entry for it; a withdrawal is refused for a purpose with no
consent in force, and once made it stops predictions for that purpose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from clinical_mlops.application.walkthrough import PILOT_SITE, govern_demo_release, score_test_set
from clinical_mlops.cli import app as cli
from clinical_mlops.errors import ConsentNotGranted
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import require_consent
from clinical_mlops.workspace import Workspace


def _consent_entries(ws: Workspace) -> dict[str, list[dict]]:
    """Return pseudonym -> payloads of its consent_recorded entries."""
    out: dict[str, list[dict]] = {}
    with Ledger.open(ws, create=False) as ledger:
        for view in ledger.read_from(0, types=["consent_recorded"]):
            out.setdefault(str(view.entry.subject), []).append(view.payload or {})
    return out


def test_the_demo_walkthrough_records_each_consent_it_grants_in_the_ledger(
    fresh_workspace: Callable[[str], Workspace], trained: tuple
) -> None:
    ws = fresh_workspace("demo")
    govern_demo_release(ws, model_version=trained[1])
    summary = score_test_set(ws, site=PILOT_SITE, requester="system:demo-ehr")
    assert summary["n"] > 0
    entries = _consent_entries(ws)
    with Ledger.open(ws, create=False) as ledger:
        inferences = list(ledger.read_from(0, types=["inference"]))
        patients = {str(v.entry.subject) for v in inferences}
    assert len(patients) == summary["n"]
    # Every patient scored had consent granted by the walkthrough, each grant in the ledger.
    assert patients <= set(entries)
    assert all(p[0]["purposes"] == ["direct_care"] and p[0]["recorded_by"] == "demo"
               for p in entries.values())  # fmt: skip
    # Running the step again grants nothing twice: consent already covers those patients.
    score_test_set(ws, site=PILOT_SITE, requester="system:demo-ehr")
    assert _consent_entries(ws) == entries


def test_consent_granted_and_withdrawn_from_the_command_line_is_in_the_ledger(
    workspace: Workspace,
) -> None:
    runner = CliRunner()
    at = ["-w", str(workspace.root), "--actor", "dpo", "--json"]
    granted = runner.invoke(
        cli,
        ["privacy", "consent", "MRN-7", "--purpose", "direct_care", "--purpose", "research",
         "--valid-from", "2024-01-01", *at],
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    record = json.loads(granted.stdout)
    withdrawn = runner.invoke(
        cli,
        ["privacy", "withdraw", "MRN-7", "--purpose", "research", "--at", "2024-06-01", *at],
    )
    assert withdrawn.exit_code == 0, withdrawn.output
    out = json.loads(withdrawn.stdout)
    assert out["purposes"] == ["research"] and out["pseudonym"] == record["pseudonym"]
    with Ledger.open(workspace, create=False) as ledger:
        entry = ledger.read(out["seq"])
        assert entry.entry.type == "consent_withdrawn"
        assert entry.entry.subject == record["pseudonym"]
        assert entry.payload == {"purposes": ["research"], "at": "2024-06-01T00:00:00+00:00"}
        assert ledger.read(record["seq"]).entry.type == "consent_recorded"
        vault = ledger.vault
        later = datetime(2024, 7, 1, tzinfo=UTC)
        require_consent(vault, pseudonym=out["pseudonym"], purpose="direct_care", at=later)
        with pytest.raises(ConsentNotGranted):
            require_consent(vault, pseudonym=out["pseudonym"], purpose="research", at=later)
        # Before the withdrawal the consent to research still stands, as recorded.
        require_consent(
            vault,
            pseudonym=out["pseudonym"],
            purpose="research",
            at=datetime(2024, 3, 1, tzinfo=UTC),
        )
        size = ledger.size()
    again = runner.invoke(cli, ["privacy", "withdraw", "MRN-7", "--purpose", "research", *at])
    assert again.exit_code == 2
    said = " ".join(re.sub(r"[│╭╮╰╯─]", " ", again.output).split())  # unwrapped from its box
    assert "covers research; nothing was withdrawn" in said
    with Ledger.open(workspace, create=False) as ledger:
        assert ledger.size() == size  # a refused withdrawal records nothing
