"""``clinical-mlops monitor run|report|alerts|notify`` and ``clinical-mlops simulate drift``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from clinical_mlops.cli.registry import (
    KeyOption,
    PrintStatementOption,
    SignatureOption,
    StatementOption,
    act_proof,
)

__all__ = ["monitor_app", "simulate_app"]

monitor_app = typer.Typer(
    help="Drift, outcome-linked, fairness and workflow monitoring of served releases (R-O1..R-O3).",
    no_args_is_help=True,
)
simulate_app = typer.Typer(
    help="Simulated operation on simulated time (no sleeping).", no_args_is_help=True
)

TaskOption = Annotated[
    str | None, typer.Option("--task", "-t", help="Only releases of this task (default: all).")
]


@monitor_app.command(
    "run", help="Evaluate the windows since the last run, raise alerts, act on them."
)
def run_cmd(
    task: TaskOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Start of the period (default: 14 days ago).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End of the period (default: now).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Raise and store alerts but take no action.")
    ] = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application.monitoring import run_monitor

    with err_console.status("reading the audit ledger and evaluating windows"):
        summary = run_monitor(
            workspace_from(workspace),
            task=task,
            since=time_option(since, "--since"),
            until=time_option(until, "--until"),
            act=not dry_run,
        )
    if json_:
        print_json(summary)
        return
    table = CliTable(title=f"monitor run {summary['since']} to {summary['until']}")
    for col in ("release", "records", "windows", "alerts opened", "repeats", "actions"):
        table.add_column(col)
    for r in summary["releases"]:
        acts = ", ".join(f"{a['action']}{'' if a['done'] else ' (refused)'}" for a in r["actions"])
        table.add_row(
            r["release"],
            str(r["records"]),
            str(r["windows"]),
            str(len(r["alerts_opened"])),
            str(r["occurrences_counted"]),
            acts or "-",
        )
    out_console.print(table)
    for note in summary["notes"] + [n for r in summary["releases"] for n in r["notes"]]:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


@monitor_app.command("report", help="Write the monitoring report (HTML with plots) of a release.")
def report_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "monitoring-report.html"
    ),
    release: Annotated[
        str | None, typer.Option("--release", help="Release (default: the task's served release).")
    ] = None,
    task: TaskOption = None,
    since: Annotated[str | None, typer.Option("--since", help="Start of the period.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="End of the period.")] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application.monitoring import write_monitoring_report

    report = write_monitoring_report(
        workspace_from(workspace),
        out,
        release=release,
        task=task,
        since=time_option(since, "--since"),
        until=time_option(until, "--until"),
    )
    if json_:
        print_json(report)
    else:
        out_console.print(
            f"wrote {report['path']} ({report['period']['windows']} windows, "
            f"{len(report['alerts'])} alerts)"
        )


@monitor_app.command("alerts", help="List alerts; show, acknowledge or resolve one.")
def alerts_cmd(
    status: Annotated[
        str | None, typer.Option("--status", help="open, acknowledged or resolved.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="data, concept, workflow or fairness.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Last seen at or after.")] = None,
    show: Annotated[
        str | None, typer.Option("--show", help="Show one alert and its series.")
    ] = None,
    acknowledge: Annotated[
        str | None, typer.Option("--acknowledge", help="Acknowledge this alert.")
    ] = None,
    resolve: Annotated[str | None, typer.Option("--resolve", help="Resolve this alert.")] = None,
    comment: Annotated[
        str | None, typer.Option("--comment", help="Why (required to resolve); recorded.")
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--as", help="Who acts (default: $CLINICAL_MLOPS_ACTOR or the login name)."),
    ] = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import monitoring as uc

    ws = workspace_from(workspace)
    who = actor or current_actor()
    if acknowledge:
        if print_statement:
            text = uc.alert_statement(ws, acknowledge, person=who, comment=comment)
            print(text.decode("utf-8"), end="")
            return
        proof = act_proof(who, key, signature, statement)
        a = uc.acknowledge_alert(ws, acknowledge, actor=who, comment=comment, identity=proof)
        _one(a.to_json(), json_, f"acknowledged {a.id}: {a.summary}")
        return
    if resolve:
        a = uc.resolve_alert(ws, resolve, actor=who, comment=comment or "")
        _one(a.to_json(), json_, f"resolved {a.id}: {a.summary}")
        return
    if show:
        d = uc.show_alert(ws, show)
        line = f"{d['id']} [{d['status']}] {d['kind']}/{d['rule']} {d['severity']}: {d['summary']}"
        _one(d, json_, line)
        return
    found = uc.list_alerts(ws, status=status, kind=kind, since=time_option(since, "--since"))
    if json_:
        print_json({"alerts": [a.to_json() for a in found]})
        return
    table = CliTable(title=f"{len(found)} alerts")
    for col in ("id", "status", "kind", "rule", "subgroup", "severity", "action", "n", "last seen"):
        table.add_column(col)
    for a in found:
        table.add_row(
            a.id,
            a.status,
            a.kind,
            a.rule,
            a.subgroup or "",
            a.severity,
            a.action,
            str(a.occurrences),
            a.last_seen_at[:16],
        )
    out_console.print(table)


@monitor_app.command(
    "notify",
    help="Escalate overdue critical alerts along their rota and deliver the notifications due "
    "(e-mail, signed webhooks); --list shows every notification and the dead letters.",
)
def notify_cmd(
    list_: Annotated[
        bool, typer.Option("--list", help="Show notifications and dead letters; send nothing.")
    ] = False,
    alert: Annotated[
        str | None, typer.Option("--alert", help="With --list: only this alert's notifications.")
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import monitoring as uc

    ws = workspace_from(workspace)
    if list_:
        found = uc.alert_deliveries(ws, alert_id=alert)
        if json_:
            print_json(found)
            return
        table = CliTable(title=f"{len(found['deliveries'])} notifications")
        for col in ("alert", "recipient", "channel", "step", "status", "attempts", "last reason"):
            table.add_column(col)
        for d in found["deliveries"]:
            table.add_row(
                d["alert_id"],
                d["recipient"],
                d["channel"],
                str(d["step"]),
                d["status"],
                str(d["attempts"]),
                d["last_reason"] or "-",
            )
        out_console.print(table)
        for dead in found["dead_letters"]:
            err_console.print(
                f"[red]dead letter:[/] {dead['alert_id']} to {dead['recipient']} by "
                f"{dead['channel']} after {dead['attempts']} attempts: {dead['reason']}",
                highlight=False,
            )
        return
    done = uc.notify_alerts(ws)
    if json_:
        print_json(done)
        return
    out_console.print(
        f"delivered {done['delivered']}, failed {done['failed']} (to retry), "
        f"dead-lettered {done['dead']}, escalated {len(done['escalated'])}",
        highlight=False,
    )
    if done.get("note"):
        err_console.print(f"[yellow]note:[/] {done['note']}", highlight=False)


def _one(data: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        print_json(data)
    else:
        out_console.print(line, highlight=False)


@simulate_app.command("drift", help="Run the R-T8 ventilation drift scenario on simulated time.")
def drift_cmd(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Trained model version (default: the served release's)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            "-t",
            help="Task whose served release's model is simulated (default: the workspace's "
            "one task with releases).",
        ),
    ] = None,
    feature: Annotated[str, typer.Option("--feature", help="Flag input to shift.")] = "ventilation",
    target: Annotated[
        float, typer.Option("--target", help="Prevalence of the flag after the shift.")
    ] = 0.72,
    shifted_stays: Annotated[
        int, typer.Option("--shifted-stays", min=1, help="Stays in the shifted period.")
    ] = 2000,
    unshifted_hours: Annotated[
        float, typer.Option("--unshifted-hours", help="Hours of unshifted operation before.")
    ] = 72.0,
    rate: Annotated[
        float, typer.Option("--rate", help="Arrivals per simulated hour (Poisson).")
    ] = 40.0,
    outcome_delay_hours: Annotated[
        float, typer.Option("--outcome-delay-hours", help="Hours from prediction to outcome.")
    ] = 48.0,
    clean_days: Annotated[
        float, typer.Option("--clean-days", help="Days of unshifted stream for false alarms.")
    ] = 30.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated stream.")] = 7,
    outcome_slope: Annotated[
        float,
        typer.Option(
            "--outcome-slope",
            help="How much the newly flagged stays' outcomes still follow the model's reading "
            "of their physiology (0: not at all, 1: as before).",
        ),
    ] = 0.1,
    covariate_only: Annotated[
        bool,
        typer.Option(
            "--covariate-only",
            help="Shift the flag only, every outcome unchanged (no concept shift).",
        ),
    ] = False,
    governed: Annotated[
        bool,
        typer.Option(
            "--governed/--no-governed",
            help="Also run the scenario end to end through a governed release in a sandbox "
            "workspace: monitor, owner escalation, suspension, fallback, review, resumption.",
        ),
    ] = True,
    monitor_every: Annotated[
        int,
        typer.Option(
            "--monitor-every",
            help="Minutes between monitor runs (each evaluates 15-minute windows).",
        ),
    ] = 60,
    review_after_hours: Annotated[
        float, typer.Option("--review-after-hours", help="Hours from suspension to the review.")
    ] = 4.0,
    resume_after_hours: Annotated[
        float, typer.Option("--resume-after-hours", help="Hours from the review to resumption.")
    ] = 1.0,
    max_hours_after_shift: Annotated[
        float,
        typer.Option("--max-hours-after-shift", help="End of the governed run at the latest."),
    ] = 240.0,
    sandbox: Annotated[
        Path | None,
        typer.Option(
            "--sandbox",
            help="Keep the governed run's workspace in this new folder (default: discarded).",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the scenario's HTML report here.")
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application.drift_run import GovernedDrift
    from clinical_mlops.application.monitoring import simulate_drift
    from clinical_mlops.monitoring.scenarios import DriftScenario

    sc = DriftScenario(
        feature=feature,
        target_prevalence=target,
        shifted_stays=shifted_stays,
        unshifted_hours=unshifted_hours,
        rate_per_hour=rate,
        outcome_delay_hours=outcome_delay_hours,
        clean_days=clean_days,
        seed=seed,
        outcome_slope=None if covariate_only else outcome_slope,
    )
    schedule = (
        GovernedDrift(
            monitor_every_minutes=monitor_every,
            review_after_hours=review_after_hours,
            resume_after_hours=resume_after_hours,
            max_hours_after_shift=max_hours_after_shift,
        )
        if governed
        else None
    )
    with err_console.status(
        f"scoring the locked test stays, simulating a clean stream of {clean_days:g} days"
        + (" and running the governed release on simulated time" if governed else "")
    ):
        f = simulate_drift(
            workspace_from(workspace),
            sc,
            model=model,
            task=task,
            report=report,
            governed=schedule,
            sandbox=sandbox,
        )
    if json_:
        print_json(f)
        return
    _render_drift(f)
    if "governed" in f:
        _render_governed(f["governed"])


_STEPS = {
    "shift_start": "shift starts",
    "first_detection": "first detection",
    "owner_escalation": "escalated to the owner",
    "suspension": "automated use suspended",
    "first_fallback": "first fallback served",
    "review": "review recorded",
    "resume": "resumed",
    "first_model_prediction_after_resume": "first model prediction after",
}


def _render_governed(g: dict[str, Any]) -> None:
    table = CliTable(title=f"governed run of release {g['release']} (simulated time)")
    for col in ("step", "at", "hours after shift", "by", "ledger entry"):
        table.add_column(col)
    for key, words in _STEPS.items():
        e = g["timeline"].get(key)
        if e is None:
            table.add_row(words, "did not happen", "-", "-", "-")
            continue
        who = e.get("actor") or ""
        if key == "first_detection":
            who = f"system:monitor ({e.get('alert_id')})"
        seq = e.get("ledger_seq")
        table.add_row(
            words,
            e["at"][:19],
            f"{e['hours_since_shift']:.2f}",
            who,
            "-" if seq is None else str(seq),
        )
    out_console.print(table)
    a = g["auroc"]
    auroc = (
        "AUROC of the scored stream: no outcomes recorded on both sides of the shift yet"
        if a["drop_percent"] is None
        else f"AUROC of the scored stream before {a['before']} after {a['after']} "
        f"(drop {a['drop_percent']} %)"
    )
    out_console.print(
        f"{auroc}; fallbacks served {g['fallbacks_served']} "
        f"({g['fallbacks_while_suspended']} while suspended); {g['mechanism']}",
        highlight=False,
        markup=False,
    )
    out_console.print(
        "The people are simulated (demo identities): "
        + "; ".join(f"{k} — {v}" for k, v in g["people"].items() if k != "note"),
        highlight=False,
        markup=False,
    )


def _render_drift(f: dict[str, Any]) -> None:
    sc = f["scenario"]
    out_console.print(
        f"[bold]drift scenario[/] {sc['feature']} {f['feature_prevalence_before']:.1%} -> "
        f"{f['feature_prevalence_after']:.1%} in {sc['shifted_stays']} stays at "
        f"{sc['rate_per_hour']:g}/h after {f['shift_starts_after_hours']:g} h; outcomes after "
        f"{sc['outcome_delay_hours']:g} h",
        highlight=False,
    )
    table = CliTable(title="detection delay per detector")
    for col in ("detector", "hours", "shifted stays seen"):
        table.add_column(col)
    for name, hours in f["detection_delay_hours"].items():
        stays = f["detection_delay_stays"][name]
        table.add_row(
            name, "-" if hours is None else f"{hours:.2f}", "-" if stays is None else str(stays)
        )
    out_console.print(table)
    for action, hit in f["escalation"].items():
        if hit:
            out_console.print(
                f"{action}: {hit['rule']} after {hit['after_hours']:.2f} h "
                f"({hit['shifted_stays_seen']} shifted stays): {hit['summary']}",
                highlight=False,
                markup=False,
            )
    out_console.print(
        f"AUROC before {f['auroc_before']} after {f['auroc_after']} (validated "
        f"{f['auroc_validated']}); false alarms per 30 unshifted days: {f['false_alarms_30d']}",
        highlight=False,
    )
