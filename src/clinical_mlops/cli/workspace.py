"""``clinical-mlops workspace ...``: back up a whole workspace, restore one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    JsonOption,
    WorkspaceOption,
    err_console,
    print_json,
    workspace_from,
)

workspace_app = typer.Typer(
    help="The workspace as a whole: back it up, restore it.", no_args_is_help=True
)


@workspace_app.command("backup")
def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy every part of the workspace (databases online, keys, console, artifacts) to DEST."""
    from clinical_mlops.application.backup import backup

    made = backup(workspace_from(workspace), dest)
    if as_json:
        print_json(made.to_json())
    else:
        for item in made.items:
            secret = " (secret)" if item["secret"] else ""
            err_console.print(f"  {item['path']}{secret}", highlight=False)
        err_console.print(f"backed up {len(made.items)} items to {made.dest}", highlight=False)
    for store in made.external:
        err_console.print(
            f"[bold yellow]not backed up:[/] the {store['name']} store is external "
            f"({store['url']}); back it up now with pg_dump: that is the operator's job",
            highlight=False,
        )
    for name in made.undeclared:
        err_console.print(
            f"[yellow]not backed up:[/] {name} is not part of the workspace layout",
            highlight=False,
        )
    if any(item["secret"] for item in made.items):
        err_console.print(
            "the backup holds keys, the identity vault and console password hashes: "
            "keep it where only operators can read it",
            highlight=False,
        )


@workspace_app.command("restore")
def restore_command(
    src: Annotated[Path, typer.Argument(help="A backup made by `workspace backup`.")],
    to: Annotated[
        Path | None,
        typer.Option(
            "--to", help="A new (or empty) workspace folder (default: the workspace option)."
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a new workspace folder, check every file and verify the ledger."""
    from clinical_mlops.application.backup import restore
    from clinical_mlops.workspace import Workspace

    target = to or Workspace.locate(workspace).root
    done = restore(src, target)
    if as_json:
        print_json(done.to_json())
    else:
        ledger = (
            f"ledger verified ({done.ledger_entries} entries)"
            if done.ledger_ok
            else "ledger NOT verified"
        )
        err_console.print(
            f"restored {len(done.items)} items into {done.root}; {ledger}", highlight=False
        )
        for problem in done.problems:
            err_console.print(f"  [red]problem:[/] {problem}", highlight=False)
    for store in done.external:
        err_console.print(
            f"[bold yellow]not restored:[/] the {store['name']} store is external "
            f"({store['url']}); restore it with pg_restore",
            highlight=False,
        )
    if not done.ok:
        raise typer.Exit(code=1)
