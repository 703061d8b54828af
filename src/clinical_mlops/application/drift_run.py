"""The published drift end to end on simulated time, through the real machinery.

:func:`run_governed_drift` builds a *sandbox* workspace (a temporary folder, or
``sandbox`` if named; its databases are always SQLite files inside it, whatever the
``CLINICAL_MLOPS_*_URL`` settings say) holding a copy of the model and its snapshot,
so the workspace simulated from is never written. There, on a simulated clock
(:class:`~clinical_mlops.clock.FixedClock`, starting at
:data:`~clinical_mlops.monitoring.scenarios.SIM_START`; nothing sleeps):

1. the demo people (:data:`~clinical_mlops.application.walkthrough.DEMO_PEOPLE`)
   take the model to an approved, served release; the compliance officer grants the
   monitor identity (``system:monitor``) the engineering role, so that it may suspend;
2. the arrivals of :func:`~clinical_mlops.monitoring.scenarios.plan_drift` (the
   unshifted period, then the concept shift, which goes on) are scored by the
   Predictor at their arrival times, each patient with consent for direct care;
   outcomes are recorded through the governance use case ``outcome_delay_hours``
   after each prediction (filed every 15 minutes), and a bedside clinician
   overrides ``override_rate`` of the predictions one hour after they were shown;
3. every ``monitor_every_minutes`` the monitor evaluates the 15-minute windows since
   its previous run over the records in the ledger and acts on the alerts it opens
   (:func:`~clinical_mlops.monitoring.runs.monitor_release`): a confirmed AUROC
   degradation is escalated to the release's owner and suspends the release, and
   from then on the Predictor serves the clinical-baseline fallback;
4. ``review_after_hours`` after the suspension the clinical reviewer acknowledges the
   alert and records a review of the release, with the reason in its checklist;
   ``resume_after_hours`` later the compliance officer resumes it; the run ends with
   the first model prediction after the resumption (or ``max_hours_after_shift``
   after the shift, with the steps that did not happen reported as such).

Review-queue workload (open cases, review latency) is not measured here: nobody
decides the cases the monitor routes to review. The same scenario and seed give the
same figures.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.errors import MonitoringError
from clinical_mlops.workspace import Workspace

__all__ = [
    "BEDSIDE_CLINICIAN",
    "OUTCOME_FEED",
    "REQUESTER",
    "RESUMER",
    "REVIEWER",
    "GovernedDrift",
    "run_governed_drift",
]

#: the simulated people of the human steps (demo identities) and the systems
REVIEWER = "demo.dr.lena.ortiz"
RESUMER = "demo.sam.okafor"
BEDSIDE_CLINICIAN = "sim.icu.clinician"
REQUESTER = "system:ehr"
OUTCOME_FEED = "system:lab-feed"
_WINDOW = timedelta(minutes=15)
_NEVER = 1e12


@dataclass(frozen=True)
class GovernedDrift:
    """The schedule of the governed run: the monitor's cadence and the people's delays."""

    monitor_every_minutes: int = 15
    review_after_hours: float = 4.0
    resume_after_hours: float = 1.0
    max_hours_after_shift: float = 240.0

    def check(self) -> None:
        problems = []
        if self.monitor_every_minutes < 15 or self.monitor_every_minutes % 15:
            problems.append("monitor_every_minutes: expected a multiple of the 15-minute window")
        if self.review_after_hours < 0 or self.resume_after_hours < 0:
            problems.append("review_after_hours, resume_after_hours: expected >= 0")
        if self.max_hours_after_shift <= 0:
            problems.append("max_hours_after_shift: expected > 0")
        if problems:
            raise MonitoringError("governed drift run: " + "; ".join(problems))


class _Sandbox(Workspace):
    """A workspace whose databases are always SQLite files inside its folder."""

    def database_url(self, store: str) -> str:
        if store not in ("meta", "ledger", "identity"):
            raise ValueError(f"unknown store {store!r}; expected meta, ledger or identity")
        return f"sqlite:///{self.path(store)}"


@contextmanager
def _sandbox(where: Path | None) -> Iterator[_Sandbox]:
    if where is None:
        with tempfile.TemporaryDirectory(prefix="clinical-mlops-drift-") as tmp:
            yield _Sandbox(Path(tmp).resolve())
        return
    path = Path(where).expanduser().resolve()
    if path.exists() and any(path.iterdir()):
        raise MonitoringError(
            f"--sandbox: {path} is not empty; name a new folder for the simulation's workspace"
        )
    path.mkdir(parents=True, exist_ok=True)
    yield _Sandbox(path)


def _copy_model(source: Workspace, sandbox: Workspace, model_version: str) -> None:
    import json

    from clinical_mlops.modeling.trained import model_folder

    folder = model_folder(source, model_version)
    shutil.copytree(folder, sandbox.models_dir / folder.name)
    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    snap = lineage["snapshot"]["id"]
    shutil.copytree(source.snapshots_dir / snap, sandbox.snapshots_dir / snap)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def run_governed_drift(
    source: Workspace,
    scenario: Any,
    *,
    model_version: str,
    threshold: float | None = None,
    schedule: GovernedDrift | None = None,
    sandbox: Path | None = None,
) -> dict[str, Any]:
    """Return the timeline and figures of the published drift run end to end (module docstring).

    ``scenario`` is a :class:`~clinical_mlops.monitoring.scenarios.DriftScenario`;
    ``threshold`` the operating threshold of the release built in the sandbox (the
    served release's, by default the task spec's).
    """
    from clinical_mlops.monitoring.scenarios import scored_test_stays

    sched = schedule or GovernedDrift()
    sched.check()
    stays = scored_test_stays(source, model_version=model_version)
    with _sandbox(sandbox) as ws:
        _copy_model(source, ws, model_version)
        figures = _run(ws, stays, scenario, sched, model_version=model_version, threshold=threshold)
        figures["sandbox"] = None if sandbox is None else str(ws.root)
    return figures


def _run(
    ws: Workspace,
    stays: Any,
    sc: Any,
    sched: GovernedDrift,
    *,
    model_version: str,
    threshold: float | None,
) -> dict[str, Any]:
    import numpy as np

    from clinical_mlops.application import governance as gov_uc
    from clinical_mlops.application.monitoring import acknowledge_alert
    from clinical_mlops.application.privacy import grant_consent
    from clinical_mlops.application.scoring import open_predictor
    from clinical_mlops.application.services import Services
    from clinical_mlops.application.walkthrough import DEMO_PEOPLE, demo_key, govern_demo_release
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.monitoring.alerts import AlertStore
    from clinical_mlops.monitoring.escalation import MONITOR_ACTOR
    from clinical_mlops.monitoring.records import read_ledger_records, service_periods
    from clinical_mlops.monitoring.runs import monitor_release
    from clinical_mlops.monitoring.scenarios import SIM_START, plan_drift
    from clinical_mlops.monitoring.windows import MonitorReference
    from clinical_mlops.registry.registry import Registry
    from clinical_mlops.serving.predictor import PredictionRequest
    from clinical_mlops.vocabulary import Role

    per_block_hours = sc.shifted_stays / sc.rate_per_hour
    plan = plan_drift(
        stays, sc, extra_blocks=math.ceil(sched.max_hours_after_shift / per_block_hours)
    )
    clock = FixedClock(SIM_START - timedelta(hours=2))
    shown = govern_demo_release(ws, model_version=model_version, clock=clock, threshold=threshold)
    release = shown["version"]
    clock.advance(timedelta(minutes=30))
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        gov_uc.grant_roles(
            gov,
            MONITOR_ACTOR,
            roles=[Role.ENGINEERING],
            actor=RESUMER,
            why="automatic suspension of a release whose discrimination is confirmed to have "
            "fallen (R-H2)",
        )
        reference = MonitorReference.from_bundle(reg.bundle(release), release=release)
    granted_at = clock.now()
    names = list(stays.inputs.columns)
    records = plan.inputs[names].to_dict(orient="records")
    shift_at = plan.shift_at
    end_at = shift_at + 3600.0 * sched.max_hours_after_shift
    delay = 3600.0 * sc.outcome_delay_hours
    rng = np.random.default_rng([sc.seed, 4])
    overridden = rng.random(len(plan.times)) < sc.override_rate

    consented: set[int] = set()
    scored: list[tuple[int, int, float, float]] = []  # plan index, audit seq, time, probability
    pending_outcomes: list[tuple[float, int, int]] = []  # due, audit seq, outcome
    pending_overrides: list[tuple[float, int]] = []
    fallbacks: list[tuple[int, float]] = []  # audit seq, time
    events: dict[str, dict[str, Any]] = {}
    opened_memo: dict[int, Any] = {}
    recorded: dict[int, int] = {}  # audit seq -> outcome recorded
    monitor_runs = windows = 0
    overrides_recorded = 0
    suspended_at = reviewed_at = resumed_at = None
    review_due = resume_due = None
    alert_id: str | None = None
    last_run = SIM_START
    i = 0
    tick = SIM_START
    with (
        # Statuses change only here, by the monitor or a person: re-read after each of them.
        open_predictor(ws, clock=clock, status_ttl=_NEVER) as predictor,
        AlertStore(ws, clock=clock) as store,
    ):
        services = Services.using(ws, ledger=predictor.ledger, clock=clock)
        led = predictor.ledger
        while tick.timestamp() <= end_at:
            tick_end = tick + _WINDOW
            # Arrivals of this quarter hour, each scored at its own time.
            while i < len(plan.times) and plan.times[i] < tick_end.timestamp():
                clock.set(_at(float(plan.times[i])))
                overrides_recorded += _due(
                    led, clock, pending_overrides, pending_outcomes, recorded, gov_uc
                )
                row = int(plan.rows[i])
                ident = f"sim-patient-{row}"
                if row not in consented:
                    grant_consent(
                        services,
                        subject=ident,
                        purposes=["direct_care"],
                        valid_from=datetime(2000, 1, 1, tzinfo=UTC),
                        actor="sim.admissions",
                    )
                    consented.add(row)
                features = {
                    k: (None if v != v else (v.item() if hasattr(v, "item") else v))
                    for k, v in records[i].items()
                }
                (res,) = predictor.predict_many(
                    [
                        PredictionRequest(
                            subject_id=ident,
                            purpose="direct_care",
                            setting=reference.spec.cohort.setting,
                            features=features,
                            request_id=f"sim-{i}",
                        )
                    ],
                    requester=REQUESTER,
                )
                t = float(plan.times[i])
                if res.status == "scored" and res.audit_seq is not None:
                    scored.append((i, res.audit_seq, t, float(res.probability or 0.0)))
                    pending_outcomes.append((t + delay, res.audit_seq, int(plan.y[i])))
                    if overridden[i]:
                        pending_overrides.append((t + 3600.0, res.audit_seq))
                    if (
                        resumed_at is not None
                        and "first_model_prediction_after_resume" not in events
                    ):
                        events["first_model_prediction_after_resume"] = _event(
                            t, res.audit_seq, REQUESTER, release=release
                        )
                elif res.status == "fallback" and res.audit_seq is not None:
                    fallbacks.append((res.audit_seq, t))
                    if "first_fallback" not in events:
                        events["first_fallback"] = _event(
                            t, res.audit_seq, REQUESTER, served=(res.fallback or {}).get("name")
                        )
                i += 1
            clock.set(tick_end)
            overrides_recorded += _due(
                led, clock, pending_overrides, pending_outcomes, recorded, gov_uc
            )
            tick = tick_end
            if "first_model_prediction_after_resume" in events:
                break
            # The monitor, on its schedule.
            if (tick - last_run) >= timedelta(minutes=sched.monitor_every_minutes):
                recs = read_ledger_records(
                    led, since=SIM_START - timedelta(days=1), until=tick, opened=opened_memo
                )
                inf = recs["inferences"].get(release)
                if inf is not None and len(inf):
                    with Registry.open(ws, clock=clock) as reg:
                        served = service_periods(led, tasks={release: reg.get(release).task})
                    entry = monitor_release(
                        store,
                        reference,
                        inf,
                        recs["outcomes"],
                        recs["overrides"],
                        since=last_run,
                        until=tick,
                        in_service=served.get(release),
                    )
                    monitor_runs += 1
                    windows += entry["windows"]
                    for action in entry["actions"]:
                        if (
                            action["action"] == "suspend"
                            and action["done"]
                            and suspended_at is None
                        ):
                            suspended_at = tick
                            alert_id = action["alert_id"]
                            review_due = tick + timedelta(hours=sched.review_after_hours)
                            told = action["detail"].get("owner_notified") or {}
                            events["owner_escalation"] = _event(
                                tick.timestamp(),
                                told.get("ledger_seq"),
                                MONITOR_ACTOR,
                                owner=told.get("owner"),
                                owner_role=told.get("owner_role"),
                                alert_id=alert_id,
                            )
                last_run = tick
                predictor.refresh()
            # The people, on theirs.
            if review_due is not None and reviewed_at is None and tick >= review_due:
                reviewed_at = tick
                events["review"] = _review(ws, clock, store, release, alert_id, acknowledge_alert)
                predictor.refresh()
                resume_due = tick + timedelta(hours=sched.resume_after_hours)
            if resume_due is not None and resumed_at is None and tick >= resume_due:
                resumed_at = tick
                with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
                    gov_uc.resume(
                        gov,
                        release,
                        actor=RESUMER,
                        identity=demo_key(ws, RESUMER),
                        why=f"review by {REVIEWER} recorded at "
                        f"{utc_iso(_at(events['review']['at']))}: the loss of discrimination comes "
                        "from post-operative patients ventilated under the new protocol; "
                        "automated recommendations resume while a recalibration is prepared",
                    )
                predictor.refresh()
        history = _ledger_events(led, release)
    return _figures(
        plan=plan,
        sc=sc,
        sched=sched,
        stays=stays,
        release=release,
        reference=reference,
        scored=[x for x in scored if x[1] in recorded],
        recorded=recorded,
        fallbacks=fallbacks,
        events=events,
        history=history,
        granted_at=granted_at,
        alerts=_first_alerts(ws, release, shift_at),
        counts={
            "predictions_scored": len(scored),
            "fallbacks_served": len(fallbacks),
            "outcomes_recorded": len(recorded),
            "overrides_recorded": overrides_recorded,
            "patients": len(consented),
            "monitor_runs": monitor_runs,
            "windows_evaluated": windows,
        },
        people=DEMO_PEOPLE,
    )


def _due(
    led: Any,
    clock: FixedClock,
    overrides: list[tuple[float, int]],
    outcomes: list[tuple[float, int, int]],
    recorded: dict[int, int],
    gov_uc: Any,
) -> int:
    """Record the overrides due by now (each at its time) and, at a quarter hour, the outcomes due."""
    now = clock.now().timestamp()
    done = 0
    while overrides and overrides[0][0] <= now:
        _, seq = overrides.pop(0)
        gov_uc.decide_case(
            led,
            seq,
            action="override",
            actor=BEDSIDE_CLINICIAN,
            reason_code="clinical-judgement",
            source="simulation",
        )
        done += 1
    if now % _WINDOW.total_seconds():
        return done
    ready = [o for o in outcomes if o[0] <= now]
    if ready:
        del outcomes[: len(ready)]
        for value in (0, 1):
            seqs = [s for _, s, y in ready if y == value]
            if seqs:
                gov_uc.record_outcome(led, prediction_seqs=seqs, outcome=value, actor=OUTCOME_FEED)
                recorded.update(dict.fromkeys(seqs, value))
    return done


def _event(at: float, seq: int | None, actor: str, **detail: Any) -> dict[str, Any]:
    return {"at": at, "ledger_seq": seq, "actor": actor} | {
        k: v for k, v in detail.items() if v is not None
    }


def _review(
    ws: Workspace, clock: FixedClock, store: Any, release: str, alert_id: str | None, ack: Any
) -> dict[str, Any]:
    """The clinical reviewer acknowledges the alert and records a review of the release."""
    from clinical_mlops.application import governance as gov_uc
    from clinical_mlops.application.walkthrough import demo_key
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.registry.registry import Registry

    reason = (
        f"alert {alert_id}: live AUROC fell more than 5 % below validation. The fall is "
        "confined to post-operative patients ventilated under the new protocol (their deaths "
        "come from surgical complications the model does not see); the other patients' "
        "figures hold"
    )
    if alert_id is not None:
        ack(
            ws,
            alert_id,
            actor=REVIEWER,
            comment=reason,
            clock=clock,
            identity=demo_key(ws, REVIEWER),
        )
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        gov_uc.record_review(
            gov,
            release,
            reviewer=REVIEWER,
            checklist={
                "calibration": reason,
                "fairness": "no subgroup alert open; the fall is confined to one protocol",
                "incidents": "no patient harm reported while the fallback was served",
                "documentation": "model card to state the new protocol as out of scope "
                "until recalibrated",
            },
            outcome="continue_with_actions",
            identity=demo_key(ws, REVIEWER),
        )
    return {"at": clock.now().timestamp(), "ledger_seq": None, "actor": REVIEWER, "reason": reason}


def _ledger_events(led: Any, release: str) -> dict[str, Any]:
    """Return the ledger seqs and times of the release's suspension, review, resumption and role grant."""
    out: dict[str, Any] = {}
    for view in led.read_from(0, types=("status_change", "review", "role_granted")):
        p = view.payload or {}
        when = view.entry.time
        if view.entry.type == "status_change" and p.get("release") == release:
            if p.get("to_status") == "suspended" and "suspension" not in out:
                out["suspension"] = (view.entry.seq, when, view.entry.actor, p.get("why"))
            elif p.get("from_status") == "suspended" and "resume" not in out:
                out["resume"] = (view.entry.seq, when, view.entry.actor, p.get("why"))
        elif view.entry.type == "review" and p.get("model_version") == release:
            out.setdefault("review", (view.entry.seq, when, view.entry.actor, p.get("outcome")))
        elif (
            view.entry.type == "role_granted"
            and view.entry.actor
            and (p.get("person") == "system:monitor")
        ):
            out.setdefault("monitor_role", (view.entry.seq, when, view.entry.actor, p))
    return out


def _first_alerts(ws: Workspace, release: str, shift_at: float) -> list[Any]:
    from clinical_mlops.monitoring.alerts import list_alerts
    from clinical_mlops.monitoring.records import epoch

    return sorted(
        (a for a in list_alerts(ws) if a.release == release and epoch(a.opened_at) > shift_at),
        key=lambda a: epoch(a.opened_at),
    )


def _figures(
    *,
    plan: Any,
    sc: Any,
    sched: GovernedDrift,
    stays: Any,
    release: str,
    reference: Any,
    scored: list[tuple[int, int, float, float]],
    recorded: dict[int, int],
    fallbacks: list[tuple[int, float]],
    events: dict[str, dict[str, Any]],
    history: dict[str, Any],
    granted_at: datetime,
    alerts: list[Any],
    counts: dict[str, int],
    people: dict[str, Any],
) -> dict[str, Any]:
    import numpy as np

    from clinical_mlops.evaluation.metrics import auroc
    from clinical_mlops.monitoring.records import epoch
    from clinical_mlops.monitoring.scenarios import (
        DETECTORS,
        SIM_START,
        drop_percent,
        outcome_mechanism,
    )

    shift_at = plan.shift_at
    shifted_times = plan.times[plan.n_before :]

    def stamp(at: float | None) -> dict[str, Any] | None:
        if at is None:
            return None
        return {
            "at": utc_iso(_at(at)),
            "hours_since_shift": round((at - shift_at) / 3600.0, 2),
        }

    def stays_seen(at: float) -> int:
        return int(np.searchsorted(shifted_times, at, side="left"))

    timeline: dict[str, Any] = {"shift_start": stamp(shift_at)}
    # Detection: per detector, the first alert of its rule opened after the shift.
    detection: dict[str, Any] = {}
    for name, (rule, sub) in DETECTORS.items():
        subgroup = sc.feature if sub == "feature" else None
        hit = next((a for a in alerts if a.rule == rule and a.subgroup == subgroup), None)
        detection[name] = (
            None
            if hit is None
            else (stamp(epoch(hit.opened_at)) or {})
            | {
                "shifted_stays_seen": stays_seen(epoch(hit.opened_at)),
                "alert_id": hit.id,
                "owner_role": hit.owner_role,
                "action": hit.action,
            }
        )
    first = min(
        (d for d in detection.values() if d is not None),
        key=lambda d: d["hours_since_shift"],
        default=None,
    )
    timeline["first_detection"] = first
    if "owner_escalation" in events:
        e = events["owner_escalation"]
        timeline["owner_escalation"] = (stamp(e["at"]) or {}) | {
            k: e.get(k) for k in ("ledger_seq", "actor", "owner", "owner_role", "alert_id")
        }
    else:
        timeline["owner_escalation"] = None
    for key in ("suspension", "review", "resume"):
        found = history.get(key)
        timeline[key] = (
            None
            if found is None
            else (stamp(epoch(found[1])) or {})
            | {
                "ledger_seq": found[0],
                "actor": found[2],
                "why" if key != "review" else "outcome": found[3],
            }
        )
    for key in ("first_fallback", "first_model_prediction_after_resume"):
        step = events.get(key)
        timeline[key] = (
            None
            if step is None
            else (stamp(step["at"]) or {}) | {k: v for k, v in step.items() if k != "at"}
        )
    # AUROC of what the model scored against the outcomes recorded for it: before the
    # shift, and the first ``shifted_stays`` shifted stays.
    idx = np.array([s[0] for s in scored], dtype=np.int64)
    prob = np.array([s[3] for s in scored], dtype=float)
    y = np.array([recorded[s[1]] for s in scored], dtype=np.int64)
    before = idx < plan.n_before
    after = (idx >= plan.n_before) & (idx < plan.n_before + sc.shifted_stays)
    a0 = auroc(y[before], prob[before]) if before.any() else None
    a1 = auroc(y[after], prob[after]) if after.any() else None
    sus = timeline["suspension"]
    res = timeline["resume"]
    sus_seq = sus["ledger_seq"] if sus else None
    res_seq = res["ledger_seq"] if res else None
    between = [
        s
        for s, _ in fallbacks
        if sus_seq is not None and s > sus_seq and (res_seq is None or s < res_seq)
    ]
    monitor_role = history.get("monitor_role")
    delay_h = first["hours_since_shift"] if first else None
    order = (
        "shift_start",
        "first_detection",
        "owner_escalation",
        "suspension",
        "first_fallback",
        "review",
        "resume",
        "first_model_prediction_after_resume",
    )
    timeline = {k: timeline[k] for k in order}
    return {
        "release": release,
        "model_version": reference.model_version,
        "scenario": asdict(sc) | {"start": SIM_START.isoformat()},
        "schedule": asdict(sched),
        "mechanism": outcome_mechanism(sc),
        "feature_prevalence_before": round(plan.prevalence_before, 4),
        "feature_prevalence_after": round(plan.prevalence_after, 4),
        "timeline": timeline,
        "detection": detection,
        "detection_delay_hours": delay_h,
        "detection_delay_stays": first["shifted_stays_seen"] if first else None,
        "detected_within_48h": delay_h is not None and delay_h <= 48.0,
        "auroc": {
            "before": None if a0 is None else round(float(a0), 4),
            "after": None if a1 is None else round(float(a1), 4),
            "drop_percent": drop_percent(a0, a1),
            "validated": None
            if reference.validated_auroc is None
            else round(float(reference.validated_auroc), 4),
            "stays_before": int(before.sum()),
            "stays_after": int(after.sum()),
        },
        "fallbacks_served": len(fallbacks),
        "fallbacks_while_suspended": len(between),
        "monitor_identity": {
            "identity": "system:monitor",
            "role": "engineering",
            "granted_by": RESUMER,
            "at": utc_iso(granted_at),
            "ledger_seq": monitor_role[0] if monitor_role else None,
            "why": "the monitor may suspend a release only with a role that may (R-H2)",
        },
        "people": {
            REVIEWER: f"{people[REVIEWER][0]}: acknowledges the alert and records the review",
            RESUMER: f"{people[RESUMER][0]}: grants the monitor its role, resumes the release",
            BEDSIDE_CLINICIAN: "clinician: overrides some predictions at the bedside",
            "note": "simulated people (demo identities); every step is a ledger entry",
        },
        "counts": counts,
    }
