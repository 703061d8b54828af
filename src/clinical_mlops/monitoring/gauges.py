"""Prometheus gauges for every monitored quantity (R-I2), read from the stored monitoring windows.

:class:`MonitoringCollector` is registered on the service's collector registry;
at each scrape it reads the newest stored window of every release and the open
alert counts from the workspace metadata database (two small queries) and turns
every quantity into a gauge sample. Names and labels are fixed by
:data:`FAMILIES`, so dashboards and alert rules can rely on them:

* per input (``input`` label, ``score`` for the risk score): PSI, KS statistic and
  p-value, chi-square p-value, missing fraction and its p-value;
* per stream detector (``detector`` = adwin or page_hinkley, ``stream`` = input,
  score or residual): detections in the newest window;
* per subgroup (``attribute``, ``group``): AUROC, precision, recall, F1 and the
  widening since validation; per attribute the AUROC gap;
* per release: AUROC and its degradation, ECE, Brier, calibration slope and
  intercept, outcomes in the window, override rate, hours since the last
  override, alert rate and its ratio to validation, outcomes set aside by rule,
  stays in the window and look-back, the window's end time; the review workload:
  reviews per 100 scored and the review budget, open cases, the median and 90th
  centile of the review latency;
* alerts by status, kind and severity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from clinical_mlops.database import open_metadata_engine
from clinical_mlops.monitoring import schema as t
from clinical_mlops.monitoring.windows import WindowResult
from clinical_mlops.workspace import Workspace

__all__ = ["FAMILIES", "PREFIX", "MonitoringCollector", "gauge_samples"]

PREFIX = "clinical_mlops_monitor_"
#: quantity key prefix -> (metric name, help, label names of the part after ":")
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "psi": ("psi", "Population stability index over the input look-back", ("input",)),
    "ks": ("ks_statistic", "Grouped Kolmogorov-Smirnov statistic", ("input",)),
    "ks_p": ("ks_pvalue", "Grouped Kolmogorov-Smirnov p-value", ("input",)),
    "chi2_p": ("chi2_pvalue", "Chi-square goodness-of-fit p-value", ("input",)),
    "missing": ("missing_fraction", "Fraction of stays with the input missing", ("input",)),
    "missing_p": ("missing_pvalue", "Binomial p-value of the missing fraction", ("input",)),
    "adwin": ("detections", "Stream detector detections in the window", ("stream",)),
    "page_hinkley": ("detections", "Stream detector detections in the window", ("stream",)),
    "auroc": ("subgroup_auroc", "AUROC of a subgroup on linked outcomes", ("attribute", "group")),
    "precision": ("subgroup_precision", "Precision (PPV) of a subgroup", ("attribute", "group")),
    "recall": ("subgroup_recall", "Recall (sensitivity) of a subgroup", ("attribute", "group")),
    "f1": ("subgroup_f1", "F1 of a subgroup at the operating threshold", ("attribute", "group")),
    "widening": (
        "subgroup_widening",
        "How much further a subgroup fell behind the population than at validation",
        ("attribute", "group"),
    ),
    "widening_lb": (
        "subgroup_widening_lower_bound",
        "Lower confidence bound of the subgroup widening",
        ("attribute", "group"),
    ),
    "gap": ("subgroup_auroc_gap", "Best minus worst subgroup AUROC", ("attribute",)),
}
_SCALAR_HELP: dict[str, str] = {
    "auroc": "Rolling AUROC on linked outcomes",
    "auroc_se": "Standard error of the rolling AUROC (Hanley-McNeil)",
    "auroc_degradation": "Relative AUROC drop from the validated value",
    "ece": "Expected calibration error (10 equal-width bins)",
    "brier": "Brier score on linked outcomes",
    "calibration_slope": "Calibration slope on linked outcomes",
    "calibration_intercept": "Calibration-in-the-large on linked outcomes",
    "prevalence": "Observed outcome rate in the outcome window",
    "mean_predicted": "Mean predicted risk in the outcome window",
    "residual_mean": "Mean outcome minus predicted risk in the outcome window",
    "n_outcomes": "Linked outcomes in the outcome window",
    "n_outcome_positives": "Outcomes present in the outcome window",
    "score_mean": "Mean predicted risk over the input look-back",
    "n_window": "Predictions in the window",
    "n_lookback": "Predictions in the input look-back",
    "insufficient_inputs": "1 when the look-back holds too few predictions for drift statistics",
    "idle": "1 when the window had no new prediction, outcome or override",
    "override_rate": "Overrides per prediction shown over the override look-back",
    "overrides_lookback": "Overrides in the override look-back",
    "shown_lookback": "Predictions shown to clinicians in the override look-back",
    "hours_since_override": "Hours in service since the last override (or the period's start)",
    "shown_zero_window": "Predictions shown over the zero-override span",
    "alert_rate": "Stays above the operating threshold per 100 over the alert-volume look-back",
    "alert_volume_ratio": "Alert rate divided by the validated alert rate",
    "outcomes_unknown": "Outcomes naming no prediction of the release (set aside)",
    "outcomes_duplicate": "Repeated outcomes (set aside)",
    "outcomes_conflicting": "Later outcomes disagreeing with the first (set aside)",
    "outcomes_invalid": "Outcomes not 0/1 or before their prediction (set aside)",
    "review_rate": "Predictions routed to human review per 100 scored over the alert-volume look-back",
    "review_budget": "The release's review budget (reviews per 100 scored predictions)",
    "review_lookback": "Predictions scored in the review-rate look-back",
    "open_cases": "Review cases of the release waiting for a decision",
    "reviews_decided": "Review cases decided in the review-latency look-back",
    "review_latency_median_hours": "Median hours from a case's opening to its decision",
    "review_latency_p90_hours": "90th centile of the hours from a case's opening to its decision",
}


def _value(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def gauge_samples(release: str, window: WindowResult) -> list[tuple[str, dict[str, str], float]]:
    """Return ``(metric name, labels, value)`` for every numeric quantity of ``window``."""
    out: list[tuple[str, dict[str, str], float]] = []
    for key, raw in window.quantities.items():
        v = _value(raw)
        if v is None:
            continue
        head, sep, tail = key.partition(":")
        if sep and head in FAMILIES:
            name, _, names = FAMILIES[head]
            parts = tail.split("=", 1) if len(names) == 2 else [tail]
            if len(parts) != len(names):
                continue
            labels = {"release": release} | dict(zip(names, parts, strict=True))
            if head in ("adwin", "page_hinkley"):
                labels["detector"] = head
            out.append((PREFIX + name, labels, v))
        elif not sep and key in _SCALAR_HELP:
            out.append((PREFIX + key, {"release": release}, v))
    out.append((PREFIX + "window_end_timestamp_seconds", {"release": release}, window.at))
    return out


def _help(metric: str) -> str:
    short = metric.removeprefix(PREFIX)
    for name, text, _ in FAMILIES.values():
        if name == short:
            return text
    if short == "window_end_timestamp_seconds":
        return "End of the newest evaluated monitoring window (Unix time)"
    if short == "alerts":
        return "Monitoring alerts by status, kind and severity"
    return _SCALAR_HELP.get(short, short)


class MonitoringCollector(Collector):
    """Collects the monitoring gauges of one workspace at scrape time."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._engine: sa.Engine | None = None

    def _db(self) -> sa.Engine:
        if self._engine is None:
            self._engine = open_metadata_engine(self.workspace.database_url("meta"), t.metadata)
        return self._engine

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Return every sample the next scrape will show."""
        from clinical_mlops.monitoring.runs import latest_windows

        engine = self._db()
        out = []
        for release, window in sorted(latest_windows(engine).items()):
            out += gauge_samples(release, window)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.alerts.c.status, t.alerts.c.kind, t.alerts.c.severity, sa.func.count()
                ).group_by(t.alerts.c.status, t.alerts.c.kind, t.alerts.c.severity)
            ).all()
        for status, kind, severity, n in rows:
            out.append(
                (PREFIX + "alerts", {"status": status, "kind": kind, "severity": severity}, n)
            )
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        label_sets: dict[str, list[str]] = {}
        grouped: dict[str, list[tuple[dict[str, str], float]]] = {}
        for name, labels, value in self.samples():
            grouped.setdefault(name, []).append((labels, value))
        for name, rows in grouped.items():
            keys = sorted({k for labels, _ in rows for k in labels})
            label_sets[name] = keys
            fam = GaugeMetricFamily(name, _help(name), labels=keys)
            for labels, value in rows:
                fam.add_metric([labels.get(k, "") for k in keys], value)
            families[name] = fam
        yield from families.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Nothing up front: the metric names depend on the stored windows.
        return iter(())
