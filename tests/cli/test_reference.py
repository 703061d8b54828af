"""Every command has help text and is in docs/CLI.md exactly as generated."""

from __future__ import annotations

from pathlib import Path

from clinical_mlops.cli.reference import cli_reference, commands

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"


def test_every_command_has_help():
    missing = [name for name, cmd in commands() if not (cmd.help or "").strip()]
    assert missing == []


def test_every_option_has_help():
    missing = [
        f"{name} {p.opts}"
        for name, cmd in commands()
        for p in cmd.params
        if p.name != "help"
        and getattr(p, "opts", None)
        and p.param_type_name == "option"
        and not p.help
    ]
    assert missing == []


def test_cli_reference_is_up_to_date():
    assert DOCS.read_text(encoding="utf-8") == cli_reference(), (
        "docs/CLI.md is stale: run `python -m clinical_mlops.cli.reference > docs/CLI.md`"
    )
