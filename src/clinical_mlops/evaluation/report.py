"""The validation report (R-L4): one typed document, written as JSON and as HTML.

:func:`evaluate` computes every figure from an
:class:`~clinical_mlops.evaluation.inputs.EvaluationInput` — the locked test set
the model plane produced — and returns a
:class:`~clinical_mlops.evaluation.validation_report.ValidationReport` (schema
:data:`SCHEMA`): no ``NaN`` (a number that cannot be computed is ``null``, a
subgroup too small for a metric says ``"insufficient data (n=…)"``), no
timestamps, and the same report for the same input and seed. :func:`write_report`
writes ``report.json`` (canonical: sorted keys) and a self-contained
``report.html`` for a governance board; readers load it back with
``ValidationReport.load``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops import __version__
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.baseline import baseline_comparison, no_baseline, score_for
from clinical_mlops.evaluation.fairness import (
    INSUFFICIENT_DATA,
    MIN_PER_CLASS,
    MIN_STAYS,
    auroc_gap_alerts,
    fairness_metrics,
    group_masks,
    subgroup_matrix,
    subgroup_metrics,
)
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    brier_score,
    calibration_slope_intercept,
    check_binary,
    conformal_coverage,
    confusion_at,
    decision_curve,
    expected_calibration_error,
    percentile_ci,
    reliability_curve,
    resample_counts,
    set_type_distribution,
    workload,
)
from clinical_mlops.evaluation.phrases import format_value, top_phrases
from clinical_mlops.evaluation.strata import validation_matrix
from clinical_mlops.evaluation.validation_report import SCHEMA, ValidationReport
from clinical_mlops.modeling.escalation import ResolvedEscalation, input_flags, resolve

__all__ = [
    "DECISION_THRESHOLDS",
    "ECE_BINNING",
    "SCHEMA",
    "canonical_json",
    "evaluate",
    "flags_of_test_stays",
    "json_ready",
    "masked_inputs",
    "out_of_range",
    "write_report",
]

ECE_BINNING = "10 equal-width bins [0, 0.1), ..., [0.9, 1.0]"
# Threshold probabilities for decision-curve analysis: 1 % to 80 % in 1 % steps.
DECISION_THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(1, 81))
_WORKLOAD_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
_N_ERROR_EXAMPLES = 3


def json_ready(value: Any) -> Any:
    """Return ``value`` with numpy types made native, tuples as lists and NaN/inf as ``None``."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


# -- sections ----------------------------------------------------------------------------------


def _test_section(
    inp: EvaluationInput, y: np.ndarray, p: np.ndarray, *, threshold: float, counts: np.ndarray
) -> dict[str, Any]:
    overall = subgroup_metrics(y, p, threshold=threshold, counts=counts)
    cal = calibration_slope_intercept(y, p)
    cov = conformal_coverage(y, inp.prediction_sets)
    return {
        **overall,
        "threshold": threshold,
        "flag_rule": f"flagged when calibrated probability >= {threshold}",
        "ece_binning": ECE_BINNING,
        "calibration_slope": cal["slope"],
        "calibration_intercept": cal["intercept"],
        "conformal_coverage": cov["overall"],
        "conformal_coverage_by_class": cov["by_class"],
        "set_types": set_type_distribution(inp.prediction_sets),
        **{k: confusion_at(y, p, threshold=threshold)[k] for k in ("tp", "fp", "tn", "fn")},
    }


def _calibration_section(inp: EvaluationInput, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    cal = calibration_slope_intercept(y, p)
    return {
        "method": inp.calibration.get("method"),
        "fitted_on": inp.calibration.get("fitted_on"),
        "n_fitted": inp.calibration.get("n"),
        "ece_binning": ECE_BINNING,
        "ece": expected_calibration_error(y, p),
        "ece_equal_mass": expected_calibration_error(y, p, strategy="quantile"),
        "ece_equal_mass_binning": "10 equal-mass bins (deciles of the predicted probability)",
        "ece_before_calibration": expected_calibration_error(y, inp.p_raw),
        "brier": brier_score(y, p),
        "slope": cal["slope"],
        "intercept": cal["intercept"],
        "recalibration_intercept": cal["recalibration_intercept"],
        "slope_intercept_method": (
            "logistic recalibration on logit(p), p clipped to [1e-6, 1-1e-6]; slope from "
            "logit P(y) = a + b logit(p); intercept = calibration-in-the-large (slope fixed at 1)"
        ),
        "reliability_curve": reliability_curve(y, p),
        "reliability_curve_equal_mass": reliability_curve(y, p, strategy="quantile"),
    }


def _conformal_section(inp: EvaluationInput, y: np.ndarray) -> dict[str, Any]:
    alpha = float(inp.conformal.get("alpha", inp.spec.thresholds.conformal_alpha))
    cov = conformal_coverage(y, inp.prediction_sets)
    target = 1.0 - alpha
    by_class = cov["by_class"]
    return {
        **{k: v for k, v in inp.conformal.items() if k not in ("coverage",)},
        "alpha": alpha,
        "spec_alpha": inp.spec.thresholds.conformal_alpha,
        "target_coverage": target,
        "coverage": cov["overall"],
        "coverage_by_class": by_class,
        "meets_target_by_class": {
            k: (v >= target if v is not None and math.isfinite(v) else None)
            for k, v in by_class.items()
        },
        "set_types": set_type_distribution(inp.prediction_sets),
        "low_confidence_sets": "{no,yes} (ambiguous) and empty sets are flagged to the clinician",
    }


def masked_inputs(spec: Any) -> list[str]:
    """Return the inputs whose absence the robustness check simulates, in spec order.

    Every numeric feature but age: measurements and scores may be missing at the
    prediction time, while age is required (the intended-use guard refuses a
    request without it).
    """
    return [f.name for f in spec.features if f.kind == "numeric" and f.name != "age"]


def _robustness_section(
    inp: EvaluationInput, y: np.ndarray, *, threshold: float, counts: np.ndarray
) -> dict[str, Any]:
    features = list(inp.spec.feature_names)
    frame = inp.test_frame[features]
    p_ref = np.asarray(inp.predict_frame(frame.copy()), dtype=float)
    ref_reps = auroc_replicates(y, p_ref, counts)
    ref_auc = auroc(y, p_ref)

    def summary(p: np.ndarray) -> dict[str, Any]:
        c = confusion_at(y, p, threshold=threshold)
        return {
            "auroc": auroc(y, p),
            "sensitivity": c["sensitivity"],
            "specificity": c["specificity"],
            "ppv": c["ppv"],
            "brier": brier_score(y, p),
            "ece": expected_calibration_error(y, p),
            "alerts_per_100": 100.0 * (c["tp"] + c["fp"]) / len(y),
        }

    masked = {}
    for lab in masked_inputs(inp.spec):
        copy = frame.copy()
        copy[lab] = np.nan
        p = np.asarray(inp.predict_frame(copy), dtype=float)
        row = summary(p)
        row["auroc_change"] = row["auroc"] - ref_auc
        row["auroc_change_ci"] = list(percentile_ci(auroc_replicates(y, p, counts) - ref_reps))
        row["fraction_measured"] = float(frame[lab].notna().mean())
        row["mean_abs_probability_change"] = float(np.mean(np.abs(p - p_ref)))
        masked[lab] = row
    return {
        "method": (
            "each numeric input but age is set to missing for every test stay and the frozen pipeline "
            "(imputation, model, calibration) is re-applied; change is against all values as "
            "recorded"
        ),
        "reference": summary(p_ref),
        "reference_matches_evaluated_probabilities": bool(
            np.allclose(p_ref, inp.p_cal, rtol=0, atol=1e-9)
        ),
        "masked": masked,
    }


def _age_band(age: float) -> str:
    if not math.isfinite(age):
        return "not recorded"
    lo = int(age // 5 * 5)
    return f"{lo}-{lo + 4} years"


def _error_examples(inp: EvaluationInput, y: np.ndarray, p: np.ndarray, *, threshold: float):
    spec = inp.spec
    features = list(spec.feature_names)
    medians = inp.extra.get("imputation_medians") or {}
    order = np.argsort(-p, kind="mergesort")
    rank = np.empty(len(p), dtype=np.int64)
    rank[order] = np.arange(1, len(p) + 1)
    fn = np.flatnonzero((y == 1) & (p < threshold))
    fp = np.flatnonzero((y == 0) & (p >= threshold))
    picks = {
        # The most confident misses: outcomes with the lowest risk, non-outcomes the highest.
        "false_negatives": fn[np.argsort(p[fn], kind="mergesort")][:_N_ERROR_EXAMPLES],
        "false_positives": fp[np.argsort(-p[fp], kind="mergesort")][:_N_ERROR_EXAMPLES],
    }
    out: dict[str, Any] = {
        "note": (
            "Anonymised: no stay identifiers or dates; age in 5-year bands; values rounded. "
            "The most confident errors at the operating threshold are shown."
        )
    }
    for kind, rows in picks.items():
        examples = []
        for i in rows:
            raw = inp.test_frame.iloc[i]
            values = {}
            for name in features:
                v = raw[name]
                if name == "age":
                    values[name] = _age_band(float(v))
                elif pd.isna(v):
                    values[name] = "not measured"
                else:
                    values[name] = format_value(spec.feature(name), v)
            contribs = inp.contributions.iloc[i].to_dict()
            examples.append(
                {
                    # Significant digits, not decimals: a death at risk 0.0002 must not read 0.
                    "risk": float(f"{float(p[i]):.4g}"),
                    "risk_rank": f"{int(rank[i])} of {len(p)}",
                    "outcome": spec.words().event if y[i] == 1 else spec.words().non_event,
                    "values": values,
                    "top_contributions": [
                        {"feature": t["feature"], "phrase": t["phrase"]}
                        for t in top_phrases(
                            spec,
                            raw.to_dict(),
                            contribs,
                            k=3,
                            imputed_values=medians,
                            shown_as={"age": values["age"]} if "age" in values else None,
                        )
                    ],
                }
            )
        out[kind] = examples
    return out


def _global_importance(inp: EvaluationInput) -> list[dict[str, Any]]:
    cols = [c for c in inp.contributions.columns if c != "bias"]
    mean_abs = inp.contributions[cols].abs().mean()
    ranked = sorted(mean_abs.items(), key=lambda kv: (-kv[1], kv[0]))
    return [
        {"feature": k, "label": inp.spec.feature(k).label, "mean_abs_contribution": float(v)}
        for k, v in ranked
    ]


def _cohort_section(inp: EvaluationInput, y: np.ndarray) -> dict[str, Any]:
    snap = inp.snapshot
    frame = inp.test_frame
    features = list(inp.spec.feature_names)
    years = frame["real_year"] if "real_year" in frame.columns else None
    return {
        "snapshot_id": snap.get("snapshot_id"),
        "source": snap.get("source"),
        "cohort_flow": snap.get("cohort_flow", []),
        "n_stays": snap.get("n_stays"),
        "n_train": snap.get("n_train"),
        "n_test": snap.get("n_test"),
        "prevalence": snap.get("prevalence"),
        "prevalence_train": snap.get("prevalence_train"),
        "prevalence_test": snap.get("prevalence_test"),
        "missingness_train": snap.get("missingness", {}),
        "test_set": {
            "n": len(y),
            "n_positive": int(y.sum()),
            "years": [int(years.min()), int(years.max())] if years is not None else None,
            "missingness": {f: float(frame[f].isna().mean()) for f in features},
        },
        "split": {
            "kind": inp.spec.split.kind,
            "train_years": list(inp.spec.split.train_years),
            "test_years": list(inp.spec.split.test_years),
        },
    }


def _published_comparison(
    inp: EvaluationInput, test: dict[str, Any], cohort: dict[str, Any]
) -> dict[str, Any]:
    pub = inp.spec.published
    pub_test = pub.get("test", {})
    rows = [
        {"metric": f"test {k}", "ours": test.get(k), "published": pub_test.get(k)}
        for k in ("auroc", "sensitivity", "specificity", "ppv")
    ]
    rows += [
        {"metric": "n_stays", "ours": cohort.get("n_stays"), "published": pub.get("n_stays")},
        {"metric": "n_test", "ours": test["n"], "published": pub.get("n_test")},
        {
            "metric": "prevalence",
            "ours": cohort.get("prevalence"),
            "published": pub.get("prevalence"),
        },
    ]
    rows += [
        {
            "metric": f"cv_auroc {name}",
            "ours": inp.cv.get(name, {}).get("mean_auroc"),
            "published": value,
        }
        for name, value in pub.get("cv_auroc", {}).items()
    ]
    for row in rows:
        ours, theirs = row["ours"], row["published"]
        numeric = isinstance(ours, int | float) and isinstance(theirs, int | float)
        row["difference"] = ours - theirs if numeric and not isinstance(ours, bool) else None
    return {
        "citation": pub.get("citation"),
        "rows": rows,
        "note": (
            "Published figures come from the reference run on MIMIC-IV v2.2; on other data "
            "(including the synthetic source) differences are expected and are not a defect."
        ),
    }


def _limitations(
    inp: EvaluationInput,
    subgroups: dict[str, dict[str, Any]],
    baseline: dict[str, Any],
    conformal: dict[str, Any],
) -> list[str]:
    spec = inp.spec
    out = []
    if str(inp.snapshot.get("source", "")).lower().startswith("synthetic"):
        out.append(
            "The data are synthetic: they reproduce published cohort statistics, so these "
            "figures show that the pipeline works, not that the model is clinically valid."
        )
    external = inp.extra.get("external")
    if isinstance(external, str):
        # an external validation states what it covers instead of the internal split
        out.append(external)
    else:
        test_years = spec.split.test_years
        out.append(
            f"Validation is temporal but internal (one source, test years {test_years[0]}-"
            f"{test_years[1]}); performance after {test_years[1]}, at other hospitals or after "
            "changes in practice, coding or case mix is unknown and must be monitored."
        )
    if baseline.get("declared") is False:
        out.append(baseline["statement"])
    else:
        approximations = "; ".join(baseline["approximations"])
        out.append(
            f"The clinical baseline is the {baseline['name']} ({baseline['source']})"
            + (f"; {approximations}" if approximations else "")
            + ". It is a comparator, not a reproduction of the published score's performance."
        )
    for f in spec.features:
        if f.caveat:
            out.append(f"{f.label}: {' '.join(f.caveat.split())}")
    small = sorted(k for k, row in subgroups.items() if isinstance(row["auroc"], str))
    if small:
        out.append(
            "Subgroups too small for some metrics (rule: n >= "
            f"{MIN_STAYS} and >= {MIN_PER_CLASS} stays per class): {', '.join(small)}."
        )
    for attr in spec.protected_attributes:
        if attr.column not in inp.test_frame.columns:
            out.append(f"{attr.name} is not recorded in the test data and was not evaluated.")
        elif attr.groups is not None:
            known = set(attr.groups.values())
            col = inp.test_frame[attr.column]
            n_other = int((~col.isin(known)).sum())
            if n_other:
                out.append(
                    f"{n_other} test stays have {attr.name} unrecorded or outside the declared "
                    f"groups (e.g. UNKNOWN) and belong to no {attr.name} subgroup."
                )
    out.append(
        "Group fairness metrics describe disparities in error rates and alert rates; they "
        "cannot show that the model is fair, and small subgroups give wide intervals."
    )
    out.append(
        f"Conformal coverage of {conformal['target_coverage']:.0%} per class is guaranteed only "
        f"when test {inp.spec.words().units} are exchangeable with the calibration "
        f"{inp.spec.words().units}; under temporal shift "
        "the observed coverage above is the evidence, not the guarantee."
    )
    out.append(
        "Feature contributions explain the model's estimate, not the cause of the outcome; "
        "correlated features share credit."
    )
    return out


def out_of_range(frame: pd.DataFrame, spec: Any) -> np.ndarray:
    """Return, per stay, whether a numeric input lies beyond the range of ``frame``'s own values.

    The serving rule (``out_of_range``: a numeric value outside the reference profile's
    lowest and highest decile edge, i.e. its minimum and maximum to 6 decimals) applied to
    the stays the profile is built from, the locked test stays; so only a value lost to that
    rounding can be flagged here, and the live rate is what monitoring watches.
    """
    out = np.zeros(len(frame), dtype=bool)
    for f in spec.features:
        if f.kind != "numeric" or f.name not in frame.columns:
            continue
        x = frame[f.name].to_numpy(dtype=float)
        present = np.isfinite(x)
        if not present.any():
            continue
        lo, hi = round(float(x[present].min()), 6), round(float(x[present].max()), 6)
        out |= present & ((x < lo) | (x > hi))
    return out


def _per_100(indicator: np.ndarray) -> float:
    return 100.0 * float(np.mean(indicator)) if len(indicator) else float("nan")


def _per_100_ci(indicator: np.ndarray, counts: np.ndarray) -> list[float]:
    """Return the 95 % percentile bootstrap interval of ``indicator`` per 100 stays."""
    replicates = 100.0 * (counts @ indicator.astype(np.float64)) / counts.shape[1]
    return list(percentile_ci(replicates))


def flags_of_test_stays(inp: EvaluationInput, p: np.ndarray) -> dict[str, np.ndarray]:
    """Return every flag the service would give each locked test stay (``input_flags``).

    Missing inputs are the test frame's unmeasured features; sets are the conformal
    sets; ``out_of_range`` follows :func:`out_of_range`; every test stay is scored at
    the prediction time (never too early).
    """
    spec = inp.spec
    features = list(spec.feature_names)
    return input_flags(
        p,
        inp.prediction_sets,
        missing_count=inp.test_frame[features].isna().sum(axis=1).to_numpy(),
        n_features=len(features),
        max_missing=spec.cohort.max_missing_feature_fraction,
        out_of_range=out_of_range(inp.test_frame, spec),
    )


def _workload_section(
    inp: EvaluationInput,
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    escalation: ResolvedEscalation | None,
    counts: np.ndarray,
) -> dict[str, Any]:
    section: dict[str, Any] = {
        **workload(y, p, threshold=threshold),
        "alerts_per_100_ci": _per_100_ci(p >= threshold, counts),
    }
    if escalation is not None:
        routing = escalation.route(p, flags_of_test_stays(inp, p))
        first = (
            routing.conditions.argmax(axis=1)
            if routing.conditions.shape[1]
            else np.zeros(len(p), dtype=np.int64)
        )
        section |= {
            "reviews_per_100": _per_100(routing.queued),
            "reviews_per_100_ci": _per_100_ci(routing.queued, counts),
            "deferred_per_100": _per_100(routing.deferred),
            "reviews_by_reason": {
                c: _per_100(routing.queued & (first == i))
                for i, c in enumerate(escalation.review_on)
            },
        }
    section["by_threshold"] = [workload(y, p, threshold=t) for t in _WORKLOAD_THRESHOLDS]
    return section


def _release_policy(
    inp: EvaluationInput, threshold: float, escalation: ResolvedEscalation | None
) -> ResolvedEscalation | None:
    """Return the policy the report is computed under: the one given, or the spec's resolved."""
    if escalation is not None:
        if escalation.threshold != threshold:
            raise ValueInvalid(
                f"escalation: resolved at threshold {escalation.threshold:g}, but the report is "
                f"computed at {threshold:g}; resolve the policy at the report's threshold"
            )
        return escalation
    if inp.escalation_reference is None:
        return None
    return resolve(inp.spec.escalation, threshold=threshold, reference=inp.escalation_reference)


# -- public -----------------------------------------------------------------------------------


def evaluate(
    inp: EvaluationInput,
    *,
    n_boot: int = 1000,
    threshold: float | None = None,
    escalation: ResolvedEscalation | None = None,
) -> ValidationReport:
    """Return the validation report of ``inp`` (schema :data:`SCHEMA`).

    All confidence intervals are 95 % percentile intervals over ``n_boot``
    bootstrap resamples of the test stays, drawn once from ``inp.seed`` and
    shared by every statistic (paired). Every figure at a threshold is computed at
    ``threshold`` (default: the task spec's operating threshold) — a release at
    another threshold gets its own report. The workload counts human reviews under
    ``escalation``, a policy resolved at that threshold (default: the task spec's
    policy resolved on the model's held-out calibration stays; none when the input
    carries no such stays, and the review figures are then absent); it is recorded as
    ``report["escalation"]``. ``report["matrix"]`` splits the same figures by the task's
    evaluation strata (site × calendar year, see :mod:`.strata`). The subgroup-AUROC tolerance and the conformal level
    come from ``inp.spec``. Deterministic: the same input and seed give an identical
    report.
    """
    spec = inp.spec
    threshold = float(spec.thresholds.operating if threshold is None else threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueInvalid(f"threshold: must lie strictly between 0 and 1, got {threshold}")
    policy = _release_policy(inp, threshold, escalation)
    p = np.asarray(inp.p_cal, dtype=float)
    y = check_binary(
        inp.y_true, p, inp.p_raw, inp.test_frame, inp.prediction_sets, inp.contributions
    )
    counts = resample_counts(len(y), n_boot=n_boot, seed=inp.seed)

    test = _test_section(inp, y, p, threshold=threshold, counts=counts)
    masks = group_masks(spec, inp.test_frame)
    subgroups = subgroup_matrix(y, p, masks, threshold=threshold, counts=counts)
    fairness = fairness_metrics(y, p, masks, threshold=threshold, counts=counts)
    score = score_for(spec)
    baseline = (
        no_baseline(spec)
        if score is None
        else baseline_comparison(
            y, p, inp.test_frame, threshold=threshold, counts=counts, score=score
        )
    )
    conformal = _conformal_section(inp, y)
    cohort = _cohort_section(inp, y)
    report = {
        "schema": SCHEMA,
        "generator": f"clinical-mlops {__version__}",
        "task": {
            "name": spec.name,
            "version": spec.version,
            "title": spec.title,
            "spec_sha256": spec.spec_hash(),
            "label": spec.label.name,
        },
        "model": {
            "version": inp.model_version,
            "selected_model": inp.selected_model,
            "hyperparameters": inp.hyperparameters,
            "lineage": inp.lineage,
            "seed": inp.seed,
        },
        "methods": {
            "n_boot": n_boot,
            "ci": "95 % percentile bootstrap over test stays (paired across statistics)",
            "flag_rule": f"flagged when calibrated probability >= {threshold}",
            "ece_binning": ECE_BINNING,
            "small_subgroup_rule": (
                f"no metric below {MIN_STAYS} stays; AUROC needs >= {MIN_PER_CLASS} stays with "
                f"and without the outcome; sensitivity/specificity/PPV/NPV need >= "
                f"{MIN_PER_CLASS} stays in their denominator; otherwise "
                f"'{INSUFFICIENT_DATA.format(n='…')}'"
            ),
            "subgroup_definition": (
                "protected attributes from the task spec; age in completed years, inclusive "
                "bands; values outside the declared groups (e.g. UNKNOWN) belong to no subgroup"
            ),
        },
        "test": test,
        "subgroups": subgroups,
        "fairness": fairness,
        "fairness_alerts": auroc_gap_alerts(
            subgroups, tolerance=spec.thresholds.subgroup_auroc_gap
        ),
        "baseline": baseline,
        "decision_curve": {
            "operating_threshold": threshold,
            "points": decision_curve(y, p, thresholds=DECISION_THRESHOLDS),
            "definition": "net benefit = TP/n - FP/n * pt/(1-pt); treat-none = 0",
        },
        "workload": _workload_section(
            inp, y, p, threshold=threshold, escalation=policy, counts=counts
        ),
        "robustness": _robustness_section(inp, y, threshold=threshold, counts=counts),
        "error_examples": _error_examples(inp, y, p, threshold=threshold),
        "calibration": _calibration_section(inp, y, p),
        "conformal": conformal,
        "cv": {
            "selected_model": inp.selected_model,
            "candidates": inp.cv,
            "folds": spec.split.cv_folds,
        },
        "global_importance": _global_importance(inp),
        "cohort": cohort,
        "limitations": _limitations(inp, subgroups, baseline, conformal),
    }
    report["published_comparison"] = _published_comparison(inp, test, cohort)
    report["matrix"] = validation_matrix(
        y,
        p,
        inp.test_frame,
        strata=spec.evaluation.strata,
        threshold=threshold,
        counts=counts,
        masks=masks,
        reviewed=None if policy is None else policy.route(p, flags_of_test_stays(inp, p)).queued,
    )
    if policy is not None:
        report["escalation"] = policy.to_json()
    return ValidationReport.from_json(json_ready(report), source="report.json (as evaluated)")


def canonical_json(report: dict[str, Any]) -> str:
    """Return the report as canonical JSON text (sorted keys, no NaN, UTF-8, trailing newline)."""
    return json.dumps(report, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_report(report: ValidationReport, inp: EvaluationInput, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json`` and a self-contained ``report.html``; return their paths by format.

    The HTML embeds its plots (ROC with the baseline, reliability diagram,
    decision curve, subgroup forest plot, contribution summary) as PNG data URIs
    and its CSS inline, so it opens offline as one file.
    """
    from clinical_mlops.evaluation.plots import report_plots
    from clinical_mlops.evaluation.render import render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    document = report.to_json()
    json_path.write_text(canonical_json(document), encoding="utf-8")
    html = render(
        "report.html.j2", report=document, plots=report_plots(report, inp), words=inp.spec.words()
    )
    html_path = out / "report.html"
    html_path.write_text(html, encoding="utf-8")
    return {"json": json_path, "html": html_path}
