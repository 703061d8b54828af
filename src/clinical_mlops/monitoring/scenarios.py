"""Simulated operation on simulated time: the published drift scenario (R-T8) and planted faults.

The locked test stays are scored once (:func:`scored_test_stays`); a scenario
then builds a stream of arrivals, outcomes and clinician feedback on a
simulated clock and runs the same :class:`~clinical_mlops.monitoring.windows.Monitor`
the service uses. Nothing sleeps; the same seed gives the same stream and the
same figures.

* :func:`drift_scenario` — R-T8: an unshifted period, then ``shifted_stays`` test
  stays (2,000) whose ventilation flag is raised from its baseline (about 38 %) to
  72 % with every other input untouched (only the flag of randomly chosen
  unventilated stays is set), scored again by the model. The shift is a concept
  shift (:func:`protocol_outcomes`): a new protocol ventilates post-operative
  patients, so the model raises their risk because ventilation used to mean
  severity, while their outcomes no longer follow the physiology the model reads;
  the other stays keep their recorded outcomes. With ``outcome_slope=None`` it is
  the covariate shift alone (the same outcomes for every stay), which moves AUROC
  by about 1 %. Arrivals are a Poisson process at ``rate_per_hour``
  (40 by default, so the shifted stays span about 50 hours); a longer unshifted
  period resamples unshifted test stays with replacement. Outcomes arrive
  ``outcome_delay_hours`` after their prediction. It reports per detector the
  delay to its first alert in hours and in shifted stays seen, AUROC before and
  after, the escalations that fired, and the false alarms on a separate unshifted
  stream of at least 30 simulated days.
* :func:`fairness_scenario` — a planted degradation in one subgroup: from the
  shift time on, the group's predictions are shuffled among themselves (same
  score distribution, no discrimination left), so only outcome-linked monitoring
  can see it.
* :func:`workflow_scenario` — clinicians who never override, or who override
  most predictions.

Clinician feedback is simulated on every stream: each shown prediction is
overridden with probability ``override_rate`` (5 % by default) one hour later.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.errors import MonitoringError
from clinical_mlops.evaluation.metrics import auroc
from clinical_mlops.monitoring.alerts import Alert, AlertSignal, merge_signal
from clinical_mlops.monitoring.records import (
    InferenceRecords,
    OutcomeRecords,
    OverrideRecords,
    epoch,
)
from clinical_mlops.monitoring.windows import Monitor, MonitorReference, MonitorRun
from clinical_mlops.workspace import Workspace

__all__ = [
    "DETECTORS",
    "DriftPlan",
    "DriftResult",
    "DriftScenario",
    "ScoredStays",
    "Stream",
    "count_alerts",
    "drift_scenario",
    "drop_percent",
    "fairness_scenario",
    "plan_drift",
    "protocol_outcomes",
    "scored_test_stays",
    "workflow_scenario",
]

SIM_START = datetime(2026, 1, 5, tzinfo=UTC)
#: detector name in the scenario report -> (rule, subgroup: "feature" means the shifted input)
DETECTORS: dict[str, tuple[str, str | None]] = {
    "psi_input": ("input_psi", "feature"),
    "adwin_input": ("input_adwin", "feature"),
    "page_hinkley_input": ("input_page_hinkley", "feature"),
    "psi_score": ("score_psi", None),
    "adwin_score": ("score_adwin", None),
    "page_hinkley_score": ("score_page_hinkley", None),
    "auroc_degradation": ("auroc_degradation", None),
    "calibration": ("calibration", None),
    "adwin_residual": ("residual_adwin", None),
    "alert_volume": ("alert_volume", None),
}


@dataclass(frozen=True)
class ScoredStays:
    """The locked test stays scored once: inputs, outcomes, probabilities, and what they are checked against."""

    inputs: pd.DataFrame
    y: np.ndarray
    p: np.ndarray
    reference: MonitorReference
    model: Any

    def rescore(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the model's calibrated probabilities for changed inputs."""
        return np.asarray(self.model.probability(frame), dtype=float)


def scored_test_stays(workspace: Workspace, *, model_version: str) -> ScoredStays:
    """Return the locked test stays of ``model_version``'s snapshot, scored by the model.

    The reference profile is computed exactly as a release bundle computes it and
    the validated metrics are read from the model's validation report.
    """
    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
    from clinical_mlops.modeling.trained import TrainedModel, model_folder
    from clinical_mlops.registry.profile import reference_profile

    folder = model_folder(workspace, model_version)
    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    snapshot = open_snapshot(workspace, lineage["snapshot"]["id"])
    spec = snapshot.spec()
    model = TrainedModel.load(folder)
    test = locked_test_stays(snapshot)
    report_path = folder / "report.json"
    report = ValidationReport.load(report_path) if report_path.exists() else None
    reference = MonitorReference.from_report(
        spec=spec,
        release=f"{model_version} (simulated)",
        model_version=model_version,
        threshold=spec.thresholds.operating,
        profile=reference_profile(model, snapshot),
        report=report,
    )
    inputs = test[list(spec.feature_names)].reset_index(drop=True)
    return ScoredStays(
        inputs=inputs,
        y=test[spec.label.name].to_numpy(dtype=np.int64),
        p=np.asarray(model.probability(test), dtype=float),
        reference=reference,
        model=model,
    )


@dataclass
class Stream:
    """A simulated stream: predictions (rows of the scored stays, maybe changed), outcomes, feedback."""

    inferences: InferenceRecords
    outcomes: OutcomeRecords
    overrides: OverrideRecords
    y: np.ndarray

    def run(self, reference: MonitorReference, *, keep_windows: bool = True) -> MonitorRun:
        """Return the monitor's run over the whole stream, until the last outcome has arrived."""
        return Monitor(reference).run(
            self.inferences, self.outcomes, self.overrides, keep_windows=keep_windows
        )


def _arrivals(
    rng: np.random.Generator, n: int, *, rate_per_hour: float, start: float
) -> np.ndarray:
    gaps = rng.exponential(3600.0 / rate_per_hour, size=n)
    return start + np.cumsum(gaps)


def _resampled(
    stays: ScoredStays, rng: np.random.Generator, *, days: float, rate_per_hour: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return (test-stay rows drawn with replacement, Poisson arrival times) for ``days``."""
    n = max(1, round(rate_per_hour * 24 * days))
    times = _arrivals(rng, n, rate_per_hour=rate_per_hour, start=SIM_START.timestamp())
    return rng.integers(0, len(stays.p), size=n), times


def _stream(
    stays: ScoredStays,
    rows: np.ndarray,
    times: np.ndarray,
    *,
    rng: np.random.Generator,
    p: np.ndarray | None = None,
    inputs: pd.DataFrame | None = None,
    outcome_delay_hours: float,
    override_rate: float,
    release: str | None = None,
    y: np.ndarray | None = None,
) -> Stream:
    n = len(rows)
    frame = stays.inputs.iloc[rows].reset_index(drop=True) if inputs is None else inputs
    prob = stays.p[rows] if p is None else p
    seq = np.arange(n, dtype=np.int64)
    y = stays.y[rows] if y is None else y
    overridden = rng.random(n) < override_rate
    return Stream(
        inferences=InferenceRecords.build(
            release=release or stays.reference.release,
            model_version=stays.reference.model_version,
            seq=seq,
            time=times,
            probability=prob,
            inputs=frame,
        ),
        outcomes=OutcomeRecords.build(
            seq=seq, outcome=y, time=times + 3600.0 * outcome_delay_hours
        ),
        overrides=OverrideRecords.build(
            seq=seq[overridden],
            time=times[overridden] + 3600.0,
            action=["override"] * int(overridden.sum()),
        ),
        y=y,
    )


def _concat(a: Stream, b: Stream) -> Stream:
    offset = len(a.inferences)
    ia, ib = a.inferences, b.inferences
    return Stream(
        inferences=InferenceRecords.build(
            release=ia.release,
            model_version=ia.model_version,
            seq=np.r_[ia.seq, ib.seq + offset],
            time=np.r_[ia.time, ib.time],
            probability=np.r_[ia.probability, ib.probability],
            inputs=pd.concat([ia.inputs, ib.inputs], ignore_index=True),
        ),
        outcomes=OutcomeRecords.build(
            seq=np.r_[a.outcomes.seq, b.outcomes.seq + offset],
            outcome=np.r_[a.outcomes.outcome, b.outcomes.outcome],
            time=np.r_[a.outcomes.time, b.outcomes.time],
        ),
        overrides=OverrideRecords.build(
            seq=np.r_[a.overrides.seq, b.overrides.seq + offset],
            time=np.r_[a.overrides.time, b.overrides.time],
            action=a.overrides.action + b.overrides.action,
        ),
        y=np.r_[a.y, b.y],
    )


def count_alerts(signals: list[AlertSignal]) -> list[Alert]:
    """Return the alerts ``signals`` would open in an alert store nobody acts on (de-duplicated)."""
    active: dict[str, Alert] = {}
    opened: list[Alert] = []
    for s in sorted(signals, key=lambda s: s.at):
        merged = merge_signal(active.get(s.dedup_key), s)
        if merged is None:
            continue
        if s.dedup_key not in active:
            opened.append(merged)
        active[s.dedup_key] = merged
    return opened


@dataclass(frozen=True)
class DriftScenario:
    """Parameters of the R-T8 drift scenario (defaults: the published run)."""

    feature: str = "ventilation"
    target_prevalence: float = 0.72
    shifted_stays: int = 2000
    unshifted_hours: float = 72.0
    rate_per_hour: float = 40.0
    outcome_delay_hours: float = 48.0
    override_rate: float = 0.05
    clean_days: float = 30.0
    seed: int = 7
    #: how much the newly flagged stays' outcomes still follow the model's reading of their
    #: physiology (0: not at all, 1: as before); None: the covariate shift alone
    outcome_slope: float | None = 0.0

    def check(self, stays: ScoredStays) -> None:
        problems = []
        if self.outcome_slope is not None and not 0 <= self.outcome_slope <= 1:
            problems.append("outcome_slope: expected a number between 0 and 1 (or none)")
        if self.feature not in stays.inputs.columns:
            problems.append(f"feature: {self.feature!r} is not an input of this task")
        elif stays.reference.spec.feature(self.feature).kind != "flag":
            problems.append(f"feature: {self.feature!r} is not a flag (0/1)")
        if not 0 < self.target_prevalence < 1:
            problems.append("target_prevalence: expected a fraction between 0 and 1")
        if self.rate_per_hour <= 0:
            problems.append("rate_per_hour: expected a positive number of stays per hour")
        if self.clean_days < 30:
            problems.append("clean_days: the false-alarm stream must cover at least 30 days")
        if self.shifted_stays < 1 or self.unshifted_hours <= 0 or self.outcome_delay_hours < 0:
            problems.append("shifted_stays, unshifted_hours, outcome_delay_hours: expected > 0")
        if problems:
            raise MonitoringError("drift scenario: " + "; ".join(problems))


def _shift_flag(
    stays: ScoredStays, rows: np.ndarray, *, feature: str, target: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, float, float]:
    frame = stays.inputs.iloc[rows].reset_index(drop=True).copy()
    v = pd.to_numeric(frame[feature], errors="coerce").to_numpy(dtype=float, copy=True)
    present = ~np.isnan(v)
    before = float(np.nanmean(v))
    need = round(target * int(present.sum())) - int(np.nansum(v))
    off = np.flatnonzero(present & (v == 0))
    if need > len(off):
        raise MonitoringError(
            f"drift scenario: cannot raise {feature} to {target:.0%}; too few unflagged stays"
        )
    if need > 0:
        v[rng.choice(off, size=need, replace=False)] = 1.0
    frame[feature] = v
    return frame, before, float(np.nanmean(v))


def protocol_outcomes(
    p_before: np.ndarray, y: np.ndarray, newly: np.ndarray, *, slope: float, seed: int
) -> np.ndarray:
    """Return the outcomes of a stream whose newly flagged stays follow the new protocol.

    The mechanism of the published drift: a new protocol ventilates post-operative
    patients (planned ventilation after elective surgery). The model raises their
    risk, because ventilation used to mean severity, but their 48-hour mortality now
    comes from surgical complications (bleeding, a leaking anastomosis) that its
    inputs do not measure. For a newly flagged stay ``i`` the outcome is drawn from
    ``logit(q_i) = a + slope * logit(p_before_i)``, where ``p_before_i`` is the
    model's risk of the stay as it was (unflagged) and ``a`` keeps the group's
    mean risk at the mean of ``p_before``: as many of them die as before, but with
    ``slope`` 0 which of them die no longer follows the physiology the model reads.
    Other stays keep their recorded outcomes ``y``. Seeded: same seed, same outcomes.
    """
    from scipy.optimize import brentq
    from scipy.special import expit, logit

    out = np.asarray(y, dtype=np.int64).copy()
    idx = np.flatnonzero(newly)
    if not len(idx):
        return out
    z = logit(np.clip(p_before[idx], 1e-6, 1 - 1e-6))
    target = float(np.mean(p_before[idx]))
    a = brentq(lambda a: float(np.mean(expit(a + slope * z))) - target, -40.0, 40.0)
    rng = np.random.default_rng([seed, 2])
    out[idx] = (rng.random(len(idx)) < expit(a + slope * z)).astype(np.int64)
    return out


@dataclass(frozen=True)
class DriftPlan:
    """The arrivals of a drift scenario: when, which test stay, its inputs, the model's risk, the outcome.

    The first ``n_before`` arrivals are unshifted; every later one is shifted (the
    new protocol goes on). ``newly`` marks the stays whose flag the shift raised.
    """

    times: np.ndarray
    rows: np.ndarray
    inputs: pd.DataFrame
    p: np.ndarray
    y: np.ndarray
    newly: np.ndarray
    n_before: int
    prevalence_before: float
    prevalence_after: float

    @property
    def shift_at(self) -> float:
        return float(self.times[self.n_before])


def _shifted_block(
    stays: ScoredStays,
    sc: DriftScenario,
    rng: np.random.Generator,
    n: int,
    *,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, float, float]:
    n_test = len(stays.p)
    rows = rng.choice(n_test, size=n, replace=n > n_test)
    frame, before, after = _shift_flag(
        stays, rows, feature=sc.feature, target=sc.target_prevalence, rng=rng
    )
    was = pd.to_numeric(stays.inputs[sc.feature], errors="coerce").to_numpy(dtype=float)[rows]
    now = frame[sc.feature].to_numpy(dtype=float)
    newly = (now == 1) & (was != 1)
    p = stays.rescore(frame)
    y = stays.y[rows]
    if sc.outcome_slope is not None:
        y = protocol_outcomes(stays.p[rows], y, newly, slope=sc.outcome_slope, seed=seed)
    return rows, frame, p, y, newly, before, after


def plan_drift(
    stays: ScoredStays, scenario: DriftScenario | None = None, *, extra_blocks: int = 0
) -> DriftPlan:
    """Return the arrivals of the drift scenario (see the module docstring).

    The unshifted period and the first ``shifted_stays`` shifted stays are those of
    :func:`drift_scenario`; ``extra_blocks`` appends that many more blocks of
    ``shifted_stays`` shifted arrivals (the protocol goes on), each raised to the
    target prevalence, for a simulation that runs past the first block.
    """
    sc = scenario or DriftScenario()
    sc.check(stays)
    rng = np.random.default_rng(sc.seed)
    start = SIM_START.timestamp()
    n_before = max(1, round(sc.rate_per_hour * sc.unshifted_hours))
    times = _arrivals(rng, n_before + sc.shifted_stays, rate_per_hour=sc.rate_per_hour, start=start)
    before_rows = rng.integers(0, len(stays.p), size=n_before)
    rows, frame, p, y, newly, prev_before, prev_after = _shifted_block(
        stays, sc, rng, sc.shifted_stays, seed=sc.seed
    )
    parts = [(rows, frame, p, y, newly)]
    more = np.random.default_rng([sc.seed, 3])
    last = float(times[-1])
    extra_times = []
    for b in range(extra_blocks):
        t = _arrivals(more, sc.shifted_stays, rate_per_hour=sc.rate_per_hour, start=last)
        last = float(t[-1])
        extra_times.append(t)
        parts.append(_shifted_block(stays, sc, more, sc.shifted_stays, seed=sc.seed + 100 + b)[:5])
    return DriftPlan(
        times=np.concatenate([times, *extra_times]),
        rows=np.concatenate([before_rows, *(x[0] for x in parts)]),
        inputs=pd.concat(
            [stays.inputs.iloc[before_rows].reset_index(drop=True), *(x[1] for x in parts)],
            ignore_index=True,
        ),
        p=np.concatenate([stays.p[before_rows], *(x[2] for x in parts)]),
        y=np.concatenate([stays.y[before_rows], *(x[3] for x in parts)]),
        newly=np.concatenate([np.zeros(n_before, dtype=bool), *(x[4] for x in parts)]),
        n_before=n_before,
        prevalence_before=prev_before,
        prevalence_after=prev_after,
    )


@dataclass
class DriftResult:
    """The R-T8 scenario: its figures (``--json`` prints them) and the monitor run behind them."""

    figures: dict[str, Any]
    run: MonitorRun
    stream: Stream


def drift_scenario(stays: ScoredStays, scenario: DriftScenario | None = None) -> DriftResult:
    """Return the R-T8 scenario's figures and run (see the module docstring)."""
    sc = scenario or DriftScenario()
    plan = plan_drift(stays, sc)
    start = SIM_START.timestamp()
    n_before = plan.n_before
    times = plan.times
    n_test = len(stays.p)
    prev_before, prev_after = plan.prevalence_before, plan.prevalence_after
    # Overrides are drawn after the arrivals, from their own stream, in arrival order.
    rng = np.random.default_rng([sc.seed, 1])
    delay, override_rate = sc.outcome_delay_hours, sc.override_rate
    stream = _concat(
        _stream(
            stays,
            plan.rows[:n_before],
            times[:n_before],
            rng=rng,
            outcome_delay_hours=delay,
            override_rate=override_rate,
        ),
        _stream(
            stays,
            plan.rows[n_before:],
            times[n_before:],
            rng=rng,
            p=plan.p[n_before:],
            inputs=plan.inputs.iloc[n_before:].reset_index(drop=True),
            outcome_delay_hours=delay,
            override_rate=override_rate,
            y=plan.y[n_before:],
        ),
    )
    run = stream.run(stays.reference)
    shift_at = float(times[n_before])
    shifted_times = times[n_before:]
    delays_h: dict[str, float | None] = {}
    delays_n: dict[str, int | None] = {}
    for name, (rule, sub) in DETECTORS.items():
        subgroup = sc.feature if sub == "feature" else None
        hit = next(
            (
                s
                for s in run.signals
                if s.rule == rule and s.subgroup == subgroup and epoch(s.at) > shift_at
            ),
            None,
        )
        if hit is None:
            delays_h[name] = delays_n[name] = None
            continue
        at = epoch(hit.at)
        delays_h[name] = round((at - shift_at) / 3600.0, 2)
        delays_n[name] = int(np.searchsorted(shifted_times, at, side="left"))
    after_shift = [s for s in run.signals if epoch(s.at) > shift_at]
    escalation: dict[str, Any] = {}
    for action in ("escalate", "suspend", "open_review"):
        first = next((s for s in after_shift if s.action == action), None)
        escalation[action] = (
            None
            if first is None
            else {
                "rule": first.rule,
                "subgroup": first.subgroup,
                "after_hours": round((epoch(first.at) - shift_at) / 3600.0, 2),
                "shifted_stays_seen": int(np.searchsorted(shifted_times, epoch(first.at))),
                "summary": first.summary,
            }
        )
    before_alarms = count_alerts([s for s in run.signals if epoch(s.at) <= shift_at])
    clean = clean_stream(stays, sc)
    clean_run = clean.run(stays.reference, keep_windows=False)
    clean_alerts = count_alerts(clean_run.signals)
    n_b = n_before
    # Records are in time order and the shifted stays are the last ones.
    y, p = stream.y, stream.inferences.probability
    first_detection = min((h for h in delays_h.values() if h is not None), default=None)
    escalated_in = (escalation["escalate"] or escalation["suspend"] or {}).get("after_hours")
    figures = {
        "scenario": asdict(sc) | {"start": SIM_START.isoformat()},
        "model_version": stays.reference.model_version,
        "test_stays": n_test,
        "feature_prevalence_before": round(prev_before, 4),
        "feature_prevalence_after": round(prev_after, 4),
        "shift_starts_after_hours": round((shift_at - start) / 3600.0, 2),
        "shifted_span_hours": round((float(times[-1]) - shift_at) / 3600.0, 2),
        "detected": first_detection is not None,
        "detected_within_48h": first_detection is not None and first_detection <= 48.0,
        "escalated_within_48h": escalated_in is not None and escalated_in <= 48.0,
        "detection_delay_hours": delays_h,
        "detection_delay_stays": delays_n,
        "auroc_before": _round(auroc(y[:n_b], p[:n_b])),
        "auroc_after": _round(auroc(y[n_b:], p[n_b:])),
        "auroc_drop_percent": drop_percent(auroc(y[:n_b], p[:n_b]), auroc(y[n_b:], p[n_b:])),
        "newly_flagged_stays": int(plan.newly.sum()),
        "outcome_mechanism": outcome_mechanism(sc),
        "auroc_validated": _round(stays.reference.validated_auroc),
        "escalation": escalation,
        "alerts_after_shift": [_alert_row(a, shift_at) for a in count_alerts(after_shift)],
        "false_alarms_before_shift": len(before_alarms),
        "false_alarms_30d": round(len(clean_alerts) * 30.0 / sc.clean_days, 2),
        "false_alarm_alerts": [_alert_row(a, clean_run_start(clean)) for a in clean_alerts],
        "clean_stream": {
            "days": sc.clean_days,
            "stays": len(clean.inferences),
            "windows": clean_run.n_windows,
            "firing_windows": len({s.at for s in clean_run.signals}),
        },
        "monitor": {
            "records": run.n_records + clean_run.n_records,
            "windows": run.n_windows + clean_run.n_windows,
            "seconds": round(run.seconds + clean_run.seconds, 2),
        },
    }
    return DriftResult(figures=figures, run=run, stream=stream)


def drop_percent(before: float | None, after: float | None) -> float | None:
    """Return the relative fall from ``before`` to ``after`` in percent (None if either is unknown)."""
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return None
    return round(100.0 * (before - after) / before, 2)


def outcome_mechanism(sc: DriftScenario) -> str:
    """Return, in words, what happens to the outcomes of the shifted stays."""
    if sc.outcome_slope is None:
        return (
            f"covariate shift only: {sc.feature} raised in randomly chosen stays, "
            "every outcome unchanged"
        )
    return (
        f"concept shift: a new protocol sets {sc.feature} in post-operative patients; "
        "the model raises their risk (the flag used to mean severity) while their outcomes "
        "come from surgical complications its inputs do not measure: drawn at their usual "
        f"mean risk with slope {sc.outcome_slope:g} on the logit of their unflagged risk"
    )


def clean_run_start(stream: Stream) -> float:
    return float(stream.inferences.time[0]) if len(stream.inferences) else 0.0


def clean_stream(stays: ScoredStays, sc: DriftScenario) -> Stream:
    """Return the unshifted stream of ``clean_days`` used to count false alarms."""
    rng = np.random.default_rng(sc.seed + 1)
    rows, times = _resampled(stays, rng, days=sc.clean_days, rate_per_hour=sc.rate_per_hour)
    return _stream(
        stays,
        rows,
        times,
        rng=rng,
        outcome_delay_hours=sc.outcome_delay_hours,
        override_rate=sc.override_rate,
    )


def _alert_row(alert: Alert, origin: float) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "kind": alert.kind,
        "subgroup": alert.subgroup,
        "action": alert.action,
        "after_hours": round((epoch(alert.opened_at) - origin) / 3600.0, 2),
        "summary": alert.summary,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@dataclass(frozen=True)
class PlantedScenario:
    """A stream with a fault planted at ``fault_after_hours`` (fairness and workflow scenarios)."""

    days: float = 6.0
    fault_after_hours: float = 48.0
    rate_per_hour: float = 40.0
    outcome_delay_hours: float = 48.0
    override_rate: float = 0.05
    seed: int = 11


def fairness_scenario(
    stays: ScoredStays,
    *,
    attribute: str = "age_group",
    group: str = "80+",
    planted: bool = True,
    scenario: PlantedScenario | None = None,
) -> tuple[list[Alert], MonitorRun]:
    """Return the alerts opened and the run, with (or without) a degradation planted in one group."""
    from clinical_mlops.evaluation.fairness import group_masks

    sc = scenario or PlantedScenario()
    rng = np.random.default_rng(sc.seed)
    rows, times = _resampled(stays, rng, days=sc.days, rate_per_hour=sc.rate_per_hour)
    start = SIM_START.timestamp()
    masks = group_masks(stays.reference.spec, stays.inputs)
    if attribute not in masks or group not in masks[attribute]:
        raise MonitoringError(f"fairness scenario: no subgroup {attribute}={group} in this task")
    p = stays.p[rows].copy()
    if planted:
        hit = np.flatnonzero(
            masks[attribute][group][rows] & (times >= start + 3600.0 * sc.fault_after_hours)
        )
        p[hit] = p[rng.permutation(hit)]
    stream = _stream(
        stays,
        rows,
        times,
        rng=rng,
        p=p,
        outcome_delay_hours=sc.outcome_delay_hours,
        override_rate=sc.override_rate,
    )
    run = stream.run(stays.reference, keep_windows=False)
    return count_alerts(run.signals), run


def workflow_scenario(
    stays: ScoredStays, *, override_rate: float, scenario: PlantedScenario | None = None
) -> tuple[list[Alert], MonitorRun]:
    """Return the alerts opened and the run of a stream whose clinicians override at ``override_rate``."""
    sc = replace(scenario or PlantedScenario(days=9.0), override_rate=override_rate)
    rng = np.random.default_rng(sc.seed)
    rows, times = _resampled(stays, rng, days=sc.days, rate_per_hour=sc.rate_per_hour)
    stream = _stream(
        stays,
        rows,
        times,
        rng=rng,
        outcome_delay_hours=sc.outcome_delay_hours,
        override_rate=sc.override_rate,
    )
    run = stream.run(stays.reference, keep_windows=False)
    return count_alerts(run.signals), run
