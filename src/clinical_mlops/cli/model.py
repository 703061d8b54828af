"""``clinical-mlops train``, ``evaluate`` and ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import TaskID

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
from clinical_mlops.cli.data import (
    ScaleOption,
    SeedOption,
    TaskOption,
    ThreadsOption,
    build_progress,
    say_if_reused,
)
from clinical_mlops.modeling.defaults import DEFAULT_SEARCH_ITERATIONS

if TYPE_CHECKING:
    from clinical_mlops.application.training import TrainingResult

SearchOption = Annotated[
    int,
    typer.Option(
        "--search-iterations",
        help="XGBoost random-search budget (the full protocol is 100).",
        min=1,
    ),
]
BootOption = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for CIs.", min=100)]
TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking server or store to log the run to (default: $MLFLOW_TRACKING_URI).",
        show_default=False,
    ),
]


def run_train(
    *,
    task: str | None,
    seed: int,
    scale: float,
    snapshot: str | None,
    search_iterations: int,
    n_boot: int,
    workspace: Any,
    threads: int | None = None,
    tracking_uri: str | None = None,
    track: bool | None = None,
) -> TrainingResult:
    """Train (building or reusing the snapshot unless one is named), showing progress."""
    from clinical_mlops.application.training import train_task

    with progress_bar() as bar:
        training: list[TaskID] = []

        def on_step(msg: str) -> None:
            if not training:
                training.append(bar.add_task("training", total=6 + search_iterations + 2))
            bar.update(training[0], description=msg, advance=1)

        result = train_task(
            workspace_from(workspace),
            task=task,
            snapshot=snapshot,
            seed=seed,
            scale=scale,
            search_iterations=search_iterations,
            n_boot=n_boot,
            threads=threads,
            actor=current_actor(),
            build=build_progress(bar),
            on_step=on_step,
            tracking_uri=tracking_uri,
            track=track,
        )
    say_if_reused(result.snapshot)
    return result


def train(
    task: TaskOption = None,
    seed: SeedOption = 7,
    scale: ScaleOption = 1.0,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="Use this snapshot instead of building one.")
    ] = None,
    search_iterations: SearchOption = DEFAULT_SEARCH_ITERATIONS,
    n_boot: BootOption = 1000,
    threads: ThreadsOption = None,
    tracking_uri: TrackingUriOption = None,
    track: Annotated[
        bool | None,
        typer.Option(
            "--track/--no-track",
            help="Log to MLflow: --track uses the workspace's mlflow.db when no URI is given; "
            "--no-track ignores $MLFLOW_TRACKING_URI.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Select, fit, calibrate and validate a model; write artifacts, report and model card.

    Without --snapshot, the snapshot of the task over the synthetic source is built, or
    reused when the workspace already holds it. The run is logged to MLflow at
    --tracking-uri, else at $MLFLOW_TRACKING_URI, else (with --track) in the workspace's
    mlflow.db; otherwise it is not tracked.
    """
    result = run_train(
        task=task,
        seed=seed,
        scale=scale,
        snapshot=snapshot,
        search_iterations=search_iterations,
        n_boot=n_boot,
        workspace=workspace,
        threads=threads,
        tracking_uri=tracking_uri,
        track=track,
    )
    if as_json:
        print_json(result.summary())
    else:
        render_training(result.summary(), published=_published(workspace, result.folder))


def _published(workspace: Any, folder: Path) -> dict[str, Any]:
    """Return the published figures of the task a model folder was trained for."""
    from clinical_mlops.features.snapshot import open_snapshot

    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    return open_snapshot(workspace_from(workspace), lineage["snapshot"]["id"]).spec().published


def evaluate(
    model: Annotated[str, typer.Argument(help="Model version (or a unique prefix).")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay a model's validation from its stored artifacts and check it matches bit for bit."""
    from clinical_mlops.application.training import replay_evaluation

    outcome = replay_evaluation(workspace_from(workspace), model)
    if as_json:
        print_json(outcome)
    else:
        verdict = "[green]identical[/]" if outcome["identical"] else "[red]DIFFERENT[/]"
        out_console.print(
            f"model {outcome['model_version']}: replayed test predictions and report are {verdict}"
        )
        for key, value in outcome["test"].items():
            if isinstance(value, float):
                out_console.print(f"  {key:<22} {value:.4f}")
    if not outcome["identical"]:
        raise typer.Exit(1)


def report(
    model: Annotated[str, typer.Argument(help="Model version (or a unique prefix).")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show where a model's validation report and model card are, with the headline table."""
    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.modeling.trained import model_folder

    folder = model_folder(workspace_from(workspace), model)
    data = ValidationReport.load(folder / "report.json")
    files = {
        name: str(folder / name)
        for name in (
            "report.html",
            "report.json",
            "model_card.md",
            "model_card.html",
            "model_card.json",
        )
    }
    if as_json:
        print_json({"model_version": folder.name, "files": files, "test": data.test.to_json()})
        return
    render_training(
        {
            "model_version": folder.name,
            "test": data.test.to_json(),
            "subgroups": {k: v.to_json() for k, v in data.subgroups.items()},
            "baseline": data.baseline.to_json(),
            "fairness": {k: v.to_json() for k, v in data.fairness.items()},
            "report_html": files["report.html"],
            "model_card": files["model_card.md"],
            "cv_auroc": {k: v["mean_auroc"] for k, v in data.cv.candidates.items()},
        },
        published=_published(workspace, folder),
    )


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def render_training(s: dict[str, Any], *, published: dict[str, Any]) -> None:
    """Print the Table-2-style summary beside the published figures."""
    out_console.print(f"[bold]model[/] {s['model_version']}")
    if s.get("cv_auroc"):
        cv = CliTable(
            "candidate",
            "CV AUROC (ours)",
            "CV AUROC (published)",
            title="Model selection",
            title_justify="left",
        )
        for name, value in s["cv_auroc"].items():
            cv.add_row(name, _num(value), _num(published.get("cv_auroc", {}).get(name)))
        out_console.print(cv)
    t = CliTable(
        "group",
        "n",
        "AUROC (95% CI)",
        "sensitivity",
        "specificity",
        "PPV",
        title="Test set at the operating threshold (Table 2 layout)",
        title_justify="left",
    )
    test = s["test"]
    ci = test.get("auroc_ci") or [None, None]
    t.add_row(
        "overall",
        _num(test.get("n"), 0),
        f"{_num(test['auroc'])} ({_num(ci[0])}–{_num(ci[1])})",
        _num(test["sensitivity"]),
        _num(test["specificity"]),
        _num(test["ppv"]),
    )
    pub = published.get("test", {})
    if pub:
        t.add_row(
            "[dim]overall, published[/]",
            "",
            _num(pub.get("auroc")),
            _num(pub.get("sensitivity")),
            _num(pub.get("specificity")),
            _num(pub.get("ppv")),
        )
    for name, m in s.get("subgroups", {}).items():
        if isinstance(m, dict):
            sci = m.get("auroc_ci") or [None, None]
            auroc = m.get("auroc")
            cell = (
                f"{_num(auroc)} ({_num(sci[0])}–{_num(sci[1])})"
                if isinstance(auroc, float)
                else str(auroc)
            )
            t.add_row(
                name,
                _num(m.get("n"), 0),
                cell,
                _num(m.get("sensitivity")),
                _num(m.get("specificity")),
                _num(m.get("ppv")),
            )
        else:
            t.add_row(name, "", str(m), "", "", "")
    out_console.print(t)
    extra = CliTable(
        "figure", "value", title="Calibration, uncertainty and baseline", title_justify="left"
    )
    for key in ("brier", "ece", "calibration_slope", "conformal_coverage"):
        if key in test:
            extra.add_row(key, _num(test[key]))
    b = s.get("baseline", {})
    if b:
        extra.add_row(f"baseline AUROC ({b.get('name')})", _num(b.get("auroc")))
    for metric, v in s.get("fairness", {}).items():
        if isinstance(v, dict):
            ci = v.get("ci") or [None, None]
            extra.add_row(
                f"{metric} (worst: {v.get('attribute')})",
                f"{_num(v.get('value'))} ({_num(ci[0])}–{_num(ci[1])})",
            )
    out_console.print(extra)
    err_console.print(f"report: {s.get('report_html')}\nmodel card: {s.get('model_card')}")
