"""``clinical-mlops keys ...``: list and rotate the key provider's keys."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    err_console,
    out_console,
    print_json,
    workspace_from,
)
from clinical_mlops.cli.audit import ActorOption, default_actor

keys_app = typer.Typer(
    help="Keys of the key provider (local keyring or Vault).", no_args_is_help=True
)


@keys_app.command("list")
def list_keys(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """List key ids, purposes, creation times and which are active (never key material)."""
    from clinical_mlops.privacy.keys import provider_for_workspace

    infos = [k.to_json() for k in provider_for_workspace(workspace_from(workspace)).list_keys()]
    if as_json:
        print_json({"keys": infos})
        return
    table = CliTable("key id", "purpose", "created", "active", "public key")
    for k in infos:
        table.add_row(
            k["key_id"],
            k["purpose"],
            k["created"],
            "yes" if k["active"] else "",
            (k["public_key"] or "")[:16],
        )
    out_console.print(table)


@keys_app.command("rotate")
def rotate(
    purpose: Annotated[
        str,
        typer.Option(
            "--purpose", help="wrap (data-key wrapping key) or sign (ledger signing key)."
        ),
    ] = "wrap",
    actor: ActorOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rotate a key: new writes use the new key, old keys keep decrypting and verifying."""
    from clinical_mlops.application.audit import rotate_key
    from clinical_mlops.application.services import Services

    if purpose not in ("wrap", "sign"):
        raise typer.BadParameter("--purpose must be wrap or sign")
    chosen: Literal["wrap", "sign"] = "wrap" if purpose == "wrap" else "sign"
    with Services.open(workspace_from(workspace)) as services:
        result = rotate_key(services, purpose=chosen, actor=actor or default_actor())
    if as_json:
        print_json(result)
    else:
        err_console.print(
            f"rotated {purpose} key {result['old_key_id']} -> "
            f"{result['new_key_id']} (ledger entry {result['seq']})"
        )
