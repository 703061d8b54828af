"""``clinical-mlops data ...`` and ``clinical-mlops demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, TaskID

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    current_actor,
    err_console,
    out_console,
    print_json,
    workspace_from,
)
from clinical_mlops.cli._progress import progress_bar

if TYPE_CHECKING:
    from clinical_mlops.application.training import BuildProgress
    from clinical_mlops.features.snapshot import Snapshot

data_app = typer.Typer(
    help="Raw sources, cohorts, contracts, features and snapshots.", no_args_is_help=True
)

TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        "-t",
        help="Built-in task name or path to a task spec YAML (default: the task of the "
        "workspace's snapshots, when they all have one).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the synthetic source.")]
ScaleOption = Annotated[
    float,
    typer.Option(
        "--scale", help="Size of the synthetic source; 1.0 gives about 23,841 cohort stays."
    ),
]


EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Feature engine: duckdb (embedded) or spark (needs the spark extra and Java 17).",
    ),
]
SparkMasterOption = Annotated[
    str,
    typer.Option(
        "--spark-master",
        help="Spark master URL with --engine spark: local[N], spark://host:7077, yarn, k8s://...",
    ),
]


SitesOption = Annotated[
    str | None,
    typer.Option(
        "--sites",
        help="Comma-separated hospitals to generate among north, south, east and west "
        "(default: north,south,east, whose pooled cohort reproduces the published figures; "
        "west alone is another hospital, e.g. for external validation).",
        show_default=False,
    ),
]


@data_app.command("generate")
def generate(
    seed: SeedOption = 7,
    scale: ScaleOption = 1.0,
    sites: SitesOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate the synthetic raw EHR source (cached in the workspace by seed, scale and sites)."""
    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import DEFAULT_SITES, SyntheticConfig

    chosen = (
        DEFAULT_SITES if sites is None else tuple(s.strip() for s in sites.split(",") if s.strip())
    )
    config = SyntheticConfig(seed=seed, scale=scale, sites=chosen)
    ws = workspace_from(workspace)
    with progress_bar() as bar:
        task = bar.add_task("generating synthetic ICU events", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        source = synthetic_source(ws, config, progress=tick)
    result = {"path": str(source.path), "files": source.file_hashes, **source.info}
    if as_json:
        print_json(result)
    else:
        out_console.print(f"synthetic source ready: [bold]{source.path}[/]")


ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="Threads for DuckDB and XGBoost (default: every core); the model does not "
        "depend on it.",
        show_default=False,
    ),
]
EngineThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="Threads for the DuckDB feature engine (default: every core).",
        show_default=False,
    ),
]


def build_progress(bar: Progress, *, steps: int = 6) -> BuildProgress:
    """Return callbacks showing a snapshot build on ``bar``: the source, then each step."""
    from clinical_mlops.application.training import BuildProgress

    source = bar.add_task("preparing the source", total=None)
    building: list[TaskID] = []

    def tick(done: int, total: int) -> None:
        bar.update(
            source, description="generating synthetic raw events", completed=done, total=total
        )

    def say(text: str) -> None:
        bar.update(source, description=text)

    def on_step(name: str) -> None:
        if not building:
            bar.update(source, visible=False)
            building.append(bar.add_task("building snapshot", total=steps))
        bar.update(building[0], description=name, advance=1)

    return BuildProgress(on_step=on_step, status=say, progress=tick)


def say_if_reused(snap: Snapshot) -> None:
    """Tell the user when a build found its snapshot already built."""
    if snap.reused:
        err_console.print(
            f"snapshot {snap.id[:12]} was already built from these inputs: reused, not rebuilt",
            highlight=False,
        )


@data_app.command("build")
def build(
    task: TaskOption = None,
    seed: SeedOption = 7,
    scale: ScaleOption = 1.0,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="synthetic (embedded default), raw (a folder in the raw contract), mimic-iv "
            "(a MIMIC-IV v2.2 folder with hosp/ and icu/) or table (one prepared row per "
            "patient, a .csv or .parquet file whose columns the task spec declares).",
        ),
    ] = "synthetic",
    path: Annotated[
        Path | None,
        typer.Option(
            "--path", help="Folder of the source (raw, mimic-iv) or the table file (table)."
        ),
    ] = None,
    engine: EngineOption = "duckdb",
    spark_master: SparkMasterOption = "local[2]",
    threads: EngineThreadsOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a content-addressed snapshot: cohort, contracts, features, labels, split.

    When the workspace already holds the snapshot of the same inputs, it is reused.
    """
    from clinical_mlops.application.training import build_task_snapshot

    with progress_bar() as bar:
        snap = build_task_snapshot(
            workspace_from(workspace),
            task=task,
            source=source,
            path=path,
            seed=seed,
            scale=scale,
            engine=engine,
            spark_master=spark_master,
            threads=threads,
            actor=current_actor(),
            report=build_progress(bar, steps=5 if source == "table" else 6),
        )
    say_if_reused(snap)
    if as_json:
        print_json(snap.summary())
    else:
        render_snapshot(snap)


@data_app.command("show")
def show(
    snapshot: Annotated[
        str, typer.Argument(help="Snapshot id (or a unique prefix of 8+ characters).")
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a snapshot's manifest: source, cohort flow, counts, missingness, contracts."""
    from clinical_mlops.features.snapshot import open_snapshot

    snap = open_snapshot(workspace_from(workspace), snapshot)
    if as_json:
        print_json(snap.summary() | {"manifest": snap.manifest})
    else:
        render_snapshot(snap)


@data_app.command("list")
def list_command(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """List the snapshots in the workspace."""
    from clinical_mlops.features.snapshot import list_snapshots, open_snapshot

    ws = workspace_from(workspace)
    rows = [open_snapshot(ws, i).summary() for i in list_snapshots(ws)]
    if as_json:
        print_json(
            [
                {k: r[k] for k in ("snapshot_id", "task", "source", "n_stays", "prevalence")}
                for r in rows
            ]
        )
        return
    table = CliTable("snapshot", "task", "source", "stays", "prevalence")
    for r in rows:
        table.add_row(
            r["snapshot_id"][:12],
            r["task"],
            r["source"],
            f"{r['n_stays']:,}",
            f"{r['prevalence']:.3f}",
        )
    out_console.print(table)


def render_snapshot(snap: Snapshot) -> None:
    """Print the cohort flow and our figures beside the published ones."""
    s = snap.summary()
    out_console.print(
        f"[bold]snapshot[/] {s['snapshot_id']}  (task {s['task']}, source {s['source']})"
    )
    flow = CliTable("step", "remaining", "excluded", title="Cohort flow", title_justify="left")
    for row in s["cohort_flow"]:
        flow.add_row(
            row["step"], f"{row['remaining']:,}", f"{row['excluded']:,}" if row["excluded"] else ""
        )
    out_console.print(flow)
    cmp = CliTable(
        "figure",
        "ours",
        "published",
        title="Our figures beside the published run",
        title_justify="left",
    )
    for row in snap.published_comparison():
        cmp.add_row(row["figure"], _fmt(row["ours"]), _fmt(row["published"]))
    if cmp.row_count:
        out_console.print(cmp)
    leakage = snap.manifest.get("leakage_check")
    if leakage and not leakage.get("checked", True):
        out_console.print(f"leakage check: {leakage['reason']}")
    c = s["contracts"]
    out_console.print(
        f"data contracts: {c['checks']} checks, {c['hard_failed']} hard failures, "
        f"{c['soft_failed']} soft findings (see {snap.path / 'contracts.json'})"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)
