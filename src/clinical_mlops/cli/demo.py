"""``clinical-mlops demo``: the whole pipeline on the embedded synthetic source."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clinical_mlops.cli._common import CliTable, WorkspaceOption, err_console, out_console
from clinical_mlops.cli.data import SeedOption, ThreadsOption, render_snapshot
from clinical_mlops.cli.model import SearchOption, TrackingUriOption, render_training, run_train
from clinical_mlops.modeling.defaults import DEFAULT_SEARCH_ITERATIONS
from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from clinical_mlops.evaluation.validation_report import Matrix


def demo_command(
    seed: SeedOption = 7,
    search_iterations: SearchOption = DEFAULT_SEARCH_ITERATIONS,
    threads: ThreadsOption = None,
    tracking_uri: TrackingUriOption = None,
    track: Annotated[
        bool,
        typer.Option(
            "--track/--no-track",
            help="Log the training run to MLflow (default: $MLFLOW_TRACKING_URI, else the "
            "workspace's mlflow.db).",
        ),
    ] = True,
    workspace: WorkspaceOption = None,
) -> None:
    """Run the end-to-end pipeline on the embedded synthetic source.

    Synthetic raw ICU events -> cohort -> data contracts -> features -> snapshot ->
    model selection -> calibration -> conformal sets -> validation report and model card ->
    signed release bundle -> validation risks acknowledged by the demo clinician, with a
    reason -> gates 1-4 with approvals by named demo users -> approved.
    """
    from clinical_mlops.features.snapshot import open_snapshot
    from clinical_mlops.tasks import load_task

    started = time.monotonic()
    ws = Workspace.open(
        workspace
    )  # a workspace that cannot be made stops the demo before it starts
    err_console.print("[bold]clinical-mlops demo[/] — synthetic ICU source, task icu_mortality_48h")
    result = run_train(
        task="icu_mortality_48h",
        seed=seed,
        scale=1.0,
        snapshot=None,
        search_iterations=search_iterations,
        n_boot=1000,
        workspace=workspace,
        threads=threads,
        tracking_uri=tracking_uri,
        track=track,
    )
    render_snapshot(open_snapshot(ws, result.lineage["snapshot"]["id"]))
    render_training(result.summary(), published=load_task("icu_mortality_48h").published)
    if result.report.matrix is not None:
        render_matrix(result.report.matrix)
    from clinical_mlops.application.walkthrough import DEMO_PEOPLE, govern_demo_release

    err_console.print("[bold]governance[/] — bundle, gates 1-4, approvals by demo users, pilot")
    shown = govern_demo_release(ws, model_version=result.model_version)
    for person, (role, what) in DEMO_PEOPLE.items():
        out_console.print(f"  {person} ({role}): {what}", highlight=False)
    gates = ", ".join(
        f"{n} {'passed' if g['passed'] else 'FAILED'}" for n, g in shown["gates"].items()
    )
    out_console.print(
        f"release [bold]{shown['version']}[/] status [bold]{shown['status']}[/] "
        f"(bundle sha256 {shown['sha256'][:16]}…; gates: {gates})",
        highlight=False,
    )
    render_risks(shown["risks"])
    from clinical_mlops.application.walkthrough import PILOT_SITE, score_test_set

    err_console.print("[bold]serving[/] — locked test stays scored through the Predictor, audited")
    render_serving(score_test_set(ws, site=PILOT_SITE, requester="system:demo-ehr"))
    run = result.lineage.get("tracking")
    if run:
        uri = run["tracking_uri"]
        see = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        out_console.print(
            f"MLflow run {run['mlflow_run_id']} (see it with: {see})", highlight=False
        )
    out_console.print(
        f"\n[bold]done[/] in {time.monotonic() - started:.0f} s — open {result.paths['report.html']}"
    )


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, str):
        return "insufficient data"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "—"


def render_matrix(matrix: Matrix) -> None:
    """Print the validation matrix: per site and test year, then per site and per year."""
    table = CliTable(
        "site",
        "year",
        "n",
        "events",
        "AUROC (95% CI)",
        "cal. slope",
        "cal. intercept",
        "ECE",
        "alerts/100",
        "reviews/100",
        title="Validation matrix (locked test set by site and year)",
        title_justify="left",
    )
    for r in [*matrix.rows, *matrix.by_site, *matrix.by_period]:
        if isinstance(r.auroc, str):
            auroc = "insufficient data"
        else:
            ci = r.auroc.ci if isinstance(r.auroc.ci, list) else []
            bounds = " – ".join(_cell(v) for v in ci)
            auroc = f"{_cell(r.auroc.value)} ({bounds})" if bounds else _cell(r.auroc.value)
        table.add_row(
            r.site,
            r.period,
            f"{r.n:,}",
            f"{r.n_events:,}",
            auroc,
            _cell(r.calibration_slope, 2),
            _cell(r.calibration_intercept, 2),
            _cell(r.ece),
            _cell(r.alerts_per_100, 1),
            _cell(r.reviews_per_100, 1),
        )
    out_console.print(table)


def render_risks(risks: list[dict]) -> None:
    """Print each risk the release carried out of validation and who acknowledged it, why."""
    if not risks:
        out_console.print("no validation risk to acknowledge (gate 3)", highlight=False)
        return
    out_console.print(f"{len(risks)} validation risk(s) acknowledged before gate 3:")
    for r in risks:
        a = r["acknowledgement"] or {}
        out_console.print(f"  {r['id']}: {r['words']}", highlight=False, markup=False)
        out_console.print(
            f"    acknowledged by {a.get('actor', 'nobody')} ({a.get('role', '-')}): "
            f"{a.get('reason', 'not acknowledged')} (audit record {a.get('seq', '-')})",
            highlight=False,
            markup=False,
        )


def render_serving(summary: dict) -> None:
    """Print the serving step of the demo: counts and one sample CDS Hooks card."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["by_status"].items() if v)
    out_console.print(
        f"scored the {summary['n']} locked test stays through the Predictor with release "
        f"{summary['release']}: {counts}; {summary['escalated']} routed to human review; "
        f"{summary['rows_per_second']} rows/s with one signed audit record per row",
        highlight=False,
    )
    work = summary.get("workload")
    if work:
        out_console.print(
            f"[bold]workload[/] of the {work['scored']} stays shown: "
            f"{work['alerts_per_100']:.1f} alerts per 100 (risk at or above "
            f"{work['threshold']:.0%}) and {work['reviews_per_100']:.1f} reviews per 100 "
            f"queued for a clinician ({work['deferred_per_100']:.1f} per 100 deferred beyond "
            "the review budget)",
            highlight=False,
        )
        if work.get("report_reviews_per_100") is not None:
            out_console.print(
                f"  validation report: {work['report_reviews_per_100']:.1f} reviews per 100 "
                "test stays",
                highlight=False,
            )
        out_console.print(f"  escalation policy: {work['policy']}", highlight=False, markup=False)
        out_console.print(
            f"  conformal sets, shown with every risk: {work['coverage']}",
            highlight=False,
            markup=False,
        )
    card = summary.get("card")
    if card:
        out_console.print("[bold]sample card[/] (highest risk):", highlight=False)
        out_console.print(
            f"  [{card['indicator']}] {card['summary']}", highlight=False, markup=False
        )
        out_console.print(f"  source: {card['source']['label']}", highlight=False, markup=False)
        for line in card["detail"].splitlines():
            if line.startswith("- "):
                out_console.print(f"  {line}", highlight=False, markup=False)
        seq = (summary.get("sample") or {}).get("audit_seq")
        out_console.print(
            f"  audit record {seq}: replay it with `clinical-mlops audit replay {seq}`"
        )
