"""Monitor runs over a workspace: read the audit ledger, evaluate windows, raise alerts, act.

:func:`run_monitor` is what ``clinical-mlops monitor run`` (and a scheduler, every
15 minutes) calls. For every release with inference records in the period it
loads the release's verified bundle (reference profile, validation report),
evaluates every complete window from ``since`` to ``until`` with the same
:class:`~clinical_mlops.monitoring.windows.Monitor` the simulations use, stores
each window's quantities (``mon_windows``: the Prometheus gauges, the report and
the drill-down plots read them), raises alerts through the de-duplicating store
and takes each new alert's action; then it escalates overdue critical alerts and
delivers the notifications due (:mod:`clinical_mlops.monitoring.notify`). Re-running over the same period changes
nothing: windows are replaced by identical ones and counted alerts are not
counted again.

Outcomes and overrides are read from the whole ledger up to ``until`` (an
outcome may arrive long after its prediction); inference records from ``since``.
The default period is the last 14 days, so the stream detectors have history.
When each release was in service comes from the registry's deployment, rollout and
retirement events in the ledger (:func:`~clinical_mlops.monitoring.records.service_periods`):
the zero-override rule counts only time in service, never the period's length.
The review cases (when each opened and was decided) are read as the queue reads them
(:func:`~clinical_mlops.monitoring.records.read_case_records`), for the queue size and
the review latency.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.database import open_metadata_engine
from clinical_mlops.errors import BundleSignatureInvalid, ReleaseNotFound
from clinical_mlops.hashing import canonical_json
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring import schema as t
from clinical_mlops.monitoring.alerts import AlertStore
from clinical_mlops.monitoring.escalation import (
    MONITOR_ACTOR,
    escalate_cases,
    escalated_through,
    take_action,
)
from clinical_mlops.monitoring.records import (
    CaseRecords,
    InferenceRecords,
    OutcomeRecords,
    OverrideRecords,
    epoch,
    read_case_records,
    read_ledger_records,
    service_periods,
)
from clinical_mlops.monitoring.windows import Monitor, MonitorReference, WindowResult
from clinical_mlops.workspace import Workspace

__all__ = [
    "DEFAULT_LOOKBACK",
    "latest_windows",
    "monitor_release",
    "run_monitor",
    "store_windows",
    "stored_windows",
]

DEFAULT_LOOKBACK = timedelta(days=14)


def _clean(quantities: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in quantities.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


def store_windows(engine: sa.Engine, release: str, windows: list[WindowResult]) -> int:
    """Return how many windows of ``release`` were written (replacing any stored for the same times)."""
    if not windows:
        return 0
    rows = [
        {
            "release": release,
            "window_end": w.at_iso,
            "n_inferences": int(w.quantities.get("n_window") or 0),
            "quantities": canonical_json(_clean(w.quantities)).decode("utf-8"),
        }
        for w in windows
    ]
    ends = [r["window_end"] for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(ends), 500):
            conn.execute(
                sa.delete(t.windows).where(
                    t.windows.c.release == release, t.windows.c.window_end.in_(ends[i : i + 500])
                )
            )
        conn.execute(sa.insert(t.windows), rows)
    return len(rows)


def _window(row: Any) -> WindowResult:
    q = json.loads(row.quantities)
    return WindowResult(at=epoch(row.window_end), quantities=q, idle=bool(q.get("idle")))


def stored_windows(
    workspace: Workspace,
    release: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[WindowResult]:
    """Return the stored windows of ``release`` in time order (optionally within a period)."""
    engine = open_metadata_engine(workspace.database_url("meta"), t.metadata)
    try:
        query = sa.select(t.windows).where(t.windows.c.release == release)
        if since is not None:
            query = query.where(t.windows.c.window_end >= utc_iso(since))
        if until is not None:
            query = query.where(t.windows.c.window_end <= utc_iso(until))
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(t.windows.c.window_end)).all()
    finally:
        engine.dispose()
    return [_window(r) for r in rows]


def latest_windows(engine: sa.Engine) -> dict[str, WindowResult]:
    """Return the newest stored window of every release (what the gauges show)."""
    newest = (
        sa.select(t.windows.c.release, sa.func.max(t.windows.c.window_end).label("end"))
        .group_by(t.windows.c.release)
        .subquery()
    )
    query = sa.select(t.windows).join(
        newest,
        sa.and_(t.windows.c.release == newest.c.release, t.windows.c.window_end == newest.c.end),
    )
    with engine.connect() as conn:
        return {r.release: _window(r) for r in conn.execute(query)}


def run_monitor(
    workspace: Workspace,
    *,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    clock: Clock | None = None,
    actor: str = MONITOR_ACTOR,
    act: bool = True,
) -> dict[str, Any]:
    """Return a summary of one monitor run over the workspace's ledger (see the module docstring).

    ``act=False`` raises and stores alerts but takes no action (a dry run for a
    new rule set). Releases whose bundle no longer verifies are skipped with a
    note, never monitored against a reference that may have been altered.
    """
    from clinical_mlops.registry.registry import Registry

    clock = clock or SystemClock()
    until = until or clock.now()
    since = since or until - DEFAULT_LOOKBACK
    summary: dict[str, Any] = {
        "since": utc_iso(since),
        "until": utc_iso(until),
        "releases": [],
        "notes": [],
    }
    with (
        Ledger.open(workspace, clock=clock) as led,
        Registry.open(workspace, clock=clock) as reg,
        AlertStore(workspace, clock=clock) as store,
    ):
        records = read_ledger_records(led, since=since, until=until)
        cases = read_case_records(led, until=until)
        served = service_periods(led, tasks={r.version: r.task for r in reg.list()}, until=until)
        if records["unreadable"]:
            summary["notes"].append(
                f"{records['unreadable']} erased or purged records could not be read and were left out"
            )
        for release, inf in sorted(records["inferences"].items()):
            try:
                rel = reg.get(release)
                if task is not None and rel.task != task:
                    continue
                bundle = reg.bundle(release)
            except (ReleaseNotFound, BundleSignatureInvalid) as exc:
                summary["notes"].append(f"release {release} not monitored: {exc}")
                continue
            reference = MonitorReference.from_bundle(bundle, release=release)
            entry = monitor_release(
                store,
                reference,
                inf,
                records["outcomes"],
                records["overrides"],
                since=since,
                until=until,
                in_service=served.get(release),
                cases=cases.get(release) or CaseRecords.empty(),
                actor=actor,
                act=act,
            )
            summary["releases"].append({"release": release, "task": rel.task} | entry)
        if act:
            from clinical_mlops.monitoring.notify import notify

            # After the alerts are stored: a receiver that is down delays only its own
            # notification, never the run's alerts or actions.
            summary["notifications"] = notify(store)
            if note := summary["notifications"].get("note"):
                summary["notes"].append(note)
    return summary


def monitor_release(
    store: AlertStore,
    reference: MonitorReference,
    inf: InferenceRecords,
    outcomes: OutcomeRecords,
    overrides: OverrideRecords,
    *,
    since: datetime,
    until: datetime,
    in_service: list[tuple[float, float | None]] | None = None,
    cases: CaseRecords | None = None,
    actor: str = MONITOR_ACTOR,
    act: bool = True,
) -> dict[str, Any]:
    """Return what one run did for one release: windows evaluated and stored, alerts, actions.

    Evaluates every complete window from ``since`` to ``until`` over the release's
    records, stores the windows, raises each signal through the de-duplicating store
    and, unless ``act`` is false, takes each new alert's action and keeps routing the
    newer cases of an active escalate-alert. ``in_service`` None: the release's first
    record here is the earliest its service is known to have started. ``cases`` None:
    the review-queue rules are not measured.
    """
    release = reference.release
    w = 60.0 * reference.spec.monitoring.window_minutes
    run = Monitor(reference).run(
        inf,
        outcomes,
        overrides,
        start=math.floor(since.timestamp() / w) * w,
        end=math.floor(until.timestamp() / w) * w,
        in_service=in_service or [(float(inf.time.min()), None)],
        cases=cases,
    )
    stored = store_windows(store.engine, release, run.windows)
    opened, repeated, actions = [], 0, []
    for signal in run.signals:
        alert, created = store.raise_alert(signal, actor=actor)
        if alert is None:
            continue
        if not created:
            repeated += 1
            continue
        opened.append(alert.id)
        if act:
            result = take_action(
                store,
                alert,
                actor=actor,
                records=inf,
                lookback_hours=reference.spec.monitoring.input_lookback_hours,
                after_seq=_routed_through(store, release, alert.id),
            )
            actions.append(result.to_json())
    if act:
        actions += _keep_escalating(store, release, inf, actor=actor, opened=opened)
    return {
        "records": run.n_records,
        "windows": run.n_windows,
        "windows_stored": stored,
        "alerts_opened": opened,
        "occurrences_counted": repeated,
        "actions": actions,
        "outcomes_set_aside": run.rejected,
        "notes": list(run.notes),
        "seconds": round(run.seconds, 3),
    }


def _routed_through(store: AlertStore, release: str, alert_id: str) -> int | None:
    """Return the last case seq another active alert of ``release`` already routed to review."""
    seqs = [
        escalated_through(a)
        for a in store.list(status=("open", "acknowledged"), release=release)
        if a.id != alert_id and a.action == "escalate"
    ]
    known = [s for s in seqs if s is not None]
    return max(known) if known else None


def _keep_escalating(
    store: AlertStore, release: str, inf: Any, *, actor: str, opened: list[str]
) -> list[dict[str, Any]]:
    """Route cases newer than the last escalated one while an escalate-alert stays active."""
    out: list[dict[str, Any]] = []
    active = [
        a
        for a in store.list(status=("open", "acknowledged"), release=release)
        if a.action == "escalate" and a.id not in opened
    ]
    if not active:
        return out
    # One routing per release: the alert that has routed furthest carries it on.
    carrier = max(active, key=lambda a: escalated_through(a) or -1)
    through = escalated_through(carrier)
    if through is None:
        return out
    result = escalate_cases(store, carrier, inf, actor=actor, after_seq=through, first=False)
    if result.detail["cases"]:
        out.append(result.to_json())
    return out
