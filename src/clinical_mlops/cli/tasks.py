"""``clinical-mlops tasks ...``: list the built-in tasks, draft a spec from a table, check a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clinical_mlops.cli._common import CliTable, JsonOption, err_console, out_console, print_json
from clinical_mlops.tasks import builtin_tasks, load_task

__all__ = ["tasks_app"]

tasks_app = typer.Typer(
    help="Task specs: the built-in tasks, a draft from your own table, checking a spec.",
    no_args_is_help=True,
)


@tasks_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List the built-in task specs."""
    specs = [load_task(n) for n in builtin_tasks()]
    if as_json:
        print_json([{"name": s.name, "title": s.title, "features": len(s.features)} for s in specs])
        return
    table = CliTable("task", "features", "title")
    for s in specs:
        table.add_row(s.name, str(len(s.features)), s.title)
    out_console.print(table)


@tasks_app.command("init")
def init_command(
    from_table: Annotated[
        Path, typer.Option("--from-table", help="The .csv or .parquet table to draft a spec for.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the draft (default: ./<name>.yaml)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Task name (default: from the file name).")
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="The 0/1 outcome column (default: guessed).")
    ] = None,
    time: Annotated[
        str | None,
        typer.Option("--time", help="The year or date column of the split (default: guessed)."),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id", help="The patient id column (default: guessed).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Draft a task spec from a table's columns, every clinical decision left as a TODO.

    The spec loader refuses the draft until a person has replaced every TODO
    (justifications, approvals, units, population, thresholds, acceptance, intended
    use, consent); `clinical-mlops tasks check FILE` lists what is left.
    """
    from clinical_mlops.application.tasks import init_task_from_table

    try:
        draft, target = init_task_from_table(
            from_table,
            out=out,
            force=force,
            name=name,
            label=label,
            time=time,
            id_column=id_column,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        print_json(
            {
                "path": str(target),
                "name": draft.name,
                "columns": draft.columns,
                "todos": draft.todos,
                "notes": draft.notes,
            }
        )
        return
    table = CliTable("column", "role", title=f"Draft {target}", title_justify="left")
    for column, role in draft.columns.items():
        table.add_row(column, role)
    out_console.print(table)
    for note in draft.notes:
        err_console.print(f"note: {note}")
    err_console.print(
        f"{draft.todos} decision(s) marked TODO for a person; check progress with "
        f"`clinical-mlops tasks check {target}`"
    )


@tasks_app.command("check")
def check_command(
    spec: Annotated[str, typer.Argument(help="Built-in task name or path to a task spec YAML.")],
    as_json: JsonOption = False,
) -> None:
    """Validate a task spec as training would; list every field to complete or invalid."""
    from clinical_mlops.application.tasks import check_task

    result: dict[str, Any] = check_task(spec)
    if as_json:
        print_json(result)
        return
    out_console.print(
        f"task spec {result['name']} v{result['version']} is valid and trainable: "
        f"{result['approved_features']} of {result['features']} features approved, reads "
        f"{result['source']}, clinical baseline {result['clinical_baseline']} "
        f"(spec sha256 {result['spec_sha256'][:12]})"
    )
    out_console.print(f"escalation: {result['escalation_summary']}", highlight=False)
