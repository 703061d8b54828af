"""The comparison an external validation adds to its report: development beside external.

An external validation (``clinical-mlops validate``) evaluates a release on data outside
its development with the same :func:`~clinical_mlops.evaluation.report.evaluate` as
development, so its ``report.json`` has the same schema; :func:`with_development_comparison`
adds the ``external`` section: for AUROC, calibration slope and intercept, ECE, and alerts
and clinician reviews per 100 stays, the development value, the external value and their
difference (external minus development), and whether the external AUROC's 95 % interval
lies wholly below development's.

A selection too small for a figure (the report's small-subgroup rule) carries the
report's insufficient-data wording in place of the external value and of the
difference: the comparison never shows a number the data cannot support.
"""

from __future__ import annotations

from typing import Any

from clinical_mlops.evaluation.fairness import INSUFFICIENT_DATA, MIN_STAYS
from clinical_mlops.evaluation.report import json_ready
from clinical_mlops.evaluation.validation_report import ValidationReport

__all__ = ["AUROC_CI_RULE", "comparison_rows", "with_development_comparison"]

AUROC_CI_RULE = (
    "The external AUROC is called lower than development's when the upper end of its 95 % "
    "bootstrap interval lies below the lower end of development's (the intervals do not overlap)."
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _interval(value: Any) -> list[float] | None:
    if isinstance(value, list) and len(value) == 2 and all(_number(v) is not None for v in value):
        return [float(v) for v in value]
    return None


def _row(metric: str, dev: Any, ext: Any, dev_ci: Any = None, ext_ci: Any = None) -> dict[str, Any]:
    d, e = _number(dev), _number(ext)
    return {
        "metric": metric,
        "development": dev,
        "development_ci": _interval(dev_ci) if d is not None else None,
        "external": ext,
        "external_ci": _interval(ext_ci) if e is not None else None,
        "difference": e - d if d is not None and e is not None else None,
    }


def comparison_rows(
    development: ValidationReport, external: ValidationReport
) -> list[dict[str, Any]]:
    """Return the development-against-external rows (AUROC, calibration, ECE, workload).

    When the external selection is too small to measure AUROC, the calibration figures
    are shown with the same insufficient-data wording: a slope fitted on a handful of
    stays would read as evidence.
    """
    dt, et = development.test, external.test
    dw, ew = development.workload, external.workload
    insufficient = et.auroc if isinstance(et.auroc, str) else None
    # below the report's smallest group, even a workload rate is not shown as a figure
    too_few = INSUFFICIENT_DATA.format(n=et.n) if et.n < MIN_STAYS else None

    def ext(value: Any) -> Any:
        return insufficient if insufficient is not None else value

    def rate(value: Any) -> Any:
        return too_few if too_few is not None else value

    return [
        _row("auroc", dt.auroc, et.auroc, dt.auroc_ci, et.auroc_ci),
        _row("calibration_slope", dt.calibration_slope, ext(et.calibration_slope)),
        _row("calibration_intercept", dt.calibration_intercept, ext(et.calibration_intercept)),
        _row("ece", dt.ece, ext(et.ece)),
        _row(
            "alerts_per_100",
            dw.alerts_per_100,
            rate(ew.alerts_per_100),
            dw.alerts_per_100_ci,
            ew.alerts_per_100_ci,
        ),
        _row(
            "reviews_per_100",
            dw.reviews_per_100,
            rate(ew.reviews_per_100),
            dw.reviews_per_100_ci,
            ew.reviews_per_100_ci,
        ),
    ]


def _summary(rows: list[dict[str, Any]], below: bool | None) -> str:
    auroc = rows[0]
    if below is None:
        if isinstance(auroc["external"], str):
            return (
                f"Too few stays or events to measure discrimination or calibration on these "
                f"data ({auroc['external']}); no figure is compared."
            )
        return "The AUROC intervals could not be compared (an interval was not computed)."
    ext_ci, dev_ci = auroc["external_ci"], auroc["development_ci"]
    head = (
        f"External AUROC {auroc['external']:.3f} (95 % CI {ext_ci[0]:.3f}-{ext_ci[1]:.3f}) "
        f"against {auroc['development']:.3f} ({dev_ci[0]:.3f}-{dev_ci[1]:.3f}) in development"
    )
    if below:
        return f"{head}: the external interval lies wholly below development's; discrimination is worse on these data."
    return f"{head}: the external interval does not lie below development's."


def with_development_comparison(
    external: ValidationReport, development: ValidationReport, *, about: dict[str, Any]
) -> ValidationReport:
    """Return ``external`` with its ``external`` section comparing it with ``development``.

    ``about`` names what was validated: release, bundle_sha256, snapshot_id, source,
    sites, selection (in words), years, n, n_events, development (its sites, years and
    locked test size) and independence (the statements of why the data are external).
    """
    rows = comparison_rows(development, external)
    ext_ci, dev_ci = rows[0]["external_ci"], rows[0]["development_ci"]
    below = None if ext_ci is None or dev_ci is None else bool(ext_ci[1] < dev_ci[0])
    section = about | {
        "rows": rows,
        "auroc_ci_below_development": below,
        "auroc_ci_rule": AUROC_CI_RULE,
        "summary": _summary(rows, below),
    }
    document = external.to_json() | {"external": json_ready(section)}
    return ValidationReport.from_json(document, source="report.json (external validation)")
