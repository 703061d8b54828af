"""Monitoring use cases: a monitor run, the monitoring report, alerts, the drift simulation.

Every release these act on by default is the one the registry says is served: the
task's active approved release (``registry promote``, ``registry rollback``), the
release ``clinical-mlops serve`` loads. Nothing is picked from the files in the
workspace: a model that was trained later but never released is not what patients
were scored with, so it is never monitored or simulated unless named.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from clinical_mlops.application.governance import Proof
from clinical_mlops.clock import Clock
from clinical_mlops.errors import MonitoringError, ReleaseNotServable
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.monitoring import alerts as _alerts
from clinical_mlops.monitoring.alerts import Alert
from clinical_mlops.workspace import Workspace

__all__ = [
    "acknowledge_alert",
    "alert_deliveries",
    "alert_statement",
    "list_alerts",
    "notify_alerts",
    "resolve_alert",
    "run_monitor",
    "served_release",
    "show_alert",
    "simulate_drift",
    "write_monitoring_report",
]


def served_release(workspace: Workspace, task: str | None) -> tuple[str, str]:
    """Return (release version, model version) of the release ``task`` is served by.

    That is the task's active approved release in the registry; a task without one
    is an error naming what to do, never a guess among the trained models. With no
    ``task``, the one task the workspace has releases of (several: name one).
    """
    from clinical_mlops.registry.registry import Registry
    from clinical_mlops.registry.task_choice import registered_task

    with Registry.open(workspace) as reg:
        try:
            task = registered_task(reg, task)
        except ReleaseNotServable as exc:
            raise MonitoringError(
                f"no served release to monitor: {exc}; or name a release with --release or "
                "a trained model with --model"
            ) from exc
        active = reg.active(task)
    if active is None:
        raise MonitoringError(
            f"task {task} has no served release in workspace {workspace.root} (none is "
            "approved and active); name a release with --release or a trained model with --model"
        )
    return active.version, active.model_version


def run_monitor(
    workspace: Workspace,
    *,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    act: bool = True,
) -> dict[str, Any]:
    """Return the summary of one monitor run over the releases that served in the period.

    Windows since the last run are evaluated from the audit ledger, alerts raised and
    stored, and (unless ``act`` is false, a dry run) their actions taken: a review
    opened, an escalation, a suspension. ``task`` limits the run to that task's releases.
    """
    from clinical_mlops.monitoring.runs import run_monitor as _run

    return _run(workspace, task=task, since=since, until=until, act=act)


def write_monitoring_report(
    workspace: Workspace,
    out: Path,
    *,
    release: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Return the monitoring report of a release (without its plots), written as HTML to ``out``.

    ``release`` defaults to the task's served release. The report is built from the
    windows stored by monitor runs and the release's alerts, against the reference in
    its signed bundle; a release no run has covered yet gets a report saying so.
    """
    from clinical_mlops.monitoring.alerts import AlertStore
    from clinical_mlops.monitoring.report import monitoring_report, write_report
    from clinical_mlops.monitoring.runs import stored_windows
    from clinical_mlops.monitoring.windows import MonitorReference
    from clinical_mlops.registry.registry import Registry

    version = release or served_release(workspace, task)[0]
    with Registry.open(workspace) as reg:
        bundle = reg.bundle(version)
    ref = MonitorReference.from_bundle(bundle, release=version)
    windows = stored_windows(workspace, version, since=since, until=until)
    with AlertStore.open(workspace) as store:
        alerts = sorted(store.list(release=version), key=lambda a: a.opened_at)
    notes = list(ref.notes)
    if not windows:
        notes.append(f"no stored windows for {version}: run `clinical-mlops monitor run` first")
    report = monitoring_report(
        windows,
        alerts,
        spec=ref.spec,
        release=version,
        validated_auroc=ref.validated_auroc,
        title=f"Monitoring report: {ref.spec.title}",
        notes=notes,
    )
    path = write_report(report, out)
    return {k: v for k, v in report.items() if k != "plots"} | {"path": str(path)}


def list_alerts(
    workspace: Workspace,
    *,
    status: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
) -> list[Alert]:
    """Return the alerts matching ``status``, ``kind`` and last seen at or after ``since``."""
    return _alerts.list_alerts(workspace, status=status, kind=kind, since=since)


def show_alert(workspace: Workspace, alert_id: str) -> dict[str, Any]:
    """Return one alert with the series of its monitored quantity over time."""
    found = _alerts.get_alert(workspace, alert_id)
    return found.to_json() | {"series": _alerts.alert_series(workspace, alert_id)["points"]}


def alert_statement(
    workspace: Workspace, alert_id: str, *, person: str, comment: str | None = None
) -> bytes:
    """Return the statement of ``person`` acknowledging ``alert_id``, to sign with their SSH key
    (``ssh-keygen -Y sign -n clinical-mlops``; valid for 15 minutes)."""
    from clinical_mlops.application import governance as gov_uc
    from clinical_mlops.application.services import Services

    with Services.open(workspace) as services:
        return gov_uc.statement_of(
            services.governance,
            "acknowledge_alert",
            person=person,
            **_ack_fields(alert_id, comment),
        )


def _ack_fields(alert_id: str, comment: str | None) -> dict[str, Any]:
    return {"alert": alert_id, "comment": comment.strip() if comment else None}


def acknowledge_alert(
    workspace: Workspace,
    alert_id: str,
    *,
    actor: str,
    identity: Proof,
    comment: str | None = None,
    clock: Clock | None = None,
) -> Alert:
    """Return the alert acknowledged by ``actor`` (recorded in the ledger, with ``identity``).

    Acknowledging is a governed act of a person: ``identity`` is the identity a console or
    API session proved, or the person's signature of exactly this acknowledgement (a
    signed statement, or their registered SSH key to sign one with), verified before
    anything is recorded (``IdentityRefused`` otherwise; the alert stays open).
    """
    if isinstance(identity, VerifiedIdentity):
        verified = identity
    else:
        from clinical_mlops.application import governance as gov_uc
        from clinical_mlops.application.services import Services

        with Services.open(workspace, clock) as services:
            verified = gov_uc.prove(
                services.governance,
                identity,
                "acknowledge_alert",
                person=actor,
                **_ack_fields(alert_id, comment),
            )
    return _alerts.acknowledge_alert(
        workspace, alert_id, actor=actor, comment=comment, clock=clock, identity=verified
    )


def notify_alerts(workspace: Workspace, *, clock: Clock | None = None) -> dict[str, Any]:
    """Return what one notification pass did: overdue critical alerts escalated along their
    rota, then every notification due delivered, retried or dead-lettered (with the reason)."""
    from clinical_mlops.monitoring.notify import notify

    with _alerts.AlertStore.open(workspace, clock=clock) as store:
        return notify(store)


def alert_deliveries(workspace: Workspace, *, alert_id: str | None = None) -> dict[str, Any]:
    """Return the notifications (each with its attempts) and the dead letters of the workspace."""
    from clinical_mlops.monitoring.notify import dead_letters, deliveries

    with _alerts.AlertStore.open(workspace) as store:
        if alert_id is not None:
            store.get(alert_id)
        return {"deliveries": deliveries(store, alert_id), "dead_letters": dead_letters(store)}


def resolve_alert(
    workspace: Workspace, alert_id: str, *, actor: str, comment: str, clock: Clock | None = None
) -> Alert:
    """Return the alert resolved by ``actor``; the comment saying why is required."""
    return _alerts.resolve_alert(workspace, alert_id, actor=actor, comment=comment, clock=clock)


def simulate_drift(
    workspace: Workspace,
    scenario: Any,
    *,
    model: str | None = None,
    task: str | None = None,
    report: Path | None = None,
    governed: Any | None = None,
    sandbox: Path | None = None,
) -> dict[str, Any]:
    """Return the figures of the R-T8 drift scenario run on a model's locked test stays.

    ``model`` defaults to the model of ``task``'s served release. ``scenario`` is a
    :class:`~clinical_mlops.monitoring.scenarios.DriftScenario`. With ``report`` the
    scenario's HTML report is written there too and its path is in the figures.

    With ``governed`` (a :class:`~clinical_mlops.application.drift_run.GovernedDrift`
    schedule) the scenario also runs end to end through a governed release in a
    sandbox workspace (``sandbox``, else a temporary folder; ``workspace`` is only
    read): its figures are under ``"governed"`` and its timeline at the top level
    (``timeline``: shift, detection, escalation to the owner, suspension, first
    fallback, review, resumption, first model prediction after it).
    """
    from clinical_mlops.monitoring.scenarios import (
        count_alerts,
        drift_scenario,
        scored_test_stays,
    )

    threshold = None
    if model is None:
        release, version = served_release(workspace, task)
        from clinical_mlops.registry.registry import Registry

        with Registry.open(workspace) as reg:
            threshold = reg.get(release).threshold
    else:
        version = model
    stays = scored_test_stays(workspace, model_version=version)
    result = drift_scenario(stays, scenario)
    figures = dict(result.figures)
    if governed is not None:
        from clinical_mlops.application.drift_run import run_governed_drift

        run = run_governed_drift(
            workspace,
            scenario,
            model_version=version,
            threshold=threshold,
            schedule=governed,
            sandbox=sandbox,
        )
        figures["governed"] = run
        figures["timeline"] = run["timeline"]
        figures["auroc"] = run["auroc"]
        figures["fallbacks_served"] = run["fallbacks_served"]
    if report is not None:
        from clinical_mlops.monitoring.report import monitoring_report, write_report

        f = result.figures
        extra: dict[str, Any] = {
            "shift starts after (h)": f["shift_starts_after_hours"],
            "detection delay (h)": f["detection_delay_hours"],
            "detection delay (shifted stays)": f["detection_delay_stays"],
            "AUROC before / after": f"{f['auroc_before']} / {f['auroc_after']} "
            f"(drop {f['auroc_drop_percent']} %)",
            "outcomes of the shifted stays": f["outcome_mechanism"],
            "false alarms per 30 unshifted days": f["false_alarms_30d"],
        }
        if "governed" in figures:
            g = figures["governed"]
            extra["governed run, release"] = g["release"]
            for step, at in g["timeline"].items():
                extra[f"governed run: {step.replace('_', ' ')} (h after shift)"] = (
                    "did not happen" if at is None else at["hours_since_shift"]
                )
            extra["governed run: fallbacks served"] = g["fallbacks_served"]
        path = write_report(
            monitoring_report(
                result.run.windows,
                sorted(count_alerts(result.run.signals), key=lambda a: a.opened_at),
                spec=stays.reference.spec,
                release=stays.reference.release,
                validated_auroc=stays.reference.validated_auroc,
                title="Simulated drift scenario (R-T8)",
                extra=extra,
            ),
            report,
        )
        figures["report"] = str(path)
    return figures
