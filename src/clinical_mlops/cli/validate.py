"""``clinical-mlops validate``: a release validated on another snapshot, stored as its evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    current_actor,
    out_console,
    print_json,
    workspace_from,
)

__all__ = ["validate_command"]


def _figure(value: Any, ci: Any = None, digits: int = 3) -> str:
    if isinstance(value, str) or value is None:
        return "—" if value is None else value
    text = f"{value:.{digits}f}"
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        text += f" ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"
    return text


def validate_command(
    release: Annotated[str, typer.Argument(help="Release version (task@n) or bundle hash prefix.")],
    on: Annotated[
        str,
        typer.Option(
            "--on",
            help="Snapshot id (or 8+ character prefix) of the data to validate on: another "
            "site, later years, any source.",
            show_default=False,
        ),
    ],
    site: Annotated[
        list[str] | None,
        typer.Option(
            "--site",
            help="Validate on this site's stays only (repeat for several; default: every "
            "stay of the snapshot).",
            show_default=False,
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Who acts (default: $CLINICAL_MLOPS_ACTOR or the login name).",
            show_default=False,
        ),
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="Role to act in (engineering or clinical).")
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Validate a release on another snapshot (another site, later years) and store the report as its evidence.

    The release's model is applied to the snapshot's stays (or those of ``--site``) and
    evaluated like development, at the release's threshold and escalation policy; the
    report compares AUROC, calibration, ECE and workload with the development figures.
    Refused, with nothing recorded: a snapshot of another task or feature contract, stays
    seen in development, a development site within the development years, no events.
    """
    from clinical_mlops.application.services import Services
    from clinical_mlops.application.validation import validate_externally

    with Services.open(workspace_from(workspace)) as services:
        done = validate_externally(
            services.governance,
            release,
            on=on,
            sites=site or None,
            actor=actor or current_actor(),
            role=role,
        )
    shown = done.to_json()
    if json_:
        print_json(shown)
        return
    out_console.print(
        f"{done.release} on snapshot {done.snapshot_id[:12]} ({shown['selection']}; "
        f"site(s) {', '.join(done.sites)}, {done.years[0]}-{done.years[1]}): {done.n} stays, "
        f"{done.n_events} events",
        highlight=False,
    )
    table = CliTable("figure", "development", "external", "difference")
    for row in shown["rows"]:
        digits = 1 if row["metric"].endswith("per_100") else 3
        table.add_row(
            row["metric"].replace("_", " "),
            _figure(row["development"], row["development_ci"], digits),
            _figure(row["external"], row["external_ci"], digits),
            _figure(row["difference"], None, digits),
        )
    out_console.print(table)
    out_console.print(shown["statement"], highlight=False)
    out_console.print(
        f"report: {Path(done.path) / 'report.html'} (sha256 of report.json "
        f"{done.report_sha256[:12]}; audit record {done.seq})",
        highlight=False,
        soft_wrap=True,  # a path is copied whole, never broken across lines
    )
