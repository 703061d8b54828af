"""Discrimination, calibration, clinical-utility and uncertainty metrics for a binary risk model.

Conventions used everywhere in the validation report:

* a stay is *flagged* (an alert) when its calibrated probability is **greater than
  or equal to** the operating threshold;
* confidence intervals are percentile intervals over a nonparametric bootstrap
  that resamples whole test stays with replacement (:func:`resample_counts`); the
  same resamples are reused for every statistic computed from one seed, so
  differences between two scores on the same stays are paired;
* ECE uses 10 equal-width probability bins ``[0, 0.1), …, [0.9, 1.0]`` unless a
  caller asks for equal-mass bins (deciles of the predicted probability).

Every function takes plain arrays aligned row by row; none of them mutates its
inputs. Numbers that cannot be computed (a single class, an empty bin set) are
``nan`` here; the report turns them into ``null`` or an "insufficient data" string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from clinical_mlops.errors import EvaluationError

__all__ = [
    "BinningStrategy",
    "auroc",
    "auroc_replicates",
    "brier_score",
    "calibration_slope_intercept",
    "check_binary",
    "conformal_coverage",
    "confusion_at",
    "decision_curve",
    "expected_calibration_error",
    "percentile_ci",
    "reliability_curve",
    "resample_counts",
    "roc_curve_points",
    "set_type_distribution",
    "workload",
]

BinningStrategy = Literal["uniform", "quantile"]

# Rows of bootstrap weights processed at once: bounds memory at ~_CHUNK * n floats.
_CHUNK = 128
# Probabilities are clipped this far from 0 and 1 before taking logits: isotonic
# calibration can return exactly 0 or 1, whose logit is infinite.
_LOGIT_EPS = 1e-6


def check_binary(y_true: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Return ``y_true`` as an int array after checking it is 0/1 and aligned with ``others``.

    Raises :class:`~clinical_mlops.errors.EvaluationError` naming the problem.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"y_true: expected a 1-D array, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise EvaluationError("y_true: expected only 0 and 1 (outcome absent / present)")
    for other in others:
        if len(other) != len(y):
            raise EvaluationError(
                f"arrays are not aligned: y_true has {len(y)} rows, another input has {len(other)}"
            )
    return y.astype(np.int64)


# -- discrimination ----------------------------------------------------------------------


def _auroc_weighted(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return one AUROC per row of ``weights`` (B, n): each row counts how often a stay is drawn.

    The Mann-Whitney statistic with ties counted as one half, computed on the
    sorted distinct score levels so a whole batch of resamples costs one pass.
    """
    order = np.argsort(score, kind="mergesort")
    s_sorted = score[order]
    y_sorted = y[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    out = np.empty(weights.shape[0])
    for lo in range(0, weights.shape[0], _CHUNK):
        w = weights[lo : lo + _CHUNK][:, order].astype(float)
        pos = np.add.reduceat(w * y_sorted, starts, axis=1)
        neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + _CHUNK] = np.where(
                (n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan
            )
    return out


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Return the area under the ROC curve (``nan`` when only one class is present).

    Equals the probability that a randomly chosen stay with the outcome scores
    higher than one without it, ties counting one half; agrees with
    :func:`sklearn.metrics.roc_auc_score` to floating-point precision.
    """
    y = check_binary(y_true, score)
    s = np.asarray(score, dtype=float)
    return float(_auroc_weighted(y, s, np.ones((1, len(y))))[0])


def resample_counts(n: int, *, n_boot: int, seed: int) -> np.ndarray:
    """Return an ``(n_boot, n)`` int32 matrix: how many times each stay is drawn per resample.

    Drawing counts instead of index lists lets every statistic (AUROC, confusion
    counts per subgroup) be computed for all resamples with array arithmetic, and
    lets several statistics share the same resamples (a paired bootstrap).
    """
    if n_boot < 1:
        raise EvaluationError(f"n_boot: expected at least 1 resample, got {n_boot}")
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, n), dtype=np.int32)
    for lo in range(0, n_boot, _CHUNK):
        rows = min(_CHUNK, n_boot - lo)
        idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows)[:, None] * n)
        counts[lo : lo + rows] = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)
    return counts


def auroc_replicates(y_true: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the AUROC of ``score`` in every resample of ``counts`` (``nan``: one class absent)."""
    y = check_binary(y_true, score)
    return _auroc_weighted(y, np.asarray(score, dtype=float), counts)


def percentile_ci(replicates: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """Return the percentile bootstrap interval ``(lo, hi)`` at ``level``, ignoring ``nan``.

    Returns ``(nan, nan)`` when fewer than half the resamples gave a number: an
    interval built from a minority of resamples would be misleading.
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or finite.size < 0.5 * replicates.size:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def roc_curve_points(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr)`` at every distinct score, starting at (0, 0) and ending at (1, 1)."""
    y = check_binary(y_true, score)
    s = np.asarray(score, dtype=float)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_level = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s) - 1]
    tp = np.cumsum(y_sorted)[last_of_level]
    fp = np.cumsum(1 - y_sorted)[last_of_level]
    n_pos, n_neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


# -- classification at a threshold --------------------------------------------------------


def confusion_at(y_true: np.ndarray, p: np.ndarray, *, threshold: float) -> dict[str, float]:
    """Return counts and rates at ``threshold``: tp, fp, tn, fn, sensitivity, specificity, ppv, npv.

    A stay is flagged when ``p >= threshold``. Rates whose denominator is zero
    (e.g. PPV when nobody is flagged) are ``nan``.
    """
    y = check_binary(y_true, p)
    flagged = np.asarray(p, dtype=float) >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    tn = int(np.sum(~flagged & (y == 0)))

    def rate(num: int, den: int) -> float:
        return num / den if den else float("nan")

    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": rate(tp, tp + fn),
        "specificity": rate(tn, tn + fp),
        "ppv": rate(tp, tp + fp),
        "npv": rate(tn, tn + fn),
    }


def workload(y_true: np.ndarray, p: np.ndarray, *, threshold: float) -> dict[str, float]:
    """Return the alert burden at ``threshold``: alerts and true alerts per 100 patients, NNE.

    NNE (number needed to evaluate) is the number of flagged patients a clinician
    reviews per patient who goes on to have the outcome: ``1 / PPV``.
    """
    c = confusion_at(y_true, p, threshold=threshold)
    n = c["tp"] + c["fp"] + c["tn"] + c["fn"]
    alerts = c["tp"] + c["fp"]
    return {
        "threshold": float(threshold),
        "alerts_per_100": 100.0 * alerts / n if n else float("nan"),
        "true_alerts_per_100": 100.0 * c["tp"] / n if n else float("nan"),
        "false_alerts_per_100": 100.0 * c["fp"] / n if n else float("nan"),
        "number_needed_to_evaluate": alerts / c["tp"] if c["tp"] else float("nan"),
    }


# -- calibration ------------------------------------------------------------------------------


def brier_score(y_true: np.ndarray, p: np.ndarray) -> float:
    """Return the Brier score: mean squared error of the probability against the outcome."""
    y = check_binary(y_true, p)
    return float(np.mean((np.asarray(p, dtype=float) - y) ** 2)) if len(y) else float("nan")


def _bin_index(p: np.ndarray, *, n_bins: int, strategy: BinningStrategy) -> np.ndarray:
    if strategy == "uniform":
        return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    if strategy == "quantile":
        idx = np.empty(len(p), dtype=np.int64)
        for b, rows in enumerate(np.array_split(np.argsort(p, kind="mergesort"), n_bins)):
            idx[rows] = b
        return idx
    raise EvaluationError(f"strategy: expected 'uniform' or 'quantile', got {strategy!r}")


def reliability_curve(
    y_true: np.ndarray, p: np.ndarray, *, n_bins: int = 10, strategy: BinningStrategy = "uniform"
) -> list[dict[str, float]]:
    """Return one point per non-empty bin: bin edges, n, mean predicted probability, observed rate.

    ``uniform`` bins are ``[k/n_bins, (k+1)/n_bins)`` with 1.0 in the last bin;
    ``quantile`` bins hold (nearly) equal numbers of stays, sorted by probability.
    """
    y = check_binary(y_true, p)
    prob = np.asarray(p, dtype=float)
    idx = _bin_index(prob, n_bins=n_bins, strategy=strategy)
    points = []
    for b in range(n_bins):
        in_bin = idx == b
        if not in_bin.any():
            continue
        if strategy == "uniform":
            lower, upper = b / n_bins, (b + 1) / n_bins
        else:
            lower, upper = float(prob[in_bin].min()), float(prob[in_bin].max())
        points.append(
            {
                "bin_lower": lower,
                "bin_upper": upper,
                "n": int(in_bin.sum()),
                "mean_predicted": float(prob[in_bin].mean()),
                "observed_rate": float(y[in_bin].mean()),
            }
        )
    return points


def expected_calibration_error(
    y_true: np.ndarray, p: np.ndarray, *, n_bins: int = 10, strategy: BinningStrategy = "uniform"
) -> float:
    """Return the ECE: bin-size-weighted mean |observed rate - mean predicted probability|.

    Default binning: 10 equal-width bins (see :func:`reliability_curve`).
    """
    points = reliability_curve(y_true, p, n_bins=n_bins, strategy=strategy)
    n = sum(pt["n"] for pt in points)
    if not n:
        return float("nan")
    return float(
        sum(pt["n"] * abs(pt["observed_rate"] - pt["mean_predicted"]) for pt in points) / n
    )


def _logistic_fit(
    y: np.ndarray, x: np.ndarray | None, offset: np.ndarray, *, max_iter: int = 100
) -> np.ndarray:
    """Return maximum-likelihood coefficients ``[intercept, (slope)]`` by Newton-Raphson."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        mu = 1.0 / (1.0 + np.exp(-(design @ beta + offset)))
        w = mu * (1.0 - mu)
        hessian = design.T @ (design * w[:, None])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(beta)), design.T @ (y - mu))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def calibration_slope_intercept(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Return the calibration slope and intercepts from logistic recalibration on ``logit(p)``.

    * ``slope``: ``b`` in ``logit P(y=1) = a + b·logit(p)``; 1 is ideal, below 1
      means predictions are too extreme.
    * ``intercept``: calibration-in-the-large, ``a`` with the slope fixed at 1
      (``logit(p)`` as offset); 0 is ideal, negative means risk is overestimated.
    * ``recalibration_intercept``: ``a`` from the two-parameter fit.

    Probabilities are clipped to ``[1e-6, 1 - 1e-6]`` first. ``nan`` when one class is absent.
    """
    y = check_binary(y_true, p).astype(float)
    if len(y) == 0 or y.min() == y.max():
        nan = float("nan")
        return {"slope": nan, "intercept": nan, "recalibration_intercept": nan}
    clipped = np.clip(np.asarray(p, dtype=float), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    logit = np.log(clipped / (1.0 - clipped))
    a, b = _logistic_fit(y, logit, np.zeros(len(y)))
    (citl,) = _logistic_fit(y, None, logit)
    return {"slope": float(b), "intercept": float(citl), "recalibration_intercept": float(a)}


# -- clinical utility -----------------------------------------------------------------------


def decision_curve(
    y_true: np.ndarray, p: np.ndarray, *, thresholds: Sequence[float]
) -> list[dict[str, float]]:
    """Return net benefit of the model, treat-all and treat-none at each threshold probability.

    Net benefit = TP/n − FP/n · pt/(1−pt) (Vickers & Elkin 2006): true alerts
    per patient, less false alerts weighted by the harm-to-benefit odds a
    clinician accepts by choosing threshold ``pt``. Treat-none is 0 by definition.
    """
    y = check_binary(y_true, p)
    prob = np.asarray(p, dtype=float)
    n = len(y)
    prevalence = y.mean() if n else float("nan")
    curve = []
    for pt in thresholds:
        if not 0.0 < pt < 1.0:
            raise EvaluationError(f"thresholds: each must lie strictly between 0 and 1, got {pt}")
        odds = pt / (1.0 - pt)
        flagged = prob >= pt
        tp = np.sum(flagged & (y == 1))
        fp = np.sum(flagged & (y == 0))
        curve.append(
            {
                "threshold": float(pt),
                "net_benefit_model": float(tp / n - fp / n * odds),
                "net_benefit_treat_all": float(prevalence - (1.0 - prevalence) * odds),
                "net_benefit_treat_none": 0.0,
            }
        )
    return curve


# -- conformal prediction sets ----------------------------------------------------------------


def _check_sets(y: np.ndarray, sets: np.ndarray) -> np.ndarray:
    s = np.asarray(sets, dtype=bool)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape[0] != len(y):
        raise EvaluationError(
            f"prediction_sets: expected a bool array of shape ({len(y)}, 2), got {s.shape}"
        )
    return s


def conformal_coverage(y_true: np.ndarray, sets: np.ndarray) -> dict[str, Any]:
    """Return the fraction of stays whose set contains the true outcome, overall and per class.

    ``sets`` is bool ``(n, 2)``: column 0 = the set contains "no", column 1 = "yes".
    Mondrian (class-conditional) conformal sets at level 1−α promise coverage of
    at least 1−α *within each class* on exchangeable data, so ``by_class`` is the
    figure to check against the guarantee.
    """
    y = check_binary(y_true)
    s = _check_sets(y, sets)
    covered = s[np.arange(len(y)), y]
    by_class = {
        str(k): float(covered[y == k].mean()) if np.any(y == k) else float("nan") for k in (0, 1)
    }
    return {"overall": float(covered.mean()) if len(y) else float("nan"), "by_class": by_class}


def set_type_distribution(sets: np.ndarray) -> dict[str, dict[str, float]]:
    """Return count and fraction per set type: ``{no}``, ``{yes}``, ``{no,yes}``, ``empty``."""
    s = np.asarray(sets, dtype=bool)
    if s.ndim != 2 or s.shape[1] != 2:
        raise EvaluationError(f"prediction_sets: expected shape (n, 2), got {s.shape}")
    kinds = {
        "{no}": s[:, 0] & ~s[:, 1],
        "{yes}": ~s[:, 0] & s[:, 1],
        "{no,yes}": s[:, 0] & s[:, 1],
        "empty": ~s[:, 0] & ~s[:, 1],
    }
    n = len(s)
    return {
        k: {"count": int(v.sum()), "fraction": float(v.sum() / n) if n else float("nan")}
        for k, v in kinds.items()
    }
