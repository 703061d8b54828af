"""``clinical-mlops data ...`` and ``clinical-mlops demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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

if TYPE_CHECKING:
    from clinical_mlops.data.snapshot import Snapshot
    from clinical_mlops.data.sources import SourceKind
    from clinical_mlops.features.engine import FeatureEngine

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


def feature_engine(name: str, *, spark_master: str = "local[2]") -> FeatureEngine:
    """Return the feature engine called ``name`` (``duckdb`` or ``spark``)."""
    from clinical_mlops.features.engine import DuckDBEngine

    if name == "duckdb":
        return DuckDBEngine()
    if name == "spark":
        from clinical_mlops.features.spark import SparkEngine

        runner = SparkEngine(master=spark_master)
        runner.session  # noqa: B018 - start (or fail, saying what to install) before any work
        return runner
    raise typer.BadParameter(f"expected duckdb or spark, got {name!r}", param_hint="--engine")


def progress_bar() -> Progress:
    """A transient progress bar on standard error."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@data_app.command("generate")
def generate(
    seed: SeedOption = 7,
    scale: ScaleOption = 1.0,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate the synthetic raw EHR source (cached in the workspace by seed and scale)."""
    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import SyntheticConfig

    ws = workspace_from(workspace)
    with progress_bar() as bar:
        task = bar.add_task("generating synthetic ICU events", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        source = synthetic_source(ws, SyntheticConfig(seed=seed, scale=scale), progress=tick)
    result = {"path": str(source.path), "files": source.file_hashes, **source.info}
    if as_json:
        print_json(result)
    else:
        out_console.print(f"synthetic source ready: [bold]{source.path}[/]")


def run_build(
    *,
    task: str | None,
    seed: int,
    scale: float,
    source: SourceKind,
    path: Path | None,
    workspace: Path | None,
    engine: str = "duckdb",
    spark_master: str = "local[2]",
) -> Snapshot:
    """Generate if needed, then cohort -> contracts -> features -> snapshot, with progress."""
    from clinical_mlops.data.snapshot import build_snapshot
    from clinical_mlops.data.sources import open_source
    from clinical_mlops.data.synthetic import SyntheticConfig
    from clinical_mlops.data.task_choice import snapshot_task
    from clinical_mlops.tasks import load_task

    ws = workspace_from(workspace)
    spec = load_task(snapshot_task(ws, task))
    runner = feature_engine(engine, spark_master=spark_master)
    with progress_bar() as bar:
        gen = bar.add_task("preparing raw source", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(
                gen, description="generating synthetic raw events", completed=done, total=total
            )

        def say(text: str) -> None:
            bar.update(gen, description=text)

        raw = open_source(
            ws,
            status=say,
            kind=source,
            path=path,
            config=SyntheticConfig(seed=seed, scale=scale),
            setting=spec.cohort.setting,
            progress=tick,
        )
        bar.update(gen, visible=False)
        steps = bar.add_task("building snapshot", total=6)

        def on_step(name: str) -> None:
            bar.update(steps, description=name, advance=1)

        return build_snapshot(ws, spec, raw, engine=runner, on_step=on_step, actor=current_actor())


def run_table_build(*, task: str | None, path: Path | None, workspace: Path | None) -> Snapshot:
    """Project a bring-your-own table onto its declared columns and snapshot it, with progress."""
    from clinical_mlops.data.table import build_table_snapshot
    from clinical_mlops.data.task_choice import snapshot_task
    from clinical_mlops.tasks import load_task

    if path is None:
        raise typer.BadParameter("give the table file (.csv or .parquet)", param_hint="--path")
    ws = workspace_from(workspace)
    spec = load_task(snapshot_task(ws, task))
    with progress_bar() as bar:
        steps = bar.add_task("building snapshot", total=5)

        def on_step(name: str) -> None:
            bar.update(steps, description=name, advance=1)

        return build_table_snapshot(ws, spec, path, on_step=on_step, actor=current_actor())


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
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a content-addressed snapshot: cohort, contracts, features, labels, split."""
    if source not in ("synthetic", "raw", "mimic-iv", "table"):
        raise typer.BadParameter(
            f"expected synthetic, raw, mimic-iv or table, got {source!r}", param_hint="--source"
        )
    if source == "table":
        snap = run_table_build(task=task, path=path, workspace=workspace)
    else:
        snap = run_build(
            task=task,
            seed=seed,
            scale=scale,
            source=cast("SourceKind", source),
            path=path,
            workspace=workspace,
            engine=engine,
            spark_master=spark_master,
        )
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
    from clinical_mlops.data.snapshot import open_snapshot

    snap = open_snapshot(workspace_from(workspace), snapshot)
    if as_json:
        print_json(snap.summary() | {"manifest": snap.manifest})
    else:
        render_snapshot(snap)


@data_app.command("list")
def list_command(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """List the snapshots in the workspace."""
    from clinical_mlops.data.snapshot import list_snapshots, open_snapshot

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
