"""Shared pieces of the command line: consoles, workspace option, JSON output, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from clinical_mlops.errors import ClinicalMlopsError
from clinical_mlops.workspace import Workspace

__all__ = [
    "JsonOption",
    "WorkspaceOption",
    "current_actor",
    "err_console",
    "out_console",
    "print_json",
    "run_guarded",
    "workspace_from",
]

out_console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $CLINICAL_MLOPS_HOME or ./.clinical-mlops).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on standard output.")
]


def current_actor() -> str:
    """Who is acting, for the audit ledger: ``$CLINICAL_MLOPS_ACTOR`` or the login name."""
    import getpass
    import os

    return os.environ.get("CLINICAL_MLOPS_ACTOR") or f"{getpass.getuser()}@cli"


def workspace_from(path: Path | None) -> Workspace:
    return Workspace.open(path)


def print_json(obj: Any) -> None:
    """Write ``obj`` as one JSON document on standard output."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def run_guarded(app: typer.Typer) -> int:
    """Run the typer app; library errors become a message on stderr and exit code 2.

    Usage errors keep click's own handling (message plus exit code 2); any other
    exception is a bug and keeps its traceback.
    """
    try:
        app()
    except ClinicalMlopsError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    return 0
