"""``clinical-mlops evidence``: a release's standard evidence documents, signed beside it."""

from __future__ import annotations

from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    current_actor,
    err_console,
    out_console,
    print_json,
    time_option,
    workspace_from,
)
from clinical_mlops.errors import ValueInvalid

__all__ = ["evidence_command"]

FORMAT_CHOICES = ("chai", "hti1", "tripod-ai", "annex-iv", "pmm-plan", "pccp", "all")


def evidence_command(
    release: Annotated[str, typer.Argument(help="Release version (task@n) or bundle hash prefix.")],
    format_: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help=f"Document to write ({', '.join(FORMAT_CHOICES)}); repeat for several "
            "(default: all).",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Time the facts are read as of (ISO-8601 with zone; default: now). Local "
            "validity comes from monitoring up to this time.",
            show_default=False,
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Who writes the set (default: $CLINICAL_MLOPS_ACTOR or the login name).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Write a release's standard evidence documents (CHAI, HTI-1, ...), signed beside it.

    Every field points at its evidence (bundle file and hash, ledger seq, monitoring
    window); what the project cannot know is written "To be completed by <role>". The
    set is signed with the workspace signing key and recorded in the audit ledger.
    """
    from clinical_mlops.application.evidence import write_evidence

    for name in format_ or ():
        if name not in FORMAT_CHOICES:
            raise ValueInvalid(f"--format: {name!r} is not one of {', '.join(FORMAT_CHOICES)}")
    written = write_evidence(
        workspace_from(workspace),
        release,
        formats=format_ or ["all"],
        as_of=time_option(as_of, "--as-of", zone_required=True),
        actor=actor or current_actor(),
        progress=lambda line: err_console.print(line, highlight=False),
    )
    if json_:
        print_json(written)
        return
    out_console.print(
        f"{written['release']} as of {written['as_of']}: {len(written['formats'])} document(s) "
        f"signed (manifest sha256 {written['manifest_sha256'][:12]}; audit record {written['seq']})",
        highlight=False,
    )
    table = CliTable("document", "files", "missing", "to be completed by")
    for doc in written["documents"]:
        owners = sorted({m["owner"] for m in doc["missing"]})
        table.add_row(
            doc["format"],
            ", ".join(doc["files"]),
            str(len(doc["missing"])),
            ", ".join(owners) or "—",
        )
    out_console.print(table)
    out_console.print(f"written to {written['path']}", highlight=False, soft_wrap=True)
