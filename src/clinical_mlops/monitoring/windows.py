"""The windowed monitor: every ``window_minutes`` of real or simulated time, all statistics, all rules.

A :class:`Monitor` watches one release against its :class:`MonitorReference`
(task spec, reference profile, validated metrics, operating threshold). Given
the release's inference records and the outcomes and overrides known so far,
:meth:`Monitor.run` evaluates windows ending every ``window_minutes`` (15 by
default) and returns, per window, every monitored quantity and the rules that
fired. Everything is causal: a window sees only records stamped before its end,
outcomes that had *arrived* before its end, so a simulated run equals what a
live monitor would have said at that time.

What each statistic looks at (a window is 15 minutes; most statistics look further back,
because a handful of stays makes no distribution):

* inputs and score — PSI, KS / chi-square, missingness over the last
  ``input_lookback_hours`` (6 h), computed once at least ``min_window_stays``
  predictions are in that span (otherwise reported as insufficient, never as drift);
* ADWIN and Page-Hinkley — the whole score stream since the monitor started, one
  value per prediction; ADWIN on outcome minus probability, one value per outcome
  in order of arrival; a detection belongs to the window it happens in;
* outcome-linked metrics and subgroups — the latest ``outcome_window`` outcomes
  (2,000) that arrived no more than ``outcome_max_age_days`` ago, recomputed once
  at least 2.5 % of the window (50 outcomes) is new, carried forward otherwise;
* review workload — predictions routed to review per 100 scored and the latency of the
  cases decided, over the alert-volume look-back (24 h); open cases at the window's end;
* override rate — the last ``override_lookback_hours`` (24 h); zero overrides — the
  time the release was *in service* since its last override (or since the period's
  start), which must reach ``zero_override_days`` (7 d), with the predictions shown in
  the last ``zero_override_days``; alert volume — the last ``alert_volume_lookback_hours``
  (24 h). Zero overrides is the one rule that fires on an absence, so it is the one
  that counts service time: a release live for an hour has had no chance to be
  overridden for a week, however long the period looked back over.

A window with no new prediction, outcome or override is *idle*: it repeats the
figures of the last active window and raises nothing.
"""

from __future__ import annotations

import math
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.errors import ReferenceProfileMissing
from clinical_mlops.evaluation.fairness import group_masks
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.monitoring import drift
from clinical_mlops.monitoring.alerts import AlertSignal
from clinical_mlops.monitoring.fairness import group_metrics, subgroup_findings
from clinical_mlops.monitoring.outcomes import outcome_metrics
from clinical_mlops.monitoring.records import (
    CaseRecords,
    InferenceRecords,
    LinkedOutcomes,
    OutcomeRecords,
    OverrideRecords,
    iso,
    link_outcomes,
)
from clinical_mlops.monitoring.rules import (
    RULE_KINDS,
    RuleContext,
    firings,
    rule_table,
    workload_limits,
)
from clinical_mlops.registry.bundle import Bundle
from clinical_mlops.registry.profile import ReferenceProfile
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["Monitor", "MonitorReference", "MonitorRun", "WindowResult"]

_SERIES_WINDOWS = 48


class MonitorReference(BaseModel):
    """What a release is monitored against.

    ``profile`` is the bundle's reference profile (None: data drift is not
    monitored, and :attr:`notes` says so); ``validated_auroc`` and
    ``validated_subgroups`` (``"attribute=group"`` -> AUROC) come from the
    release's validation report; ``escalation`` is the release's resolved escalation
    policy from its ``deployment.json`` (empty for a release built before it had one).
    Built only from the typed documents, so a key renamed in either fails when the
    document is loaded, naming file and field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: TaskSpec
    release: str
    model_version: str
    threshold: float
    profile: ReferenceProfile | None
    validated_auroc: float | None
    validated_subgroups: dict[str, float] = Field(default_factory=dict)
    escalation: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_report(
        cls,
        *,
        spec: TaskSpec,
        release: str,
        model_version: str,
        threshold: float,
        profile: ReferenceProfile | None,
        report: ValidationReport | None,
        escalation: dict[str, Any] | None = None,
    ) -> MonitorReference:
        """Return the reference from a validation report (``report.json``) and a profile."""
        validated = None
        groups: dict[str, float] = {}
        if report is not None:
            value = report.test.auroc
            validated = float(value) if isinstance(value, int | float) else None
            groups = report.measured_subgroup_auroc()
        return cls(
            spec=spec,
            release=release,
            model_version=model_version,
            threshold=float(threshold),
            profile=profile,
            validated_auroc=validated,
            validated_subgroups=groups,
            escalation=dict(escalation or {}),
        )

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, release: str) -> MonitorReference:
        """Return the reference of a verified release bundle (profile and report from inside it)."""
        return cls.from_report(
            spec=bundle.spec(),
            release=release,
            model_version=bundle.model_version,
            threshold=bundle.threshold,
            profile=bundle.profile() if bundle.has("reference_profile.json") else None,
            report=bundle.report() if bundle.has("report.json") else None,
            escalation=bundle.deployment.get("escalation") or {},
        )

    @property
    def notes(self) -> tuple[str, ...]:
        out = []
        if self.profile is None:
            out.append(
                f"release {self.release}: its bundle has no reference profile "
                "(reference_profile.json), so input and score drift are not monitored; "
                "outcome, fairness and workflow monitoring still run"
            )
        if self.validated_auroc is None:
            out.append(
                f"release {self.release}: no validated AUROC in its report, so AUROC "
                "degradation cannot be measured"
            )
        return tuple(out)

    def require_profile(self) -> ReferenceProfile:
        """Return the reference profile; ``ReferenceProfileMissing`` if the bundle has none."""
        if self.profile is None:
            raise ReferenceProfileMissing(self.notes[0])
        return self.profile


@dataclass(frozen=True)
class WindowResult:
    """One evaluated window: its end, every quantity, the alert signals it raised."""

    at: float
    quantities: dict[str, Any]
    signals: tuple[AlertSignal, ...] = ()
    idle: bool = False

    @property
    def at_iso(self) -> str:
        return iso(self.at)


@dataclass
class MonitorRun:
    """The result of :meth:`Monitor.run`."""

    release: str
    windows: list[WindowResult]
    signals: list[AlertSignal]
    detections: dict[str, list[float]]
    n_records: int
    n_windows: int
    seconds: float
    notes: tuple[str, ...] = ()
    rejected: dict[str, int] = field(default_factory=dict)

    def first_signal(self, rule: str, *, after: float | None = None) -> AlertSignal | None:
        """Return the first signal of ``rule`` (at or after epoch ``after``), if any."""
        for s in self.signals:
            if s.rule == rule and (after is None or _epoch_iso(s.at) >= after):
                return s
        return None


def _epoch_iso(value: str) -> float:
    from clinical_mlops.monitoring.records import epoch

    return epoch(value)


def _run_cum(mask: np.ndarray) -> np.ndarray:
    return np.r_[0, np.cumsum(mask, dtype=np.int64)]


def _f(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


class Monitor:
    """Evaluates one release's records window by window; see the module docstring."""

    def __init__(self, reference: MonitorReference):
        self.ref = reference
        self.spec = reference.spec
        self.cfg = reference.spec.monitoring
        self.rules = rule_table(reference.spec)
        profile = reference.profile
        self.inputs: dict[str, drift.BinnedReference] = {}
        self.score_ref: drift.BinnedReference | None = None
        if profile is not None:
            declared = set(reference.spec.feature_names)
            self.inputs = {
                n: r
                for n, r in drift.reference_bins(profile.features).items()
                if n in declared and r.kind != "constant"
            }
            self.score_ref = drift.score_reference(profile.score)
        self.ref_missing = {
            n: float(e.missing_fraction)
            for n, e in (profile.features.items() if profile is not None else ())
        }
        self.ref_alert_rate = (
            profile.alert_rate(reference.threshold) if profile is not None else None
        )
        self.context = RuleContext(
            spec=reference.spec,
            inputs={n: r.kind for n, r in self.inputs.items()},
            reference_missing=self.ref_missing,
            reference_alert_rate=self.ref_alert_rate,
            workload=workload_limits(reference.spec, {"escalation": reference.escalation}),
        )

    # -- the run -------------------------------------------------------------------------------
    def run(
        self,
        inferences: InferenceRecords,
        outcomes: OutcomeRecords | None = None,
        overrides: OverrideRecords | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        keep_windows: bool = True,
        in_service: Sequence[tuple[float, float | None]] | None = None,
        cases: CaseRecords | None = None,
    ) -> MonitorRun:
        """Return every window from ``start`` to ``end`` (epoch seconds) with its quantities and signals.

        Defaults: from the first record's window to the window holding the last
        record, outcome or override. With ``keep_windows=False`` only windows that
        raised a signal are kept (long simulations). ``in_service`` lists the periods
        (epoch start, end or None while it lasts) the release was in service; the
        zero-override rule counts only that time. None: in service throughout.
        ``cases`` are the release's review cases (queue size and review latency; None:
        not measured).
        """
        started = _time.perf_counter()
        outcomes = outcomes or OutcomeRecords.empty()
        overrides = overrides or OverrideRecords.empty()
        w = 60.0 * self.cfg.window_minutes
        linked = link_outcomes(inferences, outcomes)
        times = [inferences.time, linked.time, overrides.time]
        first = min((float(t.min()) for t in times if len(t)), default=0.0)
        last = max((float(t.max()) for t in times if len(t)), default=first)
        start = math.floor(first / w) * w if start is None else start
        end = (math.floor(last / w) + 1) * w if end is None else end
        ends = np.arange(start + w, end + w / 2, w)
        state = _State(self, inferences, linked, overrides, start, in_service, cases)
        windows: list[WindowResult] = []
        signals: list[AlertSignal] = []
        recent: deque[tuple[str, dict[str, Any]]] = deque(maxlen=_SERIES_WINDOWS)
        previous: dict[str, Any] = {}
        state.set_ends(ends)
        for k, e in enumerate(ends):
            state.at(k)
            at = iso(float(e))
            if state.idle(float(e), w):
                q = previous | {"n_window": 0, "idle": 1}
                result = WindowResult(at=float(e), quantities=q, idle=True)
            else:
                q = state.quantities(float(e), w)
                fired = tuple(self._signal(f, at, recent) for f in firings(q, self.context))
                result = WindowResult(at=float(e), quantities=q, signals=fired)
                signals.extend(fired)
                previous = q
            recent.append((at, result.quantities))
            if keep_windows or result.signals:
                windows.append(result)
        rejected = {k: len(v) for k, v in linked.rejected.items()}
        return MonitorRun(
            release=self.ref.release,
            windows=windows,
            signals=signals,
            detections=state.detection_times(),
            n_records=len(inferences),
            n_windows=len(ends),
            seconds=_time.perf_counter() - started,
            notes=self.ref.notes,
            rejected=rejected,
        )

    def _signal(
        self, firing: Any, at: str, recent: deque[tuple[str, dict[str, Any]]]
    ) -> AlertSignal:
        rule = self.rules[firing.rule]
        series = tuple((t, _f(q.get(firing.quantity))) for t, q in recent)
        return AlertSignal(
            rule=firing.rule,
            kind=RULE_KINDS[firing.rule],
            severity=rule.severity,
            owner_role=rule.owner_role,
            action=rule.action,
            at=at,
            summary=firing.summary,
            quantity=firing.quantity,
            value=_f(firing.value),
            threshold=_f(firing.threshold),
            release=self.ref.release,
            model_version=self.ref.model_version,
            subgroup=firing.subgroup,
            detail=firing.detail | {"direction": firing.direction},
            series=series,
        )


class _State:
    """Precomputed running counts of one run, so each window costs O(bins), not O(records)."""

    def __init__(
        self,
        monitor: Monitor,
        inf: InferenceRecords,
        linked: LinkedOutcomes,
        overrides: OverrideRecords,
        start: float,
        in_service: Sequence[tuple[float, float | None]] | None = None,
        cases: CaseRecords | None = None,
    ):
        self.m = monitor
        cfg = monitor.cfg
        self.inf = inf
        self.linked = linked
        self.start = start
        self.in_service = (
            None
            if in_service is None
            else [(float(a), math.inf if b is None else float(b)) for a, b in in_service]
        )
        self.t = inf.time
        self.p = inf.probability
        standard: dict[str, np.ndarray] = {}
        refs, codes = [], []
        for name, ref in monitor.inputs.items():
            if name not in inf.inputs.columns:
                continue
            col = inf.inputs[name]
            values = (
                col.to_numpy(dtype=object)
                if ref.kind == "categorical"
                else pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            )
            refs.append(ref)
            codes.append(ref.codes(values))
            if ref.kind in ("numeric", "flag"):
                standard[name] = drift.standardised(ref, values)
        if monitor.score_ref is not None:
            refs.append(monitor.score_ref)
            codes.append(monitor.score_ref.codes(self.p))
        self.block = drift.InputBlock(refs, codes, n_records=len(inf))
        self.p_cum = np.r_[0.0, np.cumsum(self.p)]
        self.above_cum = _run_cum(self.p >= monitor.ref.threshold)
        self.shown_cum = _run_cum(inf.shown)
        routed = inf.escalated if len(inf.escalated) == len(inf) else np.zeros(len(inf), bool)
        self.routed_cum = _run_cum(routed)
        self.cases = cases
        if cases is not None:
            done = np.isfinite(cases.decided)
            self.case_opened = np.sort(cases.opened)
            order = np.argsort(cases.decided[done], kind="stable")
            self.case_decided = cases.decided[done][order]
            self.case_waited = (cases.decided[done] - cases.opened[done])[order] / 3600.0
        # Stream detectors are causal, so their detections are found once for the whole stream.
        streams: dict[str, np.ndarray] = dict(standard)
        if monitor.score_ref is not None:
            streams["score"] = drift.standardised(monitor.score_ref, self.p, score=True)
        self.det: dict[str, np.ndarray] = {}
        for name, z in streams.items():
            self.det[f"adwin:{name}"] = drift.detection_times(
                drift.Adwin(delta=cfg.adwin_delta), self.t, z
            )
            self.det[f"page_hinkley:{name}"] = drift.detection_times(
                drift.PageHinkley(
                    delta=cfg.page_hinkley_delta,
                    threshold=cfg.page_hinkley_threshold,
                    min_instances=cfg.page_hinkley_min_instances,
                ),
                self.t,
                z,
            )
        res = linked.y - self.p[linked.index] if len(linked) else np.array([])
        self.det["adwin:residual"] = drift.detection_times(
            drift.Adwin(delta=cfg.adwin_delta), linked.time, res
        )
        self.res_cum = np.r_[0.0, np.cumsum(res)]
        self.masks = group_masks(monitor.spec, inf.inputs) if len(inf) else {}
        seqs = set(inf.seq.tolist())
        ov = np.asarray(
            sorted(
                t
                for s, t, a in zip(
                    overrides.seq.tolist(), overrides.time.tolist(), overrides.action, strict=True
                )
                if a == "override" and s in seqs
            ),
            dtype=float,
        )
        self.override_t = ov
        self.feedback_t = np.sort(
            np.asarray(
                [
                    t
                    for s, t in zip(overrides.seq.tolist(), overrides.time.tolist(), strict=True)
                    if s in seqs
                ],
                dtype=float,
            )
        )
        self.rejected = {k: np.sort(v) for k, v in linked.rejected.items()}
        self._outcome_cache: tuple[tuple[int, int], dict[str, Any]] | None = None

    def detection_times(self) -> dict[str, list[float]]:
        return {k: v.tolist() for k, v in self.det.items()}

    def set_ends(self, ends: np.ndarray) -> None:
        """Prepare for windows ending at ``ends``; every look-up is then one vectorised search."""
        self.ends = ends
        self._positions: dict[tuple[int, float], np.ndarray] = {}
        self.k, self.e = 0, float(ends[0]) if len(ends) else 0.0

    def at(self, k: int) -> None:
        self.k, self.e = k, float(self.ends[k])

    def _idx(self, arr: np.ndarray, t: float) -> int:
        """Return how many values of sorted ``arr`` are below ``t`` (``t`` = window end - offset)."""
        key = (id(arr), round(self.e - t, 3))
        found = self._positions.get(key)
        if found is None:
            found = np.searchsorted(arr, self.ends - key[1], side="left")
            self._positions[key] = found
        return int(found[self.k])

    def idle(self, e: float, w: float) -> bool:
        for arr in (self.t, self.linked.time, self.feedback_t):
            if self._idx(arr, e) > self._idx(arr, e - w):
                return False
        return True

    def quantities(self, e: float, w: float) -> dict[str, Any]:
        cfg = self.m.cfg
        q: dict[str, Any] = {"idle": 0}
        hi = self._idx(self.t, e)
        q["n_window"] = hi - self._idx(self.t, e - w)
        lo = self._idx(self.t, e - 3600.0 * cfg.input_lookback_hours)
        n = hi - lo
        q["n_lookback"] = n
        q["score_mean"] = (self.p_cum[hi] - self.p_cum[lo]) / n if n else None
        for key, det in self.det.items():
            q[key] = self._idx(det, e) - self._idx(det, e - w)
        if not self.block.refs:
            pass  # no reference profile: data drift is not monitored (see the run's notes)
        elif n >= cfg.min_window_stays:
            q["insufficient_inputs"] = 0
            self._data_drift(q, lo, hi)
        else:
            q["insufficient_inputs"] = 1
        self._outcomes(q, e)
        self._workflow(q, e, hi)
        for reason, arr in self.rejected.items():
            q[f"outcomes_{reason}"] = self._idx(arr, e)
        return q

    def _service_seconds(self, a: float, e: float) -> float:
        """Return the seconds between ``a`` and ``e`` during which the release was in service."""
        if self.in_service is None:
            return e - a
        return sum(max(0.0, min(end, e) - max(begin, a)) for begin, end in self.in_service)

    def _data_drift(self, q: dict[str, Any], lo: int, hi: int) -> None:
        st = self.block.stats(lo, hi)
        n_all = hi - lo
        step = self.m.cfg.missingness_increase
        for j, ref in enumerate(self.block.refs):
            name = ref.name
            if name != "score":
                missing = int(st["missing"][j])
                base = self.m.ref_missing.get(name, 0.0)
                q[f"missing:{name}"] = missing / n_all
                # The exact test only matters once the increase passes the rule's size threshold.
                q[f"missing_p:{name}"] = (
                    drift.missingness_p(missing, n_all, base)
                    if missing / n_all - base >= step
                    else None
                )
            q[f"psi:{name}"] = _f(st["psi"][j])
            if ref.ordered:
                q[f"ks:{name}"] = _f(st["ks"][j])
                q[f"ks_p:{name}"] = _f(st["p"][j])
            else:
                q[f"chi2_p:{name}"] = _f(st["p"][j])

    def _outcomes(self, q: dict[str, Any], e: float) -> None:
        cfg = self.m.cfg
        lt = self.linked.time
        k_hi = self._idx(lt, e)
        k_lo = max(k_hi - cfg.outcome_window, self._idx(lt, e - 86400.0 * cfg.outcome_max_age_days))
        k_lo = min(k_lo, k_hi)
        step = max(1, cfg.outcome_window // 40)
        if self._outcome_cache is not None:
            (c_lo, c_hi), cached = self._outcome_cache
            if (c_lo, c_hi) == (k_lo, k_hi) or (
                k_hi - c_hi < step
                and k_hi - k_lo >= cfg.min_outcomes
                and c_hi - c_lo >= cfg.min_outcomes
            ):
                q.update(cached)
                return
        out: dict[str, Any] = {"n_outcomes": k_hi - k_lo}
        if k_hi - k_lo >= cfg.min_outcomes:
            idx = self.linked.index[k_lo:k_hi]
            y = self.linked.y[k_lo:k_hi]
            p = self.p[idx]
            metrics = outcome_metrics(
                y,
                p,
                validated_auroc=self.m.ref.validated_auroc,
                min_per_class=cfg.min_outcome_positives,
            )
            for key in (
                "auroc",
                "auroc_se",
                "auroc_degradation",
                "ece",
                "brier",
                "calibration_slope",
                "calibration_intercept",
                "prevalence",
                "mean_predicted",
            ):
                out[key] = metrics[key]
            out["n_outcome_positives"] = metrics["n_positive"]
            out["residual_mean"] = (self.res_cum[k_hi] - self.res_cum[k_lo]) / (k_hi - k_lo)
            self._fairness(out, idx, y, p)
        self._outcome_cache = ((k_lo, k_hi), out)
        q.update(out)

    def _fairness(self, out: dict[str, Any], idx: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
        cfg = self.m.cfg
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for attr, by_group in self.masks.items():
            groups[attr] = {}
            live = []
            for group, mask in by_group.items():
                sel = mask[idx]
                gm = group_metrics(
                    y[sel],
                    p[sel],
                    threshold=self.m.ref.threshold,
                    min_per_class=cfg.fairness_min_group_positives,
                )
                groups[attr][group] = gm
                sub = f"{attr}={group}"
                out[f"auroc:{sub}"] = gm["auroc"]
                for key in ("precision", "recall", "f1"):
                    out[f"{key}:{sub}"] = gm[key]
                if gm["auroc"] is not None:
                    live.append(gm["auroc"])
            out[f"gap:{attr}"] = max(live) - min(live) if len(live) >= 2 else None
        overall = out.get("auroc")
        if overall is None or self.m.ref.validated_auroc is None:
            return
        for f in subgroup_findings(
            groups,
            live_overall=overall,
            validated_overall=self.m.ref.validated_auroc,
            validated_groups=self.m.ref.validated_subgroups,
            confidence=cfg.fairness_confidence,
        ):
            out[f"widening:{f.subgroup}"] = f.widening
            out[f"widening_lb:{f.subgroup}"] = f.lower_bound

    def _workflow(self, q: dict[str, Any], e: float, hi: int) -> None:
        cfg = self.m.cfg
        lo = self._idx(self.t, e - 3600.0 * cfg.override_lookback_hours)
        shown = int(self.shown_cum[hi] - self.shown_cum[lo])
        overrides = self._idx(self.override_t, e) - self._idx(
            self.override_t, e - 3600.0 * cfg.override_lookback_hours
        )
        q["shown_lookback"] = shown
        q["overrides_lookback"] = overrides
        q["override_rate"] = overrides / shown if shown else None
        k = self._idx(self.override_t, e)
        last = self.override_t[k - 1] if k else self.start
        q["hours_since_override"] = self._service_seconds(float(last), e) / 3600.0
        zlo = self._idx(self.t, e - 86400.0 * cfg.zero_override_days)
        q["shown_zero_window"] = int(self.shown_cum[hi] - self.shown_cum[zlo])
        alo = self._idx(self.t, e - 3600.0 * cfg.alert_volume_lookback_hours)
        n = hi - alo
        rate = 100.0 * (self.above_cum[hi] - self.above_cum[alo]) / n if n else None
        q["alert_rate"] = rate
        ref = self.m.ref_alert_rate
        q["alert_volume_ratio"] = (
            rate / ref if rate is not None and ref and n >= cfg.min_window_stays else None
        )
        self._workload(q, e, alo, hi)

    def _workload(self, q: dict[str, Any], e: float, lo: int, hi: int) -> None:
        """Reviews per 100 scored, open cases and review latency (see ``monitoring.rules``)."""
        n = hi - lo
        q["review_lookback"] = n
        q["review_rate"] = 100.0 * (self.routed_cum[hi] - self.routed_cum[lo]) / n if n else None
        q["review_budget"] = self.m.context.workload.review_budget
        if self.cases is None:
            return
        q["open_cases"] = self._idx(self.case_opened, e) - self._idx(self.case_decided, e)
        since = self._idx(self.case_decided, e - 3600.0 * self.m.cfg.alert_volume_lookback_hours)
        waited = self.case_waited[since : self._idx(self.case_decided, e)]
        q["reviews_decided"] = len(waited)
        q["review_latency_median_hours"] = float(np.median(waited)) if len(waited) else None
        q["review_latency_p90_hours"] = float(np.quantile(waited, 0.9)) if len(waited) else None
