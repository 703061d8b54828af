"""The console and the CLI trust the same keys when they check an uploaded audit bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from console_world import PASSWORD, console_client, form_token, sign_in

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.workspace import Workspace


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def _ledger_with_entries(monkeypatch, capsys, root: Path, bundle: Path) -> None:
    """Write three consent entries to the ledger of ``root`` and export them to ``bundle``."""
    for i in range(3):
        code, _, err = _cli(
            monkeypatch, capsys, "privacy", "consent", f"MRN-{i}", "--purpose", "p", "-w", str(root)
        )
        assert code == 0, err
    code, _, err = _cli(monkeypatch, capsys, "audit", "export", "-o", str(bundle), "-w", str(root))
    assert code == 0, err


def _console_verdict(root: Path, bundle: Path) -> str:
    """Return OK or FAILED: the console of ``root`` checking the uploaded ``bundle``."""
    UserDirectory.open(Workspace.open(root)).add("ada", roles=["auditor"], password=PASSWORD)
    with console_client(Workspace.open(root)) as client:
        assert sign_in(client, "ada").status_code == 303
        page = client.get("/console/audit")
        shown = client.post(
            "/console/audit/verify-bundle",
            data={"csrf_token": form_token(page.text, "/console/audit/verify-bundle")},
            files={"bundle": ("b.json", bundle.read_bytes(), "application/json")},
        )
    assert shown.status_code == 200
    return "OK" if "b.json: OK" in shown.text else "FAILED"


def _cli_verdict(monkeypatch, capsys, root: Path, bundle: Path) -> tuple[str, list[str]]:
    code, out, _ = _cli(
        monkeypatch, capsys, "audit", "verify", "--bundle", str(bundle), "-w", str(root), "--json"
    )
    report = json.loads(out)
    assert code == (0 if report["ok"] else 1)
    return ("OK" if report["ok"] else "FAILED"), [p["message"] for p in report["problems"]]


def test_a_bundle_signed_by_another_ledger_fails_in_the_console_and_the_cli_alike(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    for key in ("CLINICAL_MLOPS_LEDGER_URL", "CLINICAL_MLOPS_IDENTITY_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("CLINICAL_MLOPS_KEY_PROVIDER", raising=False)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    own_bundle, foreign_bundle = tmp_path / "own.json", tmp_path / "foreign.json"
    _ledger_with_entries(monkeypatch, capsys, ours, own_bundle)
    # A self-consistent bundle whose entries and checkpoint are signed with keys of another
    # ledger: what a forger re-signing an altered export would hand over.
    _ledger_with_entries(monkeypatch, capsys, theirs, foreign_bundle)

    assert _console_verdict(ours, own_bundle) == "OK"
    assert _cli_verdict(monkeypatch, capsys, ours, own_bundle)[0] == "OK"

    assert _console_verdict(ours, foreign_bundle) == "FAILED"
    verdict, problems = _cli_verdict(monkeypatch, capsys, ours, foreign_bundle)
    assert verdict == "FAILED"
    (kid,) = json.loads(foreign_bundle.read_text(encoding="utf-8"))["public_keys"]
    assert any(kid in p for p in problems)


def test_with_no_trusted_key_a_bundle_fails_and_says_how_to_pin_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    monkeypatch.delenv("CLINICAL_MLOPS_KEY_PROVIDER", raising=False)
    bundle = tmp_path / "bundle.json"
    _ledger_with_entries(monkeypatch, capsys, tmp_path / "ws", bundle)
    empty = tmp_path / "no-workspace"
    verdict, problems = _cli_verdict(monkeypatch, capsys, empty, bundle)
    assert verdict == "FAILED" and any("no public key is trusted" in p for p in problems)
    assert not empty.exists()  # checking a bundle writes nothing
    ((kid, hexkey),) = json.loads(bundle.read_text(encoding="utf-8"))["public_keys"].items()
    code, out, _ = _cli(
        monkeypatch,
        capsys,
        "audit",
        "verify",
        "--bundle",
        str(bundle),
        "--public-key",
        f"{kid}={hexkey}",
        "-w",
        str(empty),
        "--json",
    )
    assert code == 0 and json.loads(out)["ok"] is True
