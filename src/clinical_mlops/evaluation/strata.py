"""The validation matrix: the locked test set's figures per site, per period and per cell.

A governance board asks "does it work here, and this year?". The pooled test figures
cannot answer it: a model can be well calibrated overall and miscalibrated at every
hospital. :func:`validation_matrix` splits the locked test stays by the task's
evaluation strata (``spec.evaluation.strata``, default site and period; the period
is the calendar year, ``real_year``) and computes, per cell of site × period and per
margin (every period of one site, every site of one period):

* n, events and prevalence;
* AUROC with its 95 % percentile bootstrap interval, from the report's shared resample
  counts restricted to the cell's stays (paired with every other statistic);
* calibration slope and calibration-in-the-large intercept (logistic recalibration of
  ``logit(p)``, as in the report's calibration section) and ECE (10 equal-width bins);
* alerts per 100 stays at the report's threshold and reviews per 100 stays under the
  release's escalation policy (the workload section's routing of the same stays);
* the largest subgroup AUROC gap within the cell (over the protected attributes).

The insufficient-data rule of the subgroup tables applies: a cell with fewer than
:data:`~clinical_mlops.evaluation.fairness.MIN_STAYS` stays reports no metric, and
AUROC and the calibration fit need at least
:data:`~clinical_mlops.evaluation.fairness.MIN_PER_CLASS` stays with and without the
outcome; a figure that fails says ``"insufficient data (n=…)"``, never a number.
The strata are evaluation strata, never model inputs: the site of a stay is read from
the test frame's ``site`` column (``"unspecified"`` when the snapshot has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.data.raw import UNSPECIFIED_SITE
from clinical_mlops.evaluation.fairness import (
    INSUFFICIENT_DATA,
    MIN_PER_CLASS,
    MIN_STAYS,
    subgroup_matrix,
)
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    calibration_slope_intercept,
    expected_calibration_error,
    percentile_ci,
)

__all__ = ["ALL", "MATRIX_METHOD", "STRATA", "strata_columns", "validation_matrix"]

#: The strata a task may declare, in the order the matrix nests them.
STRATA = ("site", "period")
#: The value of a stratum a row does not split by (a margin).
ALL = "all"
MATRIX_METHOD = (
    "locked test stays split by site and calendar year (period); AUROC 95 % CI from the "
    "report's paired bootstrap restricted to the cell; calibration slope and intercept by "
    "logistic recalibration of logit(p); ECE over 10 equal-width bins; alerts and reviews per "
    "100 stays under the report's threshold and escalation policy; subgroup gap = largest "
    "best-minus-worst subgroup AUROC over the protected attributes within the cell"
)


def strata_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return each stratum's value per test stay: site (or ``unspecified``) and year."""
    n = len(frame)
    if "site" in frame.columns:
        site = frame["site"].astype("string").fillna(UNSPECIFIED_SITE).to_numpy(dtype=str)
    else:
        site = np.full(n, UNSPECIFIED_SITE, dtype=object).astype(str)
    if "real_year" in frame.columns:
        period = frame["real_year"].astype("Int64").astype("string").fillna("unknown")
        period_values = period.to_numpy(dtype=str)
    else:
        period_values = np.full(n, "unknown", dtype=object).astype(str)
    return {"site": site, "period": period_values}


def _insufficient(n: int, detail: str = "") -> str:
    return INSUFFICIENT_DATA.format(n=n) if not detail else f"insufficient data (n={n}; {detail})"


def _subgroup_gap(
    y: np.ndarray,
    p: np.ndarray,
    masks: dict[str, dict[str, np.ndarray]],
    *,
    threshold: float,
    counts: np.ndarray,
    n: int,
) -> dict[str, Any] | str:
    """Return the largest best-minus-worst subgroup AUROC in the cell, or why there is none."""
    rows = subgroup_matrix(y, p, masks, threshold=threshold, counts=counts)
    by_attr: dict[str, list[tuple[float, str]]] = {}
    for row in rows.values():
        if isinstance(row["auroc"], float) and np.isfinite(row["auroc"]):
            by_attr.setdefault(row["attribute"], []).append((row["auroc"], row["group"]))
    gaps = []
    for attr, scored in by_attr.items():
        if len(scored) >= 2:
            (lo, worst), (hi, best) = min(scored), max(scored)
            gaps.append((hi - lo, attr, best, worst))
    if not gaps:
        return _insufficient(n, "fewer than two subgroups with sufficient data")
    gap, attr, best, worst = max(gaps)
    return {"value": gap, "attribute": attr, "best_group": best, "worst_group": worst}


def _cell(
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    counts: np.ndarray,
    reviewed: np.ndarray | None,
    masks: dict[str, dict[str, np.ndarray]],
) -> dict[str, Any]:
    n, n_events = len(y), int(y.sum())
    n_free = n - n_events
    row: dict[str, Any] = {
        "n": n,
        "n_events": n_events,
        "prevalence": n_events / n if n else None,
    }
    metrics = (
        "auroc",
        "calibration_slope",
        "calibration_intercept",
        "ece",
        "alerts_per_100",
        "reviews_per_100",
        "max_subgroup_gap",
    )
    if n < MIN_STAYS:
        return row | dict.fromkeys(metrics, _insufficient(n))
    if n_events >= MIN_PER_CLASS and n_free >= MIN_PER_CLASS:
        cal = calibration_slope_intercept(y, p)
        row["auroc"] = {
            "value": auroc(y, p),
            "ci": list(percentile_ci(auroc_replicates(y, p, counts))),
        }
        row["calibration_slope"] = cal["slope"]
        row["calibration_intercept"] = cal["intercept"]
    else:
        small = _insufficient(n, f"{n_events} with the outcome, {n_free} without")
        row |= {"auroc": small, "calibration_slope": small, "calibration_intercept": small}
    row["ece"] = expected_calibration_error(y, p)
    row["alerts_per_100"] = 100.0 * float(np.mean(p >= threshold))
    row["reviews_per_100"] = None if reviewed is None else 100.0 * float(np.mean(reviewed))
    row["max_subgroup_gap"] = _subgroup_gap(y, p, masks, threshold=threshold, counts=counts, n=n)
    return row


def validation_matrix(
    y: np.ndarray,
    p: np.ndarray,
    frame: pd.DataFrame,
    *,
    strata: tuple[str, ...],
    threshold: float,
    counts: np.ndarray,
    masks: dict[str, dict[str, np.ndarray]],
    reviewed: np.ndarray | None = None,
) -> dict[str, Any]:
    """Return the report's ``matrix`` section: figures per stratum cell and per margin.

    ``frame`` is the locked test frame (its ``site`` and ``real_year`` give the strata),
    ``counts`` the report's bootstrap resample counts over the same stays, ``masks``
    the protected-attribute subgroup masks, ``reviewed`` whether the release policy
    queues each stay for review (``None``: no policy, review figures ``None``).
    ``rows`` holds one row per combination of the declared strata (a stratum not
    declared reads ``"all"``); ``by_site`` and ``by_period`` the margins of the declared
    ones (empty when that stratum is not declared). Rows are sorted by site, then period.
    """
    values = strata_columns(frame)
    declared = [s for s in STRATA if s in strata]

    def rows_for(keys: list[str]) -> list[dict[str, Any]]:
        if keys:
            combos = pd.DataFrame({k: values[k] for k in keys}).drop_duplicates()
            combos = combos.sort_values(keys, kind="mergesort").to_dict("records")
        else:
            combos = [{}]
        out = []
        for combo in combos:
            mask = np.ones(len(y), dtype=bool)
            for k, v in combo.items():
                mask &= values[k] == v
            cell = _cell(
                y[mask],
                p[mask],
                threshold=threshold,
                counts=counts[:, mask],
                reviewed=None if reviewed is None else reviewed[mask],
                masks={a: {g: m[mask] for g, m in groups.items()} for a, groups in masks.items()},
            )
            out.append({s: combo.get(s, ALL) for s in STRATA} | cell)
        return out

    return {
        "strata": declared,
        "method": MATRIX_METHOD,
        "rows": rows_for(declared),
        "by_site": rows_for(["site"]) if "site" in declared else [],
        "by_period": rows_for(["period"]) if "period" in declared else [],
    }
