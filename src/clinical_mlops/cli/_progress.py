"""Progress on standard error: a live bar on a terminal, plain lines in a log or a pipe."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from clinical_mlops.cli._common import err_console

__all__ = ["PlainProgress", "progress_bar"]

# A count-only update is worth a line in a log each time it passes another tenth.
_TENTHS = 10


class PlainProgress(Progress):
    """Progress as one line per step on the console, for output that is not a terminal.

    A live bar redraws in place, which a log file or a pipe cannot show: each new step
    description is printed as its own line instead (with the step count when known), and
    a long count (generating, scoring) every tenth of the way. A step's first line is
    printed when it first moves, so input refused up front prints its error alone.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(console=console, disable=True)
        self._shown: dict[TaskID, tuple[str, int]] = {}

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        # shown at its first update: work refused before it starts prints only its error
        return super().add_task(description, start, total, completed, visible, **fields)

    def update(
        self,
        task_id: TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        refresh: bool = False,
        **fields: Any,
    ) -> None:
        super().update(
            task_id,
            total=total,
            completed=completed,
            advance=advance,
            description=description,
            visible=visible,
            refresh=refresh,
            **fields,
        )
        self._show(task_id)

    def _show(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if not task.visible:
            return
        done, total = int(task.completed), task.total
        tenth = int(done * _TENTHS // total) if total else 0
        if self._shown.get(task_id) == (task.description, tenth):
            return
        self._shown[task_id] = (task.description, tenth)
        count = f"[{done}/{int(total)}] " if total else ""
        self.console.print(
            f"{count}{task.description}", markup=False, highlight=False, soft_wrap=True
        )


def progress_bar() -> Progress:
    """Return the progress display for standard error: a transient bar, or plain lines.

    A terminal gets a live bar that disappears when the work is done; anything else (a
    pipe, a log file, CI) gets :class:`PlainProgress`, so long work is never silent.
    """
    if not err_console.is_terminal:
        return PlainProgress(err_console)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
