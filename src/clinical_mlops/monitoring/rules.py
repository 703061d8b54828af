"""Alert rules: which window quantity fires, at which threshold, with what severity and action.

Thresholds come from the task spec (``thresholds`` and ``monitoring``); each rule's
severity, owner role and action come from :data:`DEFAULT_RULES`, overridable per
task in ``monitoring.rules``. Actions are ``open_review`` (a review item for the
governance board), ``escalate`` (cases routed to human review) or ``suspend``
(automated recommendations stop and the service serves its clinical-baseline
fallback). No rule ever retrains a model.

=====================  ========  ==============================================================
rule                   kind      fires when (per evaluated window)
=====================  ========  ==============================================================
input_psi              data      an input's PSI over the look-back >= ``thresholds.psi`` and its
                                 KS / chi-square p-value < ``test_alpha`` / number of inputs
input_missingness      data      an input's missing fraction is ``missingness_increase`` above
                                 the reference and the binomial p-value < ``test_alpha`` / inputs
input_adwin            data      river ADWIN detects a change in a numeric input or flag
input_page_hinkley     data      river Page-Hinkley detects a change in a numeric input or flag
score_psi              data      the score's PSI >= ``thresholds.psi`` and its KS p < ``test_alpha``
score_adwin            data      river ADWIN detects a change in the score stream
score_page_hinkley     data      river Page-Hinkley detects a change in the score stream
auroc_degradation      concept   live AUROC is ``thresholds.auroc_degradation`` (relative) below
                                 the validated AUROC, judged on a full outcome window only
                                 (a suspension must not rest on a few hundred outcomes)
calibration            concept   live ECE > ``max_ece`` (slope and intercept are reported,
                                 not alerted on: over 2,000 outcomes the slope's noise alone
                                 would cross any useful band)
residual_adwin         concept   river ADWIN detects a change in outcome minus probability
fairness_gap           fairness  a subgroup fell behind the population since validation by more
                                 than ``thresholds.subgroup_auroc_gap`` (lower confidence bound)
override_rate_high     workflow  overrides / predictions shown over the look-back >=
                                 ``max_override_rate``
override_rate_zero     workflow  no override for ``zero_override_days`` of the release's time
                                 in service (since its last override, or the period's start)
                                 while at least ``zero_override_min_shown`` predictions were
                                 shown in the last ``zero_override_days``
alert_volume           workflow  the share of stays above the operating threshold is outside
                                 ``alert_volume_band`` times the validated share
review_rate_high       workflow  predictions routed to review per 100 scored over the
                                 alert-volume look-back > the release's review budget
                                 (``escalation.max_reviews_per_100``), once the look-back holds
                                 ``min_window_stays`` predictions
queue_size_high        workflow  open review cases of the release > ``max_open_cases``
review_latency_high    workflow  the 90th centile of the time from a case's opening to its
                                 decision, over the cases decided in the alert-volume look-back
                                 (at least :data:`MIN_DECIDED_FOR_LATENCY`), >
                                 ``max_review_latency_hours``
=====================  ========  ==============================================================

The three workload limits: the review budget of the release's resolved escalation policy
(``deployment.json``, else the task spec's ``escalation.max_reviews_per_100``), and the
spec's ``monitoring.max_open_cases`` and ``monitoring.max_review_latency_hours``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clinical_mlops.tasks.spec import MONITORING_RULES, MonitoringRule, TaskSpec

__all__ = [
    "DEFAULT_RULES",
    "MIN_DECIDED_FOR_LATENCY",
    "RULE_KINDS",
    "WORKLOAD_RULES",
    "Firing",
    "RuleContext",
    "WorkloadLimits",
    "firings",
    "rule_table",
    "workload_limits",
]

#: decided cases the latency centiles need before the latency rule may fire
MIN_DECIDED_FOR_LATENCY = 5
#: the rules on the clinicians' review workload (their limits: :func:`workload_limits`)
WORKLOAD_RULES = ("review_rate_high", "queue_size_high", "review_latency_high")

RULE_KINDS: dict[str, str] = {
    "input_psi": "data",
    "input_missingness": "data",
    "input_adwin": "data",
    "input_page_hinkley": "data",
    "score_psi": "data",
    "score_adwin": "data",
    "score_page_hinkley": "data",
    "auroc_degradation": "concept",
    "calibration": "concept",
    "residual_adwin": "concept",
    "fairness_gap": "fairness",
    "override_rate_high": "workflow",
    "override_rate_zero": "workflow",
    "alert_volume": "workflow",
    "review_rate_high": "workflow",
    "queue_size_high": "workflow",
    "review_latency_high": "workflow",
}


def _r(severity: str, owner: str, action: str) -> MonitoringRule:
    return MonitoringRule.model_validate(
        {"severity": severity, "owner_role": owner, "action": action}
    )


#: rule -> severity, owner role, action (R-H2: drift, AUROC degradation, fairness gap and
#: anomalous volume escalate; a confirmed AUROC degradation suspends automated use).
DEFAULT_RULES: dict[str, MonitoringRule] = {
    "input_psi": _r("warning", "ml_engineer", "escalate"),
    "input_missingness": _r("warning", "ml_engineer", "open_review"),
    "input_adwin": _r("warning", "ml_engineer", "escalate"),
    "input_page_hinkley": _r("warning", "ml_engineer", "escalate"),
    "score_psi": _r("warning", "ml_engineer", "escalate"),
    "score_adwin": _r("warning", "ml_engineer", "escalate"),
    "score_page_hinkley": _r("warning", "ml_engineer", "escalate"),
    "auroc_degradation": _r("critical", "reviewer", "suspend"),
    "calibration": _r("warning", "reviewer", "open_review"),
    "residual_adwin": _r("warning", "reviewer", "open_review"),
    "fairness_gap": _r("critical", "compliance", "escalate"),
    "override_rate_high": _r("warning", "reviewer", "open_review"),
    "override_rate_zero": _r("warning", "reviewer", "open_review"),
    "alert_volume": _r("warning", "reviewer", "escalate"),
    "review_rate_high": _r("warning", "reviewer", "open_review"),
    "queue_size_high": _r("warning", "clinician", "open_review"),
    "review_latency_high": _r("warning", "clinician", "open_review"),
}
assert set(DEFAULT_RULES) == set(MONITORING_RULES) | set(WORKLOAD_RULES) == set(RULE_KINDS)


@dataclass(frozen=True)
class WorkloadLimits:
    """The limits of the workload rules for one release."""

    review_budget: float
    max_open_cases: int
    max_review_latency_hours: float


def _positive(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and value > 0 else None


def workload_limits(spec: TaskSpec, deployment: Mapping[str, Any] | None = None) -> WorkloadLimits:
    """Return the workload limits of a release: its review budget and the queue's limits.

    The review budget is the release's resolved escalation policy
    (``deployment.json`` ``escalation.max_reviews_per_100``), else the task spec's
    ``escalation.max_reviews_per_100``, else :data:`DEFAULT_REVIEW_BUDGET`; the queue's
    limits are the spec's ``monitoring.max_open_cases`` and
    ``monitoring.max_review_latency_hours`` when it declares them.
    """
    declared = (deployment or {}).get("escalation") or {}
    budget = _positive(declared.get("max_reviews_per_100") if isinstance(declared, dict) else None)
    return WorkloadLimits(
        review_budget=spec.escalation.max_reviews_per_100 if budget is None else budget,
        max_open_cases=spec.monitoring.max_open_cases,
        max_review_latency_hours=spec.monitoring.max_review_latency_hours,
    )


def rule_table(spec: TaskSpec) -> dict[str, MonitoringRule]:
    """Return every rule's severity, owner role and action for ``spec`` (defaults + overrides)."""
    return DEFAULT_RULES | dict(spec.monitoring.rules)


@dataclass(frozen=True)
class Firing:
    """One rule firing in one window, before it becomes an alert signal."""

    rule: str
    quantity: str
    value: float | None
    threshold: float | None
    direction: str
    summary: str
    subgroup: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleContext:
    """What the rules need besides the window's quantities."""

    spec: TaskSpec
    inputs: dict[str, str]  # monitored input -> kind (numeric, flag, categorical)
    reference_missing: dict[str, float]
    reference_alert_rate: float | None  # per 100 at the operating threshold
    workload: WorkloadLimits

    def label(self, name: str) -> str:
        try:
            return self.spec.feature(name).label
        except KeyError:
            return name


def _num(q: dict[str, Any], key: str) -> float | None:
    v = q.get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def firings(q: dict[str, Any], ctx: RuleContext) -> list[Firing]:
    """Return the rules that fire on one window's quantities ``q`` (see the module table)."""
    m = ctx.spec.monitoring
    th = ctx.spec.thresholds
    out: list[Firing] = []
    n_inputs = max(len(ctx.inputs), 1)
    per_input_alpha = m.test_alpha / n_inputs
    hours = f"{m.input_lookback_hours:g} h"
    for name, kind in ctx.inputs.items():
        value = _num(q, f"psi:{name}")
        p = _num(q, f"ks_p:{name}" if kind == "numeric" else f"chi2_p:{name}")
        if value is not None and p is not None and value >= th.psi and p < per_input_alpha:
            out.append(
                Firing(
                    "input_psi",
                    f"psi:{name}",
                    value,
                    th.psi,
                    "above",
                    f"Input drift: {ctx.label(name)} PSI {value:.2f} over the last {hours} "
                    f"(threshold {th.psi:g}, p = {p:.1e})",
                    subgroup=name,
                    detail={
                        "input": name,
                        "p_value": p,
                        "test": "ks" if kind == "numeric" else "chi2",
                    },
                )
            )
        share = _num(q, f"missing:{name}")
        mp = _num(q, f"missing_p:{name}")
        ref = ctx.reference_missing.get(name, 0.0)
        if (
            share is not None
            and mp is not None
            and share - ref >= m.missingness_increase
            and mp < per_input_alpha
        ):
            out.append(
                Firing(
                    "input_missingness",
                    f"missing:{name}",
                    share,
                    ref + m.missingness_increase,
                    "above",
                    f"Missing inputs: {ctx.label(name)} missing in {100 * share:.1f} % of stays "
                    f"over the last {hours} (validated {100 * ref:.1f} %)",
                    subgroup=name,
                    detail={"input": name, "reference": ref, "p_value": mp},
                )
            )
        for rule, key, words in (
            ("input_adwin", f"adwin:{name}", "ADWIN"),
            ("input_page_hinkley", f"page_hinkley:{name}", "Page-Hinkley"),
        ):
            if (_num(q, key) or 0) >= 1:
                out.append(
                    Firing(
                        rule,
                        f"psi:{name}",
                        _num(q, f"psi:{name}"),
                        None,
                        "change",
                        f"Input drift: {words} detected a change in {ctx.label(name)}",
                        subgroup=name,
                        detail={"input": name},
                    )
                )
    value = _num(q, "psi:score")
    p = _num(q, "ks_p:score")
    if value is not None and p is not None and value >= th.psi and p < m.test_alpha:
        out.append(
            Firing(
                "score_psi",
                "psi:score",
                value,
                th.psi,
                "above",
                f"Score drift: risk distribution PSI {value:.2f} over the last {hours} "
                f"(threshold {th.psi:g}, KS p = {p:.1e})",
                detail={"p_value": p},
            )
        )
    for rule, key, words in (
        ("score_adwin", "adwin:score", "ADWIN"),
        ("score_page_hinkley", "page_hinkley:score", "Page-Hinkley"),
    ):
        if (_num(q, key) or 0) >= 1:
            mean = _num(q, "score_mean")
            out.append(
                Firing(
                    rule,
                    "score_mean",
                    mean,
                    None,
                    "change",
                    f"Score drift: {words} detected a change in the risk stream "
                    f"(mean risk {100 * (mean or 0):.1f} % over the last {hours})",
                )
            )
    deg = _num(q, "auroc_degradation")
    full = (_num(q, "n_outcomes") or 0) >= m.outcome_window
    if deg is not None and full and deg >= th.auroc_degradation:
        out.append(
            Firing(
                "auroc_degradation",
                "auroc_degradation",
                deg,
                th.auroc_degradation,
                "above",
                f"Discrimination fell: live AUROC {q['auroc']:.3f} is {100 * deg:.1f} % below "
                f"the validated value (limit {100 * th.auroc_degradation:g} %), "
                f"over the last {q.get('n_outcomes')} outcomes",
                detail={"auroc": q.get("auroc"), "auroc_se": q.get("auroc_se")},
            )
        )
    ece = _num(q, "ece")
    slope = _num(q, "calibration_slope")
    if ece is not None and ece > m.max_ece:
        out.append(
            Firing(
                "calibration",
                "ece",
                ece,
                m.max_ece,
                "above",
                f"Calibration drift: ECE {ece:.3f} over the last {q.get('n_outcomes')} outcomes "
                f"(limit {m.max_ece:g})",
                detail={"calibration_slope": slope},
            )
        )
    if (_num(q, "adwin:residual") or 0) >= 1:
        out.append(
            Firing(
                "residual_adwin",
                "residual_mean",
                _num(q, "residual_mean"),
                None,
                "change",
                "Concept drift: ADWIN detected a change in observed-minus-predicted risk "
                f"(mean {(_num(q, 'residual_mean') or 0):+.3f} over the last "
                f"{q.get('n_outcomes')} outcomes)",
            )
        )
    for key in sorted(k for k in q if k.startswith("widening_lb:")):
        lb = _num(q, key)
        if lb is None or lb <= th.subgroup_auroc_gap:
            continue
        sub = key.split(":", 1)[1]
        attr, group = sub.split("=", 1)
        out.append(
            Firing(
                "fairness_gap",
                f"widening:{sub}",
                _num(q, f"widening:{sub}"),
                th.subgroup_auroc_gap,
                "above",
                f"Fairness: AUROC in {attr} {group} is {_num(q, f'auroc:{sub}') or 0:.3f}, fallen "
                f"{_num(q, f'widening:{sub}') or 0:.3f} further behind the population than at "
                f"validation (tolerance {th.subgroup_auroc_gap:g}, lower bound {lb:.3f})",
                subgroup=sub,
                detail={"attribute": attr, "group": group, "lower_bound": lb},
            )
        )
    rate = _num(q, "override_rate")
    shown = _num(q, "shown_lookback") or 0
    if rate is not None and shown >= m.min_shown_for_override_rate and rate >= m.max_override_rate:
        out.append(
            Firing(
                "override_rate_high",
                "override_rate",
                rate,
                m.max_override_rate,
                "above",
                f"Workflow: clinicians overrode {100 * rate:.0f} % of {int(shown)} predictions "
                f"shown in the last {m.override_lookback_hours:g} h "
                f"(limit {100 * m.max_override_rate:g} %)",
            )
        )
    since = _num(q, "hours_since_override")
    shown_zero = _num(q, "shown_zero_window") or 0
    if (
        since is not None
        and since >= 24 * m.zero_override_days
        and shown_zero >= m.zero_override_min_shown
    ):
        out.append(
            Firing(
                "override_rate_zero",
                "hours_since_override",
                since,
                24 * m.zero_override_days,
                "above",
                f"Workflow: no override in {since / 24:.1f} days in service while "
                f"{int(shown_zero)} predictions were shown (possible automation bias)",
            )
        )
    ratio = _num(q, "alert_volume_ratio")
    blo, bhi = m.alert_volume_band
    if ratio is not None and not blo <= ratio <= bhi:
        out.append(
            Firing(
                "alert_volume",
                "alert_volume_ratio",
                ratio,
                blo if ratio < blo else bhi,
                "below" if ratio < blo else "above",
                f"Workflow: {_num(q, 'alert_rate') or 0:.1f} high-risk alerts per 100 patients "
                f"over the last {m.alert_volume_lookback_hours:g} h, {ratio:.2f} times the "
                f"validated {ctx.reference_alert_rate or 0:.1f}",
            )
        )
    out += _workload(q, ctx)
    return out


def _workload(q: dict[str, Any], ctx: RuleContext) -> list[Firing]:
    """Return the workload rules that fire: review rate, queue size, review latency."""
    m, limits = ctx.spec.monitoring, ctx.workload
    hours = f"{m.alert_volume_lookback_hours:g} h"
    out = []
    rate = _num(q, "review_rate")
    scored = _num(q, "review_lookback") or 0
    if rate is not None and scored >= m.min_window_stays and rate > limits.review_budget:
        out.append(
            Firing(
                "review_rate_high",
                "review_rate",
                rate,
                limits.review_budget,
                "above",
                f"Workload: {rate:.1f} reviews per 100 of {int(scored)} predictions scored in "
                f"the last {hours}, above the release's review budget of "
                f"{limits.review_budget:g} per 100",
            )
        )
    open_cases = _num(q, "open_cases")
    if open_cases is not None and open_cases > limits.max_open_cases:
        out.append(
            Firing(
                "queue_size_high",
                "open_cases",
                open_cases,
                float(limits.max_open_cases),
                "above",
                f"Workload: {int(open_cases)} cases wait for review "
                f"(limit {limits.max_open_cases})",
            )
        )
    p90 = _num(q, "review_latency_p90_hours")
    decided = _num(q, "reviews_decided") or 0
    if (
        p90 is not None
        and decided >= MIN_DECIDED_FOR_LATENCY
        and (p90 > limits.max_review_latency_hours)
    ):
        median = _num(q, "review_latency_median_hours") or 0.0
        out.append(
            Firing(
                "review_latency_high",
                "review_latency_p90_hours",
                p90,
                limits.max_review_latency_hours,
                "above",
                f"Workload: nine in ten of the {int(decided)} cases decided in the last {hours} "
                f"waited up to {p90:.1f} h (median {median:.1f} h), above the limit of "
                f"{limits.max_review_latency_hours:g} h",
            )
        )
    return out
