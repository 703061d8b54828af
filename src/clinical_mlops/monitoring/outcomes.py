"""Outcome-linked metrics (R-O1): discrimination and calibration as outcomes arrive.

Computed over the latest ``outcome_window`` linked outcomes (a count, not a time
span, so the noise of every figure stays the same whatever the traffic), and
only once ``min_outcomes`` outcomes with at least ``min_outcome_positives`` of
each class are there. Definitions are the validation report's
(:mod:`clinical_mlops.evaluation.metrics`): AUROC (Mann-Whitney, ties one half),
ECE over 10 equal-width bins, calibration slope and calibration-in-the-large
from logistic recalibration. AUROC degradation is relative to the validated
value: ``(validated - live) / validated``, so 0.05 means 5 % worse.

The AUROC standard error is Hanley & McNeil's (1982) approximation, used to
state how sure a subgroup comparison is (:mod:`clinical_mlops.monitoring.fairness`);
for most score distributions it is wider than the bootstrap's, so it errs
towards not alerting.

Monitoring recomputes these every window, so AUROC and ECE have lean versions
here (:func:`rank_auroc`, :func:`ece`) that equal the report's to floating-point
precision (tested against :mod:`clinical_mlops.evaluation.metrics` and scikit-learn).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clinical_mlops.evaluation.metrics import calibration_slope_intercept

__all__ = ["auroc_se", "ece", "outcome_metrics", "rank_auroc"]


def rank_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Return the AUROC of ``p`` for 0/1 outcomes ``y`` (Mann-Whitney, ties one half; nan if one class)."""
    n = len(p)
    n1 = int(np.sum(y))
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    mid_rank = (starts + np.r_[starts[1:], n] + 1) / 2.0
    positives = np.add.reduceat(ys, starts)
    return (float(np.dot(positives, mid_rank)) - n1 * (n1 + 1) / 2) / (n1 * n0)


def ece(y: np.ndarray, p: np.ndarray, *, n_bins: int = 10) -> float:
    """Return the ECE over ``n_bins`` equal-width probability bins (1.0 in the last bin)."""
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    observed = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    predicted = np.bincount(idx, weights=p, minlength=n_bins)
    return float(np.sum(np.abs(observed - predicted)) / len(p))


def auroc_se(area: float, n_pos: int, n_neg: int) -> float:
    """Return the Hanley-McNeil standard error of an AUROC from ``n_pos`` and ``n_neg`` stays."""
    if not math.isfinite(area) or n_pos < 1 or n_neg < 1:
        return float("nan")
    q1 = area / (2 - area)
    q2 = 2 * area * area / (1 + area)
    var = (
        area * (1 - area) + (n_pos - 1) * (q1 - area * area) + (n_neg - 1) * (q2 - area * area)
    ) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def outcome_metrics(
    y: np.ndarray, p: np.ndarray, *, validated_auroc: float | None, min_per_class: int
) -> dict[str, Any]:
    """Return the live metrics of predictions ``p`` against outcomes ``y``.

    Keys: ``n``, ``n_positive``, ``prevalence``, ``mean_predicted``, and — when
    each class has at least ``min_per_class`` stays — ``auroc``, ``auroc_se``,
    ``auroc_degradation`` (relative to ``validated_auroc``), ``ece``, ``brier``,
    ``calibration_slope``, ``calibration_intercept``; otherwise those are None.
    """
    n, n_pos = len(y), int(np.sum(y))
    out: dict[str, Any] = {
        "n": n,
        "n_positive": n_pos,
        "prevalence": n_pos / n if n else None,
        "mean_predicted": float(np.mean(p)) if n else None,
        "auroc": None,
        "auroc_se": None,
        "auroc_degradation": None,
        "ece": None,
        "brier": None,
        "calibration_slope": None,
        "calibration_intercept": None,
    }
    if n_pos < min_per_class or n - n_pos < min_per_class:
        return out
    area = rank_auroc(y, p)
    cal = calibration_slope_intercept(y, p)
    out |= {
        "auroc": area,
        "auroc_se": auroc_se(area, n_pos, n - n_pos),
        "ece": ece(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "calibration_slope": cal["slope"],
        "calibration_intercept": cal["intercept"],
    }
    if validated_auroc:
        out["auroc_degradation"] = (validated_auroc - area) / validated_auroc
    return out
