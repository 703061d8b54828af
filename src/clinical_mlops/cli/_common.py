"""Shared pieces of the command line: consoles, workspace option, JSON output, errors."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from clinical_mlops.errors import ClinicalMlopsError, ValueInvalid
from clinical_mlops.workspace import Workspace

__all__ = [
    "CliTable",
    "JsonOption",
    "WorkspaceOption",
    "current_actor",
    "err_console",
    "out_console",
    "print_json",
    "run_guarded",
    "time_option",
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


class CliTable(Table):
    """A table that never cuts a cell's words: it wraps between words, or lists rows as key: value.

    Ids, hashes, confidence intervals and subgroup names stay whole on a narrow
    terminal (80 columns): cells wrap at spaces; when a word still does not fit its
    column, each row is printed as ``column: value`` lines instead.
    """

    def __init__(self, *headers: str, **kwargs: Any):
        super().__init__(*headers, **kwargs)
        self._rendering_as_table = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self._rendering_as_table:
            yield from super().__rich_console__(console, options)
            return
        for column, cells in zip(self.columns, self._columns(), strict=True):
            column.overflow, column.no_wrap = "fold", False
            # the longest word of a column is its narrowest width: wrap between words only
            column.min_width = max((len(w) for c in cells for w in c.split()), default=None)
        self._rendering_as_table = True
        try:
            lines = console.render_lines(self, options, pad=False)
        finally:
            self._rendering_as_table = False
        shown = ["".join(segment.text for segment in line) for line in lines]
        if all(any(word in line for line in shown) for word in self._words()):
            for line in lines:
                yield from line
                yield Segment.line()
            return
        yield from self._as_key_values()

    def _columns(self) -> list[list[str]]:
        """Return each column's header and cells as plain text."""
        return [
            [_plain(column.header), *(_plain(cell) for cell in column.cells)]
            for column in self.columns
        ]

    def _cells(self) -> list[list[str]]:
        return [list(row) for row in zip(*(c[1:] for c in self._columns()), strict=True)]

    def _words(self) -> set[str]:
        return {word for column in self._columns() for text in column for word in text.split()}

    def _as_key_values(self) -> RenderResult:
        if self.title:
            yield Text(_plain(self.title), style="bold")
        headers = [_plain(column.header) for column in self.columns]
        for number, row in enumerate(self._cells()):
            if number:
                yield Text("")
            for key, value in zip(headers, row, strict=True):
                yield Text(f"{key or '-'}: {value}", overflow="fold")


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def current_actor() -> str:
    """Who is acting, for the audit ledger: ``$CLINICAL_MLOPS_ACTOR`` or the login name."""
    import getpass
    import os

    return os.environ.get("CLINICAL_MLOPS_ACTOR") or f"{getpass.getuser()}@cli"


def time_option(value: str | None, option: str, *, zone_required: bool = False) -> datetime | None:
    """Return the time an option gives (None when absent); ``ValueInvalid`` naming the option.

    ISO-8601 with ``Z`` or an offset; a time without a zone is read as UTC, or refused
    when ``zone_required`` (a time that decides what a signed document states).
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueInvalid(
            f"{option}: expected an ISO-8601 time such as 2026-03-02T09:00:00Z, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        if zone_required:
            raise ValueInvalid(f"{option}: {value!r} has no time zone (e.g. 2026-03-02T09:00:00Z)")
        return parsed.replace(tzinfo=UTC)
    return parsed


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
