"""``clinical-mlops score``: a file of prediction requests scored and audited."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    JsonOption,
    WorkspaceOption,
    current_actor,
    err_console,
    print_json,
    workspace_from,
)

__all__ = ["score_command"]


def score_command(
    requests: Annotated[
        Path,
        typer.Argument(
            help="JSON Lines: one request per line, the shape of POST /v1/predict's item.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where the results go (JSON Lines, input order).")
    ],
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Explain each prediction.")
    ] = True,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Task whose active release scores (default: the workspace's one task).",
        ),
    ] = None,
    site: Annotated[str, typer.Option("--site", help="Site the requests come from.")] = "*",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every request of a file through the governed Predictor, one audit record each.

    Each request passes the guards it would over HTTP (inputs, intended use, consent,
    rollout) and gets its own ledger entry. The whole file is checked first: a bad line
    refuses the file, naming the line and field, with nothing scored. Results are written
    in input order, each with its line number, once all are in. If a run stops part way
    (killed, or an error), the same command resumes it: requests already recorded are
    written from the ledger, not scored twice, and the count is shown.
    """
    from clinical_mlops.application.scoring import score_file
    from clinical_mlops.cli._progress import progress_bar

    ws = workspace_from(workspace)
    with progress_bar() as bar:
        job = bar.add_task("scoring", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        summary = score_file(
            ws,
            requests,
            out,
            requester=current_actor(),
            explain=explain,
            task=task,
            site=site,
            progress=tick,
        )
    result = summary.to_json()
    if as_json:
        print_json(result)
        return
    counts = ", ".join(f"{n} {s}" for s, n in result["by_status"].items() if n)
    if result["resumed"]:
        err_console.print(
            f"resumed: {result['resumed']} of the {result['rows']} requests were already "
            "recorded by an earlier run of this file; their results were written from the "
            "ledger, not scored again"
        )
    if result["removed_temporary"]:
        err_console.print(
            f"removed {result['removed_temporary']} temporary output file(s) left by the "
            "interrupted run"
        )
    err_console.print(
        f"{result['rows']} results ({counts}; {result['escalated']} escalated), "
        f"{result['scored_now']} scored now in {result['seconds']} s "
        f"({result['rows_per_second']} rows/s while scoring); results in {result['output']}"
    )
