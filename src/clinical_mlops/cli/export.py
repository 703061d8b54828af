"""``clinical-mlops export odcs|seismometer``: documents for tools outside the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    JsonOption,
    WorkspaceOption,
    err_console,
    out_console,
    print_json,
    time_option,
    workspace_from,
)
from clinical_mlops.cli.monitor import TaskOption

__all__ = ["export_app"]

export_app = typer.Typer(
    help="Exports for other tools: ODCS data contracts, seismometer predictions and events.",
    no_args_is_help=True,
)


@export_app.command(
    "odcs", help="Write the input data contract of a release or task as ODCS v3 YAML."
)
def odcs_cmd(
    target: Annotated[
        str,
        typer.Argument(help="A registered release, a built-in task or a task spec YAML file."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write (default: standard output)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the Open Data Contract Standard document of a release's (or task's) inputs.

    A release's contract carries its status, author and approvers and its snapshot; a
    task's is a draft of the spec alone. Name the file ``*.odcs.yaml`` for editors to
    recognise it.
    """
    from clinical_mlops.application.exports import export_data_contract
    from clinical_mlops.registry.odcs import odcs_yaml

    text = odcs_yaml(export_data_contract(workspace_from(workspace), target))
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    err_console.print(f"wrote {out}", highlight=False)


@export_app.command(
    "seismometer",
    help="Write a release's predictions and outcomes as seismometer's tables and config.",
)
def seismometer_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")],
    release: Annotated[
        str | None, typer.Option("--release", help="Release (default: the task's served release).")
    ] = None,
    task: TaskOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Predictions at or after (default: all).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Predictions and outcomes before (default: now).")
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Write data/predictions.parquet, data/events.parquet and config.yml for seismometer.

    Patients appear only as their audit-ledger pseudonyms. Open the folder's
    config.yml with seismometer from inside the folder (its data_dir is relative).
    """
    from clinical_mlops.application.exports import export_seismometer

    summary = export_seismometer(
        workspace_from(workspace),
        out,
        release=release,
        task=task,
        since=time_option(since, "--since"),
        until=time_option(until, "--until"),
    )
    if json_:
        print_json(summary)
        return
    out_console.print(
        f"wrote {out}: {summary['predictions']} predictions of {summary['release']}, "
        f"{summary['outcomes']} outcomes, {summary['overrides']} overrides",
        highlight=False,
    )
