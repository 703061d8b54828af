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
    """Run the typer app; return its exit code. A user error is one line on stderr and code 2.

    Usage errors (unknown option, missing or malformed argument) and library errors
    (:class:`ClinicalMlopsError`) print ``error: ...`` naming what was wrong. An
    operating-system error on a file or folder the user named (missing, not a folder,
    no permission) is reported the same way. Any other exception is a bug and keeps
    its traceback.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        result = app(prog_name="clinical-mlops", standalone_mode=False)
    except NoArgsIsHelpError:
        return 2  # the group's help is already printed
    except UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return _error(f"{exc.format_message()}{where}")
    except ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except typer.Abort:
        _error("aborted")
        return 1
    except ClinicalMlopsError as exc:
        return _error(str(exc))
    except OSError as exc:
        if exc.filename is None:
            raise
        return _error(os_error_message(exc))
    return result if isinstance(result, int) else 0


def os_error_message(exc: OSError) -> str:
    """Return one line naming the file and what is wrong with it (no traceback, no errno)."""
    target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{target}: {exc.strerror or exc}"


def _error(message: str) -> int:
    # One line whatever the terminal width: soft_wrap keeps rich from breaking it.
    err_console.print(
        f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True
    )
    return 2
