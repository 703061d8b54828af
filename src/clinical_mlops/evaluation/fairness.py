"""Subgroup performance and group-fairness metrics over the task's protected attributes.

Subgroups come from ``spec.protected_attributes``: categorical attributes (sex,
ethnicity) through their ``groups`` mapping, numeric ones (age) through
``bands``, matched on age in completed years (``floor(age)``) with inclusive
bounds. Values not listed in ``groups`` (e.g. ethnicity ``UNKNOWN``) and missing
values belong to no subgroup. An ``optional`` attribute is skipped when its column
is absent.

Small-subgroup rule (stated in the report): a subgroup with fewer than
:data:`MIN_STAYS` stays reports no metric. Otherwise AUROC (and its CI) needs at
least :data:`MIN_PER_CLASS` stays with and without the outcome; sensitivity needs
that many with the outcome, specificity that many without, PPV that many flagged,
NPV that many not flagged. A metric that fails its rule reports the string
``"insufficient data (n=…)"`` instead of a number. Only subgroups that meet the
AUROC rule enter the fairness differences (predictive parity additionally needs
:data:`MIN_PER_CLASS` flagged stays).

Fairness metrics at the operating threshold (flagged when ``p >= threshold``) follow
fairlearn's definitions, "between groups" (largest minus smallest group value):

* equalised-odds difference: the larger of the TPR gap and the FPR gap;
* demographic-parity difference: the gap in the fraction flagged;
* predictive-parity difference: the gap in PPV.

Each has a percentile bootstrap 95 % CI over whole-test-set resamples (a resample
in which a subgroup has no stay with a needed class gives no value and is dropped).
Group fairness metrics describe disparities; they cannot show that a model is fair.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.errors import EvaluationError
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    brier_score,
    check_binary,
    confusion_at,
    expected_calibration_error,
    percentile_ci,
)
from clinical_mlops.tasks.spec import ProtectedAttribute, TaskSpec

__all__ = [
    "FAIRNESS_METRICS",
    "INSUFFICIENT_DATA",
    "MIN_PER_CLASS",
    "MIN_STAYS",
    "auroc_gap_alerts",
    "fairness_metrics",
    "group_masks",
    "missing_attribute_columns",
    "subgroup_matrix",
    "subgroup_metrics",
]

MIN_STAYS = 30
MIN_PER_CLASS = 5
INSUFFICIENT_DATA = "insufficient data (n={n})"
FAIRNESS_METRICS = (
    "equalized_odds_difference",
    "demographic_parity_difference",
    "predictive_parity_difference",
)
_MISSING_COLUMN = (
    "protected attribute {name!r}: column {column!r} is not in the test frame; "
    "add it to the frame or mark the attribute optional in the task spec"
)


def _attribute_masks(attr: ProtectedAttribute, values: pd.Series) -> dict[str, np.ndarray]:
    if attr.groups is not None:
        return {label: (values == code).to_numpy(dtype=bool) for label, code in attr.groups.items()}
    years = np.floor(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
    masks = {}
    for band in attr.bands or ():
        upper = np.inf if band.high is None else band.high
        with np.errstate(invalid="ignore"):
            masks[band.label] = (years >= band.low) & (years <= upper)
    return masks


def missing_attribute_columns(spec: TaskSpec, columns: Iterable[str]) -> list[str]:
    """Return one problem per non-optional protected attribute whose column is not in ``columns``."""
    present = set(columns)
    return [
        _MISSING_COLUMN.format(name=a.name, column=a.column)
        for a in spec.protected_attributes
        if a.column not in present and not a.optional
    ]


def group_masks(spec: TaskSpec, frame: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Return ``{attribute: {group label: bool mask over frame rows}}`` in spec order.

    Raises :class:`~clinical_mlops.errors.EvaluationError` when a non-optional
    attribute's column is missing from ``frame``.
    """
    problems = missing_attribute_columns(spec, frame.columns)
    if problems:
        raise EvaluationError(problems[0])
    out: dict[str, dict[str, np.ndarray]] = {}
    for attr in spec.protected_attributes:
        if attr.column not in frame.columns:
            continue  # optional ("where available"): not evaluated, said in the limitations
        out[attr.name] = _attribute_masks(attr, frame[attr.column])
    return out


def _insufficient(n: int, detail: str = "") -> str:
    return INSUFFICIENT_DATA.format(n=n) if not detail else f"insufficient data (n={n}; {detail})"


def subgroup_metrics(
    y_true: np.ndarray, p: np.ndarray, *, threshold: float, counts: np.ndarray
) -> dict[str, Any]:
    """Return the Table-2 metric set for one group of stays ("insufficient data" where too small).

    Keys: n, n_positive, prevalence, auroc, auroc_ci, sensitivity, specificity,
    ppv, npv, brier, ece (10 equal-width bins), alerts. ``counts`` is the bootstrap
    resample matrix restricted to these stays' columns (see
    :func:`~clinical_mlops.evaluation.metrics.resample_counts`).
    """
    y = check_binary(y_true, p)
    prob = np.asarray(p, dtype=float)
    n, n_pos = len(y), int(y.sum())
    n_neg = n - n_pos
    c = confusion_at(y, prob, threshold=threshold)
    alerts = c["tp"] + c["fp"]
    row: dict[str, Any] = {
        "n": n,
        "n_positive": n_pos,
        "prevalence": n_pos / n if n else float("nan"),
        "alerts": alerts,
    }
    if n < MIN_STAYS:
        small = _insufficient(n)
        for key in (
            "auroc",
            "auroc_ci",
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "brier",
            "ece",
        ):
            row[key] = small
        return row
    if n_pos >= MIN_PER_CLASS and n_neg >= MIN_PER_CLASS:
        row["auroc"] = auroc(y, prob)
        row["auroc_ci"] = list(percentile_ci(auroc_replicates(y, prob, counts)))
    else:
        row["auroc"] = row["auroc_ci"] = _insufficient(
            n, f"{n_pos} with the outcome, {n_neg} without"
        )
    for key, support, what in (
        ("sensitivity", n_pos, "with the outcome"),
        ("specificity", n_neg, "without the outcome"),
        ("ppv", alerts, "flagged"),
        ("npv", n - alerts, "not flagged"),
    ):
        row[key] = c[key] if support >= MIN_PER_CLASS else _insufficient(n, f"{support} {what}")
    row["brier"] = brier_score(y, prob)
    row["ece"] = expected_calibration_error(y, prob)
    return row


def subgroup_matrix(
    y_true: np.ndarray,
    p: np.ndarray,
    masks: dict[str, dict[str, np.ndarray]],
    *,
    threshold: float,
    counts: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Return ``{"attribute=group": metric set}`` for every subgroup (the paper's Table 2 rows).

    Each metric set is :func:`subgroup_metrics` plus ``attribute`` and ``group``.
    """
    y = check_binary(y_true, p)
    prob = np.asarray(p, dtype=float)
    out = {}
    for attr, groups in masks.items():
        for label, mask in groups.items():
            row = subgroup_metrics(y[mask], prob[mask], threshold=threshold, counts=counts[:, mask])
            out[f"{attr}={label}"] = {"attribute": attr, "group": label, **row}
    return out


def _weighted_sums(counts: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """Return ``counts @ indicators`` in float, in row chunks to bound memory."""
    out = np.empty((counts.shape[0], indicators.shape[1]))
    ind = indicators.astype(float)
    for lo in range(0, counts.shape[0], 128):
        out[lo : lo + 128] = counts[lo : lo + 128].astype(float) @ ind
    return out


def _rates(sums: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Split ``(B, 4G)`` sums of [tp, pos, fp, neg] per group into per-group rates ``(B, G)``."""
    s = sums.reshape(sums.shape[0], n_groups, 4)
    tp, pos, fp, neg = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "tpr": np.where(pos > 0, tp / pos, np.nan),
            "fpr": np.where(neg > 0, fp / neg, np.nan),
            "selection_rate": np.where(pos + neg > 0, (tp + fp) / (pos + neg), np.nan),
            "ppv": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
        }


def _gap(values: np.ndarray) -> np.ndarray:
    """Largest minus smallest group value per row; ``nan`` if any group has no value (or none kept)."""
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    return values.max(axis=1) - values.min(axis=1)


def _attribute_fairness(
    y: np.ndarray,
    flagged: np.ndarray,
    groups: dict[str, np.ndarray],
    counts: np.ndarray,
) -> dict[str, dict[str, Any]]:
    labels, columns = [], []
    for label, mask in groups.items():
        n_pos = int(np.sum(mask & (y == 1)))
        n_neg = int(np.sum(mask & (y == 0)))
        if mask.sum() >= MIN_STAYS and n_pos >= MIN_PER_CLASS and n_neg >= MIN_PER_CLASS:
            labels.append(label)
            columns += [
                mask & (y == 1) & flagged,
                mask & (y == 1),
                mask & (y == 0) & flagged,
                mask & (y == 0),
            ]
    excluded = [label for label in groups if label not in labels]
    if len(labels) < 2:
        empty = {
            "value": float("nan"),
            "ci": [float("nan"), float("nan")],
            "groups": {},
            "excluded_groups": excluded,
            "note": "fewer than two subgroups with sufficient data",
        }
        return {name: dict(empty) for name in FAIRNESS_METRICS}
    indicators = np.column_stack(columns)
    point = _rates(_weighted_sums(np.ones((1, len(y)), dtype=np.int32), indicators), len(labels))
    reps = _rates(_weighted_sums(counts, indicators), len(labels))
    ppv_ok = np.array([np.sum(groups[label] & flagged) >= MIN_PER_CLASS for label in labels])

    def pack(
        stat_point: np.ndarray, stat_reps: np.ndarray, keep: np.ndarray, rate_names: tuple[str, ...]
    ):
        kept = [label for label, k in zip(labels, keep, strict=True) if k]
        result: dict[str, Any] = {
            "groups": {
                label: {r: float(point[r][0, i]) for r in rate_names}
                for i, label in enumerate(labels)
                if keep[i]
            },
            "excluded_groups": excluded + [label for label in labels if label not in kept],
        }
        if len(kept) < 2:
            result.update(
                value=float("nan"),
                ci=[float("nan"), float("nan")],
                note="fewer than two subgroups with sufficient data",
            )
        else:
            result.update(value=float(stat_point[0]), ci=list(percentile_ci(stat_reps)))
        return result

    all_groups = np.ones(len(labels), dtype=bool)
    eod_point = np.maximum(_gap(point["tpr"]), _gap(point["fpr"]))
    eod_reps = np.maximum(_gap(reps["tpr"]), _gap(reps["fpr"]))
    return {
        "equalized_odds_difference": pack(eod_point, eod_reps, all_groups, ("tpr", "fpr")),
        "demographic_parity_difference": pack(
            _gap(point["selection_rate"]),
            _gap(reps["selection_rate"]),
            all_groups,
            ("selection_rate",),
        ),
        "predictive_parity_difference": pack(
            _gap(point["ppv"][:, ppv_ok]), _gap(reps["ppv"][:, ppv_ok]), ppv_ok, ("ppv",)
        ),
    }


def fairness_metrics(
    y_true: np.ndarray,
    p: np.ndarray,
    masks: dict[str, dict[str, np.ndarray]],
    *,
    threshold: float,
    counts: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Return, per fairness metric, the worst attribute's value and CI and every attribute's own.

    Layout: ``{metric: {"value", "ci", "attribute", "by_attribute": {attr: {"value",
    "ci", "groups", "excluded_groups"}}}}`` where ``value``/``ci``/``attribute`` are
    those of the attribute with the largest value. Values are ``nan`` where fewer
    than two subgroups have sufficient data.
    """
    y = check_binary(y_true, p)
    flagged = np.asarray(p, dtype=float) >= threshold
    per_attr = {
        attr: _attribute_fairness(y, flagged, groups, counts) for attr, groups in masks.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for name in FAIRNESS_METRICS:
        by_attr = {attr: per_attr[attr][name] for attr in per_attr}
        scored = [(v["value"], attr) for attr, v in by_attr.items() if np.isfinite(v["value"])]
        if scored:
            value, worst = max(scored)
            out[name] = {"value": value, "ci": by_attr[worst]["ci"], "attribute": worst}
        else:
            out[name] = {
                "value": float("nan"),
                "ci": [float("nan"), float("nan")],
                "attribute": None,
            }
        out[name]["threshold"] = float(threshold)
        out[name]["by_attribute"] = by_attr
    return out


def auroc_gap_alerts(
    matrix: dict[str, dict[str, Any]], *, tolerance: float
) -> list[dict[str, Any]]:
    """Return one alert per attribute whose max-minus-min subgroup AUROC exceeds ``tolerance``.

    Only subgroups with a numeric AUROC take part. Each alert names the attribute,
    the gap, the tolerance and the best and worst subgroups.
    """
    by_attr: dict[str, list[tuple[float, str]]] = {}
    for row in matrix.values():
        if isinstance(row["auroc"], float) and np.isfinite(row["auroc"]):
            by_attr.setdefault(row["attribute"], []).append((row["auroc"], row["group"]))
    alerts = []
    for attr, scored in by_attr.items():
        if len(scored) < 2:
            continue
        (lo, worst), (hi, best) = min(scored), max(scored)
        if hi - lo > tolerance:
            alerts.append(
                {
                    "type": "subgroup_auroc_gap",
                    "attribute": attr,
                    "gap": hi - lo,
                    "tolerance": float(tolerance),
                    "best_group": best,
                    "best_auroc": hi,
                    "worst_group": worst,
                    "worst_auroc": lo,
                    "message": (
                        f"AUROC differs by {hi - lo:.3f} between {attr} groups "
                        f"({best} {hi:.3f}, {worst} {lo:.3f}), "
                        f"above the tolerance of {tolerance:.2f}"
                    ),
                }
            )
    return alerts
