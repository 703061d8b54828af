"""The validation report as one typed document: written by :mod:`.report`, read everywhere else.

``report.json`` (schema :data:`SCHEMA`) is produced by
:func:`clinical_mlops.evaluation.report.evaluate` and read by the release gates,
the release dossier, the monitor and the model card. Every reader loads it through
:class:`ValidationReport` (``ValidationReport.load(path)`` or ``Bundle.report()``),
so a renamed or missing key fails at load with the file and the field named, never
as a ``KeyError`` or a silent ``None`` at gate or monitoring time.

Figures that cannot be computed are ``null``; a subgroup too small for a metric
carries ``"insufficient data (n=…)"`` in its place (:data:`Value`). Sections whose
keys are data (subgroup names, features, candidate models) are mappings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictBool, Tag

from clinical_mlops.documents import UNION_CASE, Document, Number, Section, Value

__all__ = [
    "SCHEMA",
    "BaselineComparison",
    "EscalationRecord",
    "ExternalComparison",
    "FairnessAlert",
    "FairnessMetric",
    "LockedTestMetrics",
    "Matrix",
    "MatrixCell",
    "NoBaselineDeclared",
    "SubgroupMetrics",
    "ValidationReport",
]

SCHEMA = "clinical-mlops/validation-report/v1"

Interval = list[Value] | str | None


class ReportTask(Section):
    name: str
    version: int
    title: str
    spec_sha256: str
    label: str


class ReportModel(Section):
    version: str
    selected_model: str
    hyperparameters: dict[str, Any]
    lineage: dict[str, Any]
    seed: int


class ReportMethods(Section):
    n_boot: int
    ci: str
    flag_rule: str
    ece_binning: str
    small_subgroup_rule: str
    subgroup_definition: str


class SubgroupMetrics(Section):
    """The Table-2 metric set of one group of stays (``"insufficient data"`` where too small)."""

    n: int
    n_positive: int
    prevalence: Value
    auroc: Value
    auroc_ci: Interval
    sensitivity: Value
    specificity: Value
    ppv: Value
    npv: Value
    brier: Value
    ece: Value
    alerts: int
    attribute: str | None = None
    group: str | None = None


class SetType(Section):
    count: int
    fraction: Value


class LockedTestMetrics(SubgroupMetrics):
    """The locked test set: the Table-2 metrics plus calibration, conformal and confusion counts."""

    threshold: Number
    flag_rule: str
    ece_binning: str
    calibration_slope: Value
    calibration_intercept: Value
    conformal_coverage: Value
    conformal_coverage_by_class: dict[str, Value]
    set_types: dict[str, SetType]
    tp: int
    fp: int
    tn: int
    fn: int


class FairnessMetric(Section):
    value: Value
    ci: Interval
    attribute: str | None
    threshold: Number | None = None
    by_attribute: dict[str, dict[str, Any]] = Field(default_factory=dict)


class FairnessAlert(Section):
    type: str
    attribute: str
    gap: Number
    tolerance: Number
    best_group: str
    best_auroc: Number
    worst_group: str
    worst_auroc: Number
    message: str


class AurocDifference(Section):
    value: Value
    ci: Interval
    definition: str


class BaselineComparison(Section):
    name: str
    source: str
    approximations: list[str]
    missing_values: str
    features: list[str]
    auroc: Value
    auroc_ci: Interval
    cutoff: int
    cutoff_rule: str
    alert_fraction: Value
    sensitivity: Value
    specificity: Value
    ppv: Value
    npv: Value
    auroc_difference: AurocDifference
    operating_points: list[dict[str, Value]]
    mean_score: Value


class NoBaselineDeclared(Section):
    """The task declares no clinical baseline (``kind: none``): nothing compared, and why."""

    declared: Literal[False]
    reason: str
    statement: str


def _baseline_form(value: Any) -> str:
    declared = (
        value.get("declared") if isinstance(value, dict) else getattr(value, "declared", None)
    )
    return f"{UNION_CASE}none" if declared is False else f"{UNION_CASE}comparison"


#: The report's baseline section: the comparison, or the statement that there is none.
Baseline = Annotated[
    Annotated[BaselineComparison, Tag(f"{UNION_CASE}comparison")]
    | Annotated[NoBaselineDeclared, Tag(f"{UNION_CASE}none")],
    Discriminator(_baseline_form),
]


class DecisionCurve(Section):
    operating_threshold: Number
    points: list[dict[str, Value]]
    definition: str


class WorkloadPoint(Section):
    threshold: Number
    alerts_per_100: Value
    true_alerts_per_100: Value
    false_alerts_per_100: Value
    number_needed_to_evaluate: Value


class Workload(WorkloadPoint):
    """The workload at the report's threshold and escalation policy (per 100 test stays).

    ``reviews_per_100`` counts the stays the policy queues for human review;
    ``deferred_per_100`` those meeting a review condition beyond the budget (flagged,
    not queued); ``reviews_by_reason`` splits the reviews by the first condition each
    stay meets, in the policy's precedence order. Reports written before escalation
    policies lack the review figures (``None``).
    """

    alerts_per_100_ci: Interval = None
    reviews_per_100: Value = None
    reviews_per_100_ci: Interval = None
    deferred_per_100: Value = None
    reviews_by_reason: dict[str, Value] | None = None
    by_threshold: list[WorkloadPoint]


class EscalationRecord(Section):
    """The escalation policy the report was computed under, resolved at its threshold.

    The same document as ``deployment.json``'s ``escalation`` (``modeling.escalation``):
    a release's evidence and its service route the same cases.
    """

    format: Literal["clinical-mlops/escalation/v1"]
    review_on: list[str]
    threshold: Number
    band: list[Number] | None
    band_sizing: str
    max_reviews_per_100: Number
    beyond_budget: Literal["defer", "queue"]
    cutoff: dict[str, Any] | None
    calibration: dict[str, Any]
    statement: str


class Robustness(Section):
    method: str
    reference: dict[str, Value]
    reference_matches_evaluated_probabilities: StrictBool
    masked: dict[str, dict[str, Any]]


class ErrorExamples(Section):
    note: str
    false_negatives: list[dict[str, Any]]
    false_positives: list[dict[str, Any]]


class Calibration(Section):
    method: str | None
    fitted_on: str | None
    n_fitted: int | None
    ece_binning: str
    ece: Value
    ece_equal_mass: Value
    ece_equal_mass_binning: str
    ece_before_calibration: Value
    brier: Value
    slope: Value
    intercept: Value
    recalibration_intercept: Value
    slope_intercept_method: str
    reliability_curve: list[dict[str, Value]]
    reliability_curve_equal_mass: list[dict[str, Value]]


class Conformal(Section):
    """The conformal artifact's own description, then its coverage on the locked test set."""

    schema_id: str | None = Field(default=None, alias="schema")
    method: str | None = None
    quantiles: dict[str, Value] | None = None
    n_calibration: dict[str, int] | None = None
    nonconformity: str | None = None
    guarantee: str | None = None
    alpha: Number
    spec_alpha: Number
    target_coverage: Number
    coverage: Value
    coverage_by_class: dict[str, Value]
    meets_target_by_class: dict[str, StrictBool | None]
    set_types: dict[str, SetType]
    low_confidence_sets: str


class CrossValidation(Section):
    selected_model: str
    candidates: dict[str, dict[str, Any]]
    folds: int


class Importance(Section):
    feature: str
    label: str
    mean_abs_contribution: Number


class LockedTestSet(Section):
    n: int
    n_positive: int
    years: list[int] | None
    missingness: dict[str, Number]


class Split(Section):
    kind: str
    train_years: list[int]
    test_years: list[int]


class Cohort(Section):
    snapshot_id: str | None
    source: str | None
    cohort_flow: list[dict[str, Any]]
    n_stays: int | None
    n_train: int | None
    n_test: int | None
    prevalence: Value
    prevalence_train: Value
    prevalence_test: Value
    missingness_train: dict[str, Any]
    test_set: LockedTestSet
    split: Split


class ComparisonRow(Section):
    metric: str
    ours: Value
    published: Value
    difference: Value


class PublishedComparison(Section):
    citation: str | None
    rows: list[ComparisonRow]
    note: str


class ExternalRow(Section):
    """One figure of an external validation beside the development figure it is compared with."""

    metric: str
    development: Value
    development_ci: Interval = None
    external: Value
    external_ci: Interval = None
    difference: Value


class ExternalComparison(Section):
    """How a release did on data outside its development (``clinical-mlops validate``).

    ``rows`` compare the external figures with the development report's (external minus
    development); a figure the selection is too small for carries the insufficient-data
    wording on both sides, never a number.
    """

    release: str
    bundle_sha256: str
    snapshot_id: str
    source: str | None
    sites: list[str]
    selection: str
    years: list[int]
    n: int
    n_events: int
    development: dict[str, Any]
    independence: list[str]
    rows: list[ExternalRow]
    auroc_ci_below_development: StrictBool | None
    auroc_ci_rule: str
    summary: str


class MatrixAuroc(Section):
    value: Value
    ci: Interval


class SubgroupGap(Section):
    value: Number
    attribute: str
    best_group: str
    worst_group: str


class MatrixCell(Section):
    """The figures of one site × period cell, or of a margin (``"all"`` in its place).

    A figure the insufficient-data rule withholds reads ``"insufficient data (n=…)"``;
    ``reviews_per_100`` is ``None`` when the report has no escalation policy.
    """

    site: str
    period: str
    n: int
    n_events: int
    prevalence: Value
    auroc: MatrixAuroc | str
    calibration_slope: Value
    calibration_intercept: Value
    ece: Value
    alerts_per_100: Value
    reviews_per_100: Value
    max_subgroup_gap: SubgroupGap | str | None


class Matrix(Section):
    """The validation matrix (``evaluation.strata``): per cell, per site and per period."""

    strata: list[str]
    method: str
    rows: list[MatrixCell]
    by_site: list[MatrixCell]
    by_period: list[MatrixCell]


class ValidationReport(Document):
    """``report.json``: every figure of the locked-test validation of one model version."""

    schema_id: Literal["clinical-mlops/validation-report/v1"] = Field(alias="schema")
    generator: str
    task: ReportTask
    model: ReportModel
    methods: ReportMethods
    test: LockedTestMetrics
    subgroups: dict[str, SubgroupMetrics]
    fairness: dict[str, FairnessMetric]
    fairness_alerts: list[FairnessAlert]
    baseline: Baseline
    decision_curve: DecisionCurve
    workload: Workload
    robustness: Robustness
    error_examples: ErrorExamples
    calibration: Calibration
    conformal: Conformal
    cv: CrossValidation
    global_importance: list[Importance]
    cohort: Cohort
    limitations: list[str]
    published_comparison: PublishedComparison
    #: absent in reports written before escalation policies
    escalation: EscalationRecord | None = None
    #: present only in the report of an external validation (``clinical-mlops validate``)
    external: ExternalComparison | None = None

    #: absent in reports written before the validation matrix
    matrix: Matrix | None = None

    def workload_summary(self) -> dict[str, Any]:
        """Return the workload the release puts on its team, at the report's own threshold.

        Alerts and clinician reviews per 100 test stays with their 95 % bootstrap CIs,
        the cases beyond the review budget, reviews by first condition met, and the
        escalation policy in words; review figures are ``None`` in reports written
        before escalation policies.
        """
        w = self.workload
        return {
            "threshold": w.threshold,
            "alerts_per_100": w.alerts_per_100,
            "alerts_per_100_ci": w.alerts_per_100_ci,
            "reviews_per_100": w.reviews_per_100,
            "reviews_per_100_ci": w.reviews_per_100_ci,
            "deferred_per_100": w.deferred_per_100,
            "reviews_by_reason": dict(w.reviews_by_reason or {}),
            "policy": None if self.escalation is None else self.escalation.statement,
        }

    def measured_subgroup_auroc(self) -> dict[str, float]:
        """Return ``"attribute=group"`` -> AUROC for every subgroup large enough to measure it."""
        return {
            key: float(row.auroc)
            for key, row in self.subgroups.items()
            if isinstance(row.auroc, int | float)
        }
