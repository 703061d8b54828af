"""The task specification: what a model predicts, for whom, from which features.

A :class:`TaskSpec` is loaded from YAML and is the single source of truth for a
task: the population (cohort criteria), the prediction time and observation
window, the label, the temporal split, every feature with its unit, valid
range, aggregation and written clinical justification, protected attributes,
thresholds, intended and non-intended uses, and the consent purposes under which
inference may run. Only features declared here *and approved* may reach a model
(R-P1). Invalid specs raise :class:`~clinical_mlops.errors.TaskSpecInvalid`
naming each bad field by its path (``features.3.valid_range``).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

from clinical_mlops.errors import TaskSpecIncomplete, TaskSpecInvalid
from clinical_mlops.hashing import sha256_json
from clinical_mlops.vocabulary import REVIEW_CONDITIONS, Flag

__all__ = [
    "BASELINE_COLUMN",
    "BUILTIN_BASELINES",
    "FHIR_DERIVATIONS",
    "FHIR_RESOURCES",
    "MONITORING_RULES",
    "AcceptanceCriteria",
    "AgeBand",
    "ClinicalBaseline",
    "CohortCriteria",
    "ColumnBaseline",
    "EscalationPolicy",
    "EvaluationSpec",
    "Feature",
    "FhirSource",
    "LabelSpec",
    "MonitoringRule",
    "MonitoringSpec",
    "NearThreshold",
    "NoBaseline",
    "OutcomeCoding",
    "PointsBand",
    "PointsBaseline",
    "PointsItem",
    "Presentation",
    "ProtectedAttribute",
    "SplitSpec",
    "TableColumns",
    "TaskSpec",
    "Thresholds",
    "Window",
    "builtin_tasks",
    "escalation_from_mapping",
    "load_escalation",
    "load_sealed_task",
    "load_task",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """A time window in hours relative to the anchor (ICU admission for the ICU task)."""

    start_hours: float
    end_hours: float

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if not self.end_hours > self.start_hours:
            raise ValueError("end_hours: expected a value greater than start_hours")
        return self


#: FHIR R4 resource types a feature may be read from, with the status values each defines
#: (the R4 value sets) and the ones counted when a spec names none.
FHIR_RESOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Observation": (
        (
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
        ("final", "amended", "corrected"),
    ),
    "MedicationAdministration": (
        (
            "in-progress",
            "not-done",
            "on-hold",
            "completed",
            "entered-in-error",
            "stopped",
            "unknown",
        ),
        ("in-progress", "completed"),
    ),
    "MedicationRequest": (
        (
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ),
        ("active", "completed"),
    ),
    "Procedure": (
        (
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ),
        ("in-progress", "completed"),
    ),
    "DeviceUseStatement": (
        ("active", "completed", "entered-in-error", "intended", "stopped", "on-hold"),
        ("active", "completed"),
    ),
}

#: Values computed from two components of one Observation (a panel), and the components each
#: needs. ``mean_arterial_pressure`` = (systolic + 2 x diastolic) / 3.
FHIR_DERIVATIONS: dict[str, tuple[str, ...]] = {
    "mean_arterial_pressure": ("systolic", "diastolic"),
}

# "system|code": an absolute URI (http, https, urn, oid) and a code without spaces or bars.
_CODE = re.compile(r"^(?:https?://[^\s|]+|urn:[^\s|]+)\|[^\s|]+$")


def _check_code(field: str, value: str) -> None:
    if not _CODE.match(value):
        raise ValueError(
            f"{field}: {value!r} is not 'system|code' (an absolute system URI such as "
            "http://loinc.org, a bar, then the code: 'http://loinc.org|8478-0')"
        )


class FhirSource(_Strict):
    """One way an EHR records a feature: a FHIR resource type and the codes it carries.

    ``codes`` match ``Observation.code`` or any ``Observation.component[].code`` (a
    panel's component counts, with the panel's time and status), or the medication,
    procedure or device code of the other resource types, whose presence is a flag of
    value 1 at the resource's start time. ``status`` lists the resource statuses that
    count (default: the completed ones of each type). ``derive`` computes the value
    from two components of one Observation instead (``mean_arterial_pressure`` from
    ``systolic`` and ``diastolic``).
    """

    resource: str = "Observation"
    codes: tuple[str, ...] = ()
    status: tuple[str, ...] | None = None
    derive: Literal["mean_arterial_pressure"] | None = None
    systolic: str | None = None
    diastolic: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FhirSource:
        if self.resource not in FHIR_RESOURCES:
            raise ValueError(
                f"resource: {self.resource!r} is not read; expected one of "
                f"{', '.join(FHIR_RESOURCES)}"
            )
        for i, code in enumerate(self.codes):
            _check_code(f"codes: entry {i}", code)
        if len(set(self.codes)) != len(self.codes):
            raise ValueError("codes: a code is listed twice")
        components = {"systolic": self.systolic, "diastolic": self.diastolic}
        if self.derive is None:
            given = [name for name, value in components.items() if value is not None]
            if given:
                raise ValueError(f"{given[0]}: only a derived entry (derive: ...) has components")
            if not self.codes:
                raise ValueError("codes: expected at least one 'system|code' (or a derive entry)")
        else:
            if self.resource != "Observation":
                raise ValueError("derive: only an Observation's components can be derived from")
            if self.codes:
                raise ValueError(
                    "codes: a derived entry reads its components; list the codes of a measured "
                    "value in an entry of its own"
                )
            for name in FHIR_DERIVATIONS[self.derive]:
                value = components.get(name)
                if value is None:
                    raise ValueError(f"{name}: required to derive {self.derive} ('system|code')")
                _check_code(name, value)
        allowed = FHIR_RESOURCES[self.resource][0]
        for value in self.status or ():
            if value not in allowed:
                raise ValueError(
                    f"status: {value!r} is not a {self.resource} status; expected some of "
                    f"{', '.join(allowed)}"
                )
        if self.status is not None and not self.status:
            raise ValueError("status: expected at least one status (or leave it out)")
        return self

    @property
    def statuses(self) -> tuple[str, ...]:
        """The resource statuses that count: the declared ones, or the type's default."""
        return self.status if self.status is not None else FHIR_RESOURCES[self.resource][1]

    @property
    def all_codes(self) -> tuple[str, ...]:
        """Every 'system|code' this entry matches, components included."""
        return (*self.codes, *(c for c in (self.systolic, self.diastolic) if c is not None))


class Feature(_Strict):
    """One model input, declared with its clinical meaning."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str = Field(min_length=1, description="Name shown to clinicians")
    kind: Literal["numeric", "categorical", "flag"]
    source: Literal["static", "event"]
    variable: str | None = Field(
        default=None, description="Raw-event variable the feature aggregates (event features)"
    )
    unit: str | None = Field(default=None, description="UCUM unit of the raw events and feature")
    display_unit: str | None = None
    valid_range: tuple[float, float] | None = Field(
        default=None,
        description="Physiologically valid [low, high]; raw values outside are artifacts",
    )
    aggregation: Literal["static", "min", "max", "mean", "last", "any"]
    categories: tuple[str, ...] | None = None
    justification: str = Field(min_length=20, description="One-sentence clinical justification")
    status: Literal["approved", "proposed", "withdrawn"] = "proposed"
    caveat: str | None = None
    window: Window | None = Field(
        default=None,
        description="Hours relative to the anchor (default: the task's observation window)",
    )
    fhir: tuple[FhirSource, ...] = Field(
        default=(), description="Every way an EHR records the feature (the online path)"
    )
    molar_mass: float | None = Field(
        default=None, gt=0, description="g/mol: converts substance units (umol/L <-> mg/dL)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.valid_range is not None and not self.valid_range[0] < self.valid_range[1]:
            raise ValueError("valid_range: expected [low, high] with low < high")
        if self.source == "event":
            if not self.variable:
                raise ValueError("variable: required for an event feature")
            if self.aggregation == "static":
                raise ValueError("aggregation: an event feature needs min, max, mean, last or any")
            if self.unit is None:
                raise ValueError("unit: required for an event feature (UCUM code)")
        elif self.aggregation != "static":
            raise ValueError("aggregation: a static feature must use 'static'")
        if self.kind == "categorical" and not self.categories:
            raise ValueError("categories: required for a categorical feature")
        if self.kind == "flag" and self.aggregation not in ("any", "static", "max"):
            raise ValueError("aggregation: a flag is aggregated with 'any' (or 'max')")
        if self.kind == "numeric" and self.valid_range is None:
            raise ValueError("valid_range: required for a numeric feature")
        if self.source == "static" and self.window is not None:
            raise ValueError(
                "window: a static feature is one value per unit, not aggregated over a window"
            )
        if self.molar_mass is not None and self.kind != "numeric":
            raise ValueError("molar_mass: only a numeric feature has a molar mass")
        for i, entry in enumerate(self.fhir):
            if entry.resource != "Observation" and self.kind != "flag":
                raise ValueError(
                    f"fhir: entry {i} reads a {entry.resource}, whose presence is a flag; "
                    "only a flag feature can be read from it"
                )
        return self

    @property
    def shown_unit(self) -> str:
        """The unit as a clinician reads it."""
        return self.display_unit or self.unit or ""

    def fhir_codes(self) -> tuple[str, ...]:
        """Every 'system|code' an EHR may use for this feature (components included)."""
        return tuple(code for entry in self.fhir for code in entry.all_codes)


class CohortCriteria(_Strict):
    """Inclusion and exclusion criteria, applied in the order listed in the flow.

    The unit of analysis follows the task's anchor: an ICU stay (``icu_admission``)
    or a hospital admission (``discharge``). ``first_stay_only`` keeps the
    patient's first unit, ``min_los_hours`` measures the unit's own length
    (ICU or hospital). ``services`` keeps admissions whose ``service`` is listed
    (e.g. general medicine); ``discharged_alive`` drops in-hospital deaths.
    """

    setting: Literal["icu", "ward"]
    min_age: float = Field(ge=0)
    years: tuple[int, int]
    first_stay_only: bool = True
    exclude_repeat_stays_in_admission: bool = True
    min_los_hours: float = Field(ge=0)
    max_missing_feature_fraction: float = Field(gt=0, le=1)
    require_outcome: bool = True
    services: tuple[str, ...] | None = None
    discharged_alive: bool = False

    @model_validator(mode="after")
    def _years(self) -> CohortCriteria:
        if self.years[0] > self.years[1]:
            raise ValueError("years: expected [first, last] with first <= last")
        return self


class LabelSpec(_Strict):
    """The outcome: an event inside a window that starts at or after the prediction time.

    ``in_hospital_death``: the admission's death time falls in the window.
    ``readmission``: another admission of the same patient starts in the window;
    ``admission_types`` restricts it (e.g. unplanned: ``[EMERGENCY, URGENT]``).
    ``column``: a table task reads the 0/1 outcome from a column (see :class:`TableColumns`);
    the window then documents what its producer counted.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    event: Literal["in_hospital_death", "readmission", "column"]
    window: Window
    description: str = Field(min_length=10)
    admission_types: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _types(self) -> LabelSpec:
        if self.admission_types is not None and self.event != "readmission":
            raise ValueError("admission_types: only a readmission label has admission types")
        return self


class SplitSpec(_Strict):
    """Temporal split by real calendar year; CV folds live inside the train years only."""

    kind: Literal["temporal"] = "temporal"
    train_years: tuple[int, int]
    test_years: tuple[int, int]
    cv_folds: int = Field(default=5, ge=2, le=20)

    @model_validator(mode="after")
    def _disjoint(self) -> SplitSpec:
        if self.train_years[0] > self.train_years[1] or self.test_years[0] > self.test_years[1]:
            raise ValueError("train_years/test_years: expected [first, last] with first <= last")
        if self.train_years[1] >= self.test_years[0]:
            raise ValueError("test_years: the test period must start after the train period ends")
        return self


class AgeBand(_Strict):
    label: str
    low: float
    high: float | None = None  # inclusive upper bound; None = open-ended


class ProtectedAttribute(_Strict):
    """An attribute subgroup metrics and fairness are computed over."""

    name: str
    column: str
    groups: dict[str, str] | None = None  # group label -> value in the column
    bands: tuple[AgeBand, ...] | None = None
    optional: bool = False  # e.g. ethnicity "where available"

    @model_validator(mode="after")
    def _one_kind(self) -> ProtectedAttribute:
        if (self.groups is None) == (self.bands is None):
            raise ValueError(
                "groups/bands: give exactly one of groups (categorical) or bands (numeric)"
            )
        return self


class Thresholds(_Strict):
    """Numbers with clinical meaning; each change is a governed, audited event."""

    operating: float = Field(gt=0, lt=1)
    conformal_alpha: float = Field(gt=0, lt=0.5)
    subgroup_auroc_gap: float = Field(gt=0, lt=1)
    auroc_degradation: float = Field(gt=0, lt=1)
    psi: float = Field(gt=0)


class IntendedUse(_Strict):
    statement: str = Field(min_length=20)
    users: tuple[str, ...]
    setting: str
    population: str


class Consent(_Strict):
    purposes_allowed: tuple[str, ...] = Field(min_length=1)


class AcceptanceCriteria(_Strict):
    """Pre-declared release criteria (R-L3 gate 2 and 3), checked on the locked test set."""

    min_auroc: float = Field(default=0.75, gt=0, le=1)
    max_ece: float = Field(default=0.05, gt=0, le=1)
    min_subgroup_auroc: float = Field(
        default=0.65, gt=0, le=1, description="For subgroups with enough stays to measure AUROC"
    )
    must_beat_baseline: bool = True
    max_reviews_per_100: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Gate 2: most human reviews per 100 test stays under the release's policy",
    )
    max_coverage_shortfall: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description=(
            "Gate 3 risk: a class whose conformal coverage on the locked test set is below "
            "the target minus this slack must be acknowledged before the release is validated"
        ),
    )
    min_external_sites: int = Field(
        default=0,
        ge=0,
        description=(
            "Sites at which the release must have an external validation (clinical-mlops "
            "validate) with a measured AUROC before it is approved"
        ),
    )
    min_recalibration_events: int = Field(
        default=50,
        ge=1,
        description=(
            "Local recalibration: fewest events, and fewest non-events, each part of a site's "
            "stays must hold (calibrator fit, conformal fit, held-out evaluation)"
        ),
    )
    required_evidence: tuple[Literal["explanation", "fairness", "robustness", "profile"], ...] = (
        "explanation",
        "fairness",
        "robustness",
        "profile",
    )


class NearThreshold(_Strict):
    """The review band around the operating threshold: sized by a share of stays, or declared.

    ``reviews_per_100`` sizes the band on the model's held-out conformal-calibration
    stays so that at most that many in 100 fall in it (default: four fifths of the
    policy's review budget, leaving room for its other conditions);
    ``band`` declares its calibrated-probability bounds instead (they must hold the
    release's threshold, checked when the policy is resolved for a release).
    """

    reviews_per_100: float | None = Field(default=None, gt=0, le=100)
    band: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> NearThreshold:
        if self.reviews_per_100 is not None and self.band is not None:
            raise ValueError(
                "escalation.near_threshold: declare either reviews_per_100 (a band sized on "
                "held-out stays) or band (its bounds), not both"
            )
        if self.band is not None:
            lo, hi = self.band
            if not (0.0 <= lo < hi <= 1.0):
                raise ValueError(
                    f"escalation.near_threshold.band: expected 0 <= low < high <= 1 "
                    f"(calibrated probabilities), got [{lo:g}, {hi:g}]"
                )
        return self


class EscalationPolicy(_Strict):
    """Which cases go to human review, how many a team can take, and what happens beyond (R-H5).

    ``review_on`` names the conditions, in precedence order: any flag a scored prediction
    can carry (``empty_set``, ``out_of_scope``, ...), ``near_threshold`` (the risk lies in
    the band around the operating threshold) and ``drift_alert`` (while a drift alert is
    open on the served release, cases above the threshold are reviewed). The budget
    ``max_reviews_per_100`` is applied on held-out calibration stays when a release is
    built: with ``beyond_budget: defer`` the cases beyond it — lowest precedence first,
    then lowest risk — are flagged ``review_deferred`` and not queued; with ``queue``
    every case meeting a condition is queued and the budget is only gated and monitored.
    """

    review_on: tuple[str, ...] = (
        Flag.OUT_OF_SCOPE,
        Flag.EMPTY_SET,
        Flag.NEAR_THRESHOLD,
    )
    near_threshold: NearThreshold = Field(default_factory=NearThreshold)
    max_reviews_per_100: float = Field(default=5.0, gt=0, le=100)
    beyond_budget: Literal["defer", "queue"] = "defer"

    @model_validator(mode="after")
    def _known_conditions(self) -> EscalationPolicy:
        for i, name in enumerate(self.review_on):
            if name not in REVIEW_CONDITIONS:
                raise ValueError(
                    f"escalation.review_on.{i}: unknown condition {name!r}; expected one of "
                    f"{', '.join(REVIEW_CONDITIONS)}"
                )
        dupes = sorted({n for n in self.review_on if self.review_on.count(n) > 1})
        if dupes:
            raise ValueError(f"escalation.review_on: {dupes} named more than once")
        share = self.near_threshold.reviews_per_100
        if share is not None and share > self.max_reviews_per_100:
            raise ValueError(
                f"escalation.near_threshold.reviews_per_100: {share:g} exceeds the review "
                f"budget max_reviews_per_100 {self.max_reviews_per_100:g}"
            )
        return self

    @property
    def band_share_per_100(self) -> float | None:
        """Stays per 100 the review band is sized to hold; None when its bounds are declared."""
        near = self.near_threshold
        if near.band is not None:
            return None
        return (
            0.8 * self.max_reviews_per_100 if near.reviews_per_100 is None else near.reviews_per_100
        )


#: The points scores shipped with the package (their point tables: ``evaluation.baseline``).
BUILTIN_BASELINES = ("lace_like", "sofa_like")
#: The snapshot column that carries a table's own clinical score (``kind: column``): an
#: audit-only column beside the label, never a feature and never a model input (R-P1).
BASELINE_COLUMN = "clinical_baseline_score"


class PointsBand(_Strict):
    """``points`` when ``low <= value < high``; an absent bound is open."""

    low: float | None = None
    high: float | None = None
    points: StrictInt = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PointsBand:
        if self.low is None and self.high is None:
            raise ValueError("high: a band needs at least one bound (low or high)")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"high: expected a value above low ({self.low:g}), got {self.high:g}")
        return self


class PointsItem(_Strict):
    """One line of a points score: a feature scored by value bands, by category, or as a flag.

    Give exactly one of ``bands`` (numeric feature), ``categories`` (categorical feature:
    category -> points) or ``points`` (flag feature: points when it is 1). A missing value,
    a value in no band and an unlisted category score 0.
    """

    feature: str
    label: str | None = Field(default=None, description="The item as the source names it")
    bands: tuple[PointsBand, ...] | None = Field(default=None, min_length=1)
    categories: dict[str, Annotated[StrictInt, Field(ge=0)]] | None = Field(
        default=None, min_length=1
    )
    points: StrictInt | None = Field(default=None, ge=1)
    approximation: str | None = Field(
        default=None, description="Where this item departs from the published score"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> PointsItem:
        given = [k for k in ("bands", "categories", "points") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of bands (numeric feature), categories (categorical feature) "
                f"or points (flag feature); got {', '.join(given) or 'none'}"
            )
        bands = self.bands or ()
        for i, band in enumerate(bands):
            if band.low is None and i > 0:
                raise ValueError(f"bands: only the first band may be open below (band {i + 1} is)")
            if band.high is None and i < len(bands) - 1:
                raise ValueError(f"bands: only the last band may be open above (band {i + 1} is)")
        for i, (a, b) in enumerate(pairwise(bands)):
            if a.high is not None and b.low is not None and b.low < a.high:
                raise ValueError(
                    "bands: expected ascending bands that do not overlap; band "
                    f"{i + 2} starts at {b.low:g}, below the high {a.high:g} of band {i + 1}"
                )
        return self

    @property
    def max_points(self) -> int:
        """The most points this item can give."""
        if self.bands is not None:
            return max(b.points for b in self.bands)
        if self.categories is not None:
            return max(self.categories.values())
        return int(self.points or 0)


class PointsBaseline(_Strict):
    """A published points score declared over the task's own features (``kind: points``)."""

    kind: Literal["points"]
    name: str = Field(min_length=3, description="e.g. 'FINDRISC-like score'")
    citation: str = Field(min_length=10, description="The publication the point table is from")
    description: str | None = None
    max_points: StrictInt = Field(ge=1, description="The largest possible total (checked)")
    items: tuple[PointsItem, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _total(self) -> PointsBaseline:
        names = [i.feature for i in self.items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"items: feature(s) {dupes} are scored more than once")
        total = sum(i.max_points for i in self.items)
        if total != self.max_points:
            raise ValueError(
                f"max_points: the items add up to at most {total} points, not {self.max_points}"
            )
        return self


class ColumnBaseline(_Strict):
    """The score clinicians already use, read from a column of the table (``kind: column``).

    Table tasks only. The column holds whole points from 0 to ``max_points`` (a missing
    value scores 0); it is carried in the snapshot beside the label, never as a feature,
    so it never reaches the model (R-P1).
    """

    kind: Literal["column"]
    name: str = Field(min_length=3, description="e.g. 'NEWS2 as charted'")
    column: str = Field(min_length=1, description="The table column that holds the score")
    citation: str = Field(min_length=10)
    description: str | None = None
    max_points: StrictInt = Field(ge=1)


class NoBaseline(_Strict):
    """No established score to compare with (``kind: none``), and the written reason why.

    Gate 2 then cannot require beating a baseline (``acceptance.must_beat_baseline``
    must be false); the validation report and model card state the reason.
    """

    kind: Literal["none"]
    reason: str = Field(min_length=40)


ClinicalBaseline = Annotated[
    PointsBaseline | ColumnBaseline | NoBaseline, Field(discriminator="kind")
]


#: The monitoring rules (see ``clinical_mlops.monitoring.rules`` for what each looks at).
MONITORING_RULES = (
    "input_psi",
    "input_missingness",
    "input_adwin",
    "input_page_hinkley",
    "score_psi",
    "score_adwin",
    "score_page_hinkley",
    "auroc_degradation",
    "calibration",
    "residual_adwin",
    "fairness_gap",
    "override_rate_high",
    "override_rate_zero",
    "alert_volume",
    "review_rate_high",
    "queue_size_high",
    "review_latency_high",
)


class MonitoringRule(_Strict):
    """What an alert of one rule means: how severe, who owns it, what happens (never retraining)."""

    severity: Literal["info", "warning", "critical"]
    owner_role: Literal["clinician", "reviewer", "ml_engineer", "compliance"]
    action: Literal["open_review", "escalate", "suspend"]


class MonitoringSpec(_Strict):
    """How the served model is watched (R-O1..R-O3, R-H1, R-H2); defaults are the ICU task's.

    Thresholds shared with validation (PSI, AUROC degradation, subgroup AUROC gap)
    stay in :class:`Thresholds`; this section holds windows, look-backs, detector
    parameters and the rule table. Left at its defaults it is omitted from the
    spec hash, so a spec that spells the defaults out hashes like one that does not.
    """

    window_minutes: int = Field(default=15, ge=1, le=1440)
    input_lookback_hours: float = Field(
        default=6, gt=0, description="PSI, KS, chi-square and missingness look back this far"
    )
    min_window_stays: int = Field(
        default=200, ge=10, description="Fewer predictions in the look-back: no drift statistics"
    )
    test_alpha: float = Field(
        default=0.001, gt=0, lt=0.5, description="KS / chi-square level, Bonferroni over inputs"
    )
    missingness_increase: float = Field(default=0.10, gt=0, lt=1)
    # ADWIN and Page-Hinkley read standardised values (reference mean 0, SD 1), so their
    # parameters are in reference standard deviations whatever the input's unit.
    adwin_delta: float = Field(default=0.0002, gt=0, lt=1)
    page_hinkley_delta: float = Field(default=0.5, ge=0)
    page_hinkley_threshold: float = Field(default=25.0, gt=0)
    page_hinkley_min_instances: int = Field(default=30, ge=1)
    outcome_window: int = Field(
        default=2000, ge=50, description="Outcome-linked metrics use the latest this many outcomes"
    )
    outcome_max_age_days: float = Field(default=14, gt=0)
    min_outcomes: int = Field(default=500, ge=20)
    min_outcome_positives: int = Field(default=30, ge=5)
    max_ece: float = Field(default=0.08, gt=0, lt=1)
    fairness_min_group_positives: int = Field(default=10, ge=5)
    fairness_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    override_lookback_hours: float = Field(default=24, gt=0)
    max_override_rate: float = Field(default=0.4, gt=0, le=1)
    min_shown_for_override_rate: int = Field(default=100, ge=1)
    zero_override_days: float = Field(default=7, gt=0)
    zero_override_min_shown: int = Field(default=500, ge=1)
    alert_volume_lookback_hours: float = Field(default=24, gt=0)
    alert_volume_band: tuple[float, float] = (0.5, 2.0)
    max_open_cases: int = Field(
        default=50, ge=1, description="More open review cases of a release: queue_size_high"
    )
    max_review_latency_hours: float = Field(
        default=4.0,
        gt=0,
        description="Nine in ten cases decided within this many hours, else review_latency_high",
    )
    rules: dict[str, MonitoringRule] = Field(
        default_factory=dict, description="Per-rule overrides of severity, owner role and action"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringSpec:
        unknown = sorted(set(self.rules) - set(MONITORING_RULES))
        if unknown:
            raise ValueError(
                f"rules: unknown rule(s) {unknown}; rules are {list(MONITORING_RULES)}"
            )
        lo, hi = self.alert_volume_band
        if not 0 < lo < hi:
            raise ValueError("alert_volume_band: expected [low, high] with 0 < low < high")
        if self.min_outcomes > self.outcome_window:
            raise ValueError("min_outcomes: must not exceed outcome_window")
        return self


class OutcomeCoding(_Strict):
    """One coding of the predicted outcome (FHIR ``Coding``), e.g. SNOMED CT."""

    system: str = Field(pattern=r"^(https?://|urn:)\S+$", description="Code system URI")
    code: str = Field(min_length=1, pattern=r"^\S(.*\S)?$")
    display: str = Field(min_length=1)


class Presentation(_Strict):
    """How the task speaks at the bedside: every card, FHIR resource, page and model card.

    The words here are the only task words a bedside output uses, so a served model
    cannot speak about another task's outcome. ``risk_words`` leads the CDS card
    summary ("30-day readmission risk: 18 %"); ``outcome`` is the FHIR
    ``RiskAssessment.prediction.outcome`` (text and codings); ``event``/``events`` name
    one or several occurrences of the outcome ("death", "readmissions") and
    ``non_event``/``non_events`` the patients without it ("survivor", "patients not
    readmitted"); ``units`` names the rows the model scores ("stays", "admissions").
    A spec without this section (a table task drafted before it existed) gets neutral
    words derived from its name, title and label: see :meth:`TaskSpec.words`.
    """

    service_id: str = Field(
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        max_length=64,
        description="CDS Hooks service id (lower-case words joined by hyphens)",
    )
    title: str = Field(min_length=3, max_length=120, description="CDS service title")
    description: str = Field(min_length=20, description="CDS service description")
    risk_words: str = Field(
        min_length=3, max_length=60, description="What the probability is a risk of"
    )
    outcome: str = Field(min_length=3, description="The outcome in words (FHIR outcome.text)")
    outcome_coding: tuple[OutcomeCoding, ...] = ()
    event: str = Field(min_length=2, max_length=60)
    events: str = Field(min_length=2, max_length=60)
    non_event: str = Field(min_length=2, max_length=60)
    non_events: str = Field(min_length=2, max_length=60)
    units: str = Field(min_length=2, max_length=40)

    def phrases(self) -> tuple[str, ...]:
        """Return the task's own bedside phrases (for checking no other task uses them)."""
        return (
            self.service_id,
            self.title,
            self.risk_words,
            self.outcome,
            self.event,
            self.events,
            self.non_event,
            self.non_events,
            *(c.display for c in self.outcome_coding),
        )


class EvaluationSpec(_Strict):
    """How the validation report splits the locked test set (its matrix section).

    ``strata`` are evaluation strata, never model inputs: ``site`` (the hospital of each
    stay) and ``period`` (its calendar year). The report gives AUROC, calibration, ECE,
    workload and subgroup gaps per cell of the declared strata and per margin. A stratum
    reaches a model only if the task also declares it as a feature.
    """

    strata: tuple[Literal["site", "period"], ...] = ("site", "period")

    @model_validator(mode="after")
    def _distinct(self) -> EvaluationSpec:
        if len(set(self.strata)) != len(self.strata):
            raise ValueError(
                f"evaluation.strata: expected distinct strata among site, period; got "
                f"{list(self.strata)}"
            )
        return self


class TableColumns(_Strict):
    """The columns of one prepared table, for a task that reads no raw events (``data.table``).

    Each spec feature is the file column of the same name, or the one ``columns``
    maps it to (``columns`` may also map the label and ``ethnicity``).
    ``label_column`` holds the 0/1 outcome (default: ``label.name``);
    ``time_column`` the event time (date or timestamp) or the calendar year the
    temporal split reads; ``id_column`` an optional patient identifier, checked for
    duplicates and never copied into a snapshot. The hospital of each row comes from
    ``site_column`` when declared, else every row is at the one declared ``site`` (else
    ``unspecified``); like ethnicity it goes to the cohort (an evaluation stratum), never
    to the features (R-P1). Columns of the file that are
    knowingly not used are listed in ``drop_columns``; any other column the spec
    does not declare is refused (R-P1), never ignored silently.
    """

    time_column: str = Field(min_length=1)
    label_column: str | None = None
    id_column: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    drop_columns: tuple[str, ...] = ()
    site_column: str | None = Field(default=None, min_length=1)
    site: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_site_source(self) -> TableColumns:
        if self.site_column is not None and self.site is not None:
            raise ValueError(
                "table.site: declare either site_column (each row's hospital) or site (one "
                "hospital for the whole table), not both"
            )
        return self


class TaskSpec(_Strict):
    """A complete, validated task specification."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    title: str
    description: str
    anchor: Literal["icu_admission", "discharge"]
    prediction_time_hours: float = Field(ge=0)
    observation_window: Window
    cohort: CohortCriteria
    label: LabelSpec
    split: SplitSpec
    features: tuple[Feature, ...] = Field(min_length=1)
    # The feature SQL file under clinical_mlops/features; absent for a table task.
    feature_sql: str | None = Field(default=None, pattern=r"^[a-z0-9_]+\.sql$")
    protected_attributes: tuple[ProtectedAttribute, ...]
    thresholds: Thresholds
    intended_use: IntendedUse
    non_intended_uses: tuple[str, ...] = Field(min_length=1)
    consent: Consent
    acceptance: AcceptanceCriteria = Field(default_factory=AcceptanceCriteria)
    # The established score the validation report compares the model with (R-L4): a
    # built-in points score (its point table lives in clinical_mlops.evaluation.baseline),
    # a points score declared here, a column of the table, or none with the reason.
    clinical_baseline: Literal["sofa_like", "lace_like"] | ClinicalBaseline | None = None
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    # The strata of the validation matrix (site, period): never model inputs.
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    # A task over one prepared table instead of raw events (bring-your-own table).
    table: TableColumns | None = None
    # Bedside words (CDS service, card, FHIR outcome, model card); derived when absent.
    presentation: Presentation | None = None
    published: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _source_declared(self) -> TaskSpec:
        if self.table is None:
            if self.feature_sql is None:
                raise ValueError(
                    "feature_sql: required for a task over raw events (or declare a table section)"
                )
            if self.label.event == "column":
                raise ValueError("label.event: 'column' needs a table section to read it from")
            return self
        if self.label.event != "column":
            raise ValueError(
                "label.event: a table task reads its label from a column: use 'column'"
            )
        if self.feature_sql is not None:
            raise ValueError(
                "feature_sql: a table task has no feature SQL; its features are declared columns"
            )
        events = [f.name for f in self.features if f.source != "static"]
        if events:
            raise ValueError(
                f"features: {events} are event features; a table task's features are table "
                "columns (source: static, aggregation: static)"
            )
        age = next((f for f in self.features if f.name == "age"), None)
        if age is None or age.kind != "numeric":
            raise ValueError(
                "features: a table task needs a numeric 'age' feature (years): the cohort's "
                "min_age and the serving intended-use guard read it"
            )
        known = {*self.feature_names, self.label.name, "ethnicity"}
        unknown = sorted(set(self.table.columns) - known)
        if unknown:
            raise ValueError(
                f"table.columns: {unknown} are neither features, the label nor ethnicity"
            )
        for attr in self.protected_attributes:
            if attr.column not in self.feature_names and attr.column != "ethnicity":
                raise ValueError(
                    f"protected_attributes: column {attr.column!r} of {attr.name!r} must be a "
                    "feature or 'ethnicity' (the one audit-only column a snapshot carries)"
                )
        return self

    @model_validator(mode="after")
    def _coherent(self) -> TaskSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicate feature names {dupes}")
        if self.observation_window.end_hours > self.prediction_time_hours:
            raise ValueError(
                "observation_window.end_hours: must not be after prediction_time_hours "
                "(features may only use data available at prediction time)"
            )
        if self.label.window.start_hours < self.prediction_time_hours:
            raise ValueError(
                "label.window.start_hours: the label window must start at or after "
                "prediction_time_hours (otherwise the outcome leaks into the features)"
            )
        for i, f in enumerate(self.features):
            w, obs = f.window, self.observation_window
            if w is not None and (w.start_hours < obs.start_hours or w.end_hours > obs.end_hours):
                raise ValueError(
                    f"features.{i}.window: [{w.start_hours:g}, {w.end_hours:g}) h lies outside "
                    f"the task's observation_window [{obs.start_hours:g}, {obs.end_hours:g}) h"
                )
            if w is not None and any(
                abs(h * 60 - round(h * 60)) > 1e-9 for h in (w.start_hours, w.end_hours)
            ):
                raise ValueError(
                    f"features.{i}.window: expected whole minutes (hours x 60 an integer)"
                )
        owner: dict[str, tuple[str, str]] = {}
        for i, f in enumerate(self.features):
            for code in f.fhir_codes():
                seen = owner.setdefault(code, (f.name, f.variable or ""))
                if seen[1] != (f.variable or ""):
                    raise ValueError(
                        f"features.{i}.fhir: code {code} is also declared for feature "
                        f"{seen[0]!r}, which reads another variable; a code names one variable"
                    )
        lo, hi = self.cohort.years
        for part, (a, b) in (
            ("train_years", self.split.train_years),
            ("test_years", self.split.test_years),
        ):
            if a < lo or b > hi:
                raise ValueError(f"split.{part}: {a}-{b} lies outside cohort.years {lo}-{hi}")
        return self

    @model_validator(mode="after")
    def _baseline_fits(self) -> TaskSpec:
        base = self.clinical_baseline
        reserved = [n for n in (*self.feature_names, self.label.name) if n == BASELINE_COLUMN]
        if reserved:
            raise ValueError(
                f"features: {BASELINE_COLUMN!r} is reserved for the clinical baseline column"
            )
        if isinstance(base, PointsBaseline):
            for i, item in enumerate(base.items):
                where = f"clinical_baseline.items.{i}"
                if item.feature not in self.feature_names:
                    raise ValueError(
                        f"{where}.feature: {item.feature!r} is not a feature of this task "
                        f"(features: {', '.join(self.feature_names)})"
                    )
                feature = self.feature(item.feature)
                if feature.status != "approved":
                    raise ValueError(
                        f"{where}.feature: {item.feature!r} is {feature.status}; a baseline "
                        "reads approved features only"
                    )
                rule, expected = (
                    ("bands", "numeric")
                    if item.bands is not None
                    else ("categories", "categorical")
                    if item.categories is not None
                    else ("points", "flag")
                )
                if feature.kind != expected:
                    raise ValueError(
                        f"{where}.{rule}: scores a {expected} feature; {item.feature!r} is "
                        f"{feature.kind}"
                    )
                unknown = sorted(set(item.categories or ()) - set(feature.categories or ()))
                if unknown:
                    raise ValueError(
                        f"{where}.categories: {unknown} are not categories of "
                        f"{item.feature!r} ({', '.join(feature.categories or ())})"
                    )
        elif isinstance(base, ColumnBaseline):
            if self.table is None:
                raise ValueError(
                    "clinical_baseline.column: only a table task can read its baseline from a "
                    "column; a task over raw events declares a points score"
                )
            table = self.table
            used = {table.columns.get(f, f): f"feature {f!r}" for f in self.feature_names} | {
                table.label_column or table.columns.get(self.label.name, self.label.name): "label",
                table.time_column: "time_column",
                table.columns.get("ethnicity", "ethnicity"): "ethnicity",
            }
            if table.id_column:
                used[table.id_column] = "id_column"
            if base.column in used:
                raise ValueError(
                    f"clinical_baseline.column: {base.column!r} is already the table's "
                    f"{used[base.column]}; the baseline needs a column of its own"
                )
            if base.column in table.drop_columns:
                raise ValueError(
                    f"clinical_baseline.column: {base.column!r} is listed in "
                    "table.drop_columns; a dropped column cannot be read"
                )
        elif isinstance(base, NoBaseline) and self.acceptance.must_beat_baseline:
            raise ValueError(
                "acceptance.must_beat_baseline: true needs a clinical baseline to beat; this "
                "task declares none (clinical_baseline.kind: none): set it to false"
            )
        return self

    # -- derived views -----------------------------------------------------------------
    @property
    def unit(self) -> Literal["icu_stay", "admission"]:
        """The unit of analysis: one row per ICU stay, or per hospital admission."""
        return "icu_stay" if self.anchor == "icu_admission" else "admission"

    @property
    def event_key(self) -> Literal["stay_id", "hadm_id"]:
        """The raw-event column that ties an event to a unit of analysis."""
        return "stay_id" if self.unit == "icu_stay" else "hadm_id"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def approved_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.status == "approved")

    @property
    def event_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.source == "event")

    def words(self) -> Presentation:
        """Return the bedside words: the ``presentation`` section, or neutral words derived.

        Derived words never borrow another task's: the service id is the task name,
        the title and outcome are the spec's title and label description, the risk
        is "risk of <label name>", and outcome occurrences are "patients with the
        outcome". ``tasks init`` writes the section for a person to complete.
        """
        if self.presentation is not None:
            return self.presentation
        label = self.label.name.replace("_", " ")
        return Presentation(
            service_id=self.name.replace("_", "-"),
            title=self.title[:120],
            description=" ".join(self.intended_use.statement.split()),
            risk_words=f"risk of {label}"[:60],
            outcome=" ".join(self.label.description.split()),
            event="patient with the outcome",
            events="patients with the outcome",
            non_event="patient without the outcome",
            non_events="patients without the outcome",
            units="stays" if self.unit == "icu_stay" else "admissions",
        )

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name!r} is not declared in task {self.name!r}")

    def criteria_hash(self) -> str:
        """SHA-256 of everything that decides cohort membership and labels."""
        parts: dict[str, Any] = {
            "anchor": self.anchor,
            "prediction_time_hours": self.prediction_time_hours,
            "observation_window": self.observation_window.model_dump(mode="json"),
            "cohort": _stable(self.cohort.model_dump(mode="json"), "cohort"),
            "label": _stable(self.label.model_dump(mode="json", exclude={"description"}), "label"),
            "split": self.split.model_dump(mode="json"),
        }
        if self.table is not None:
            parts["table"] = _stable(self.table.model_dump(mode="json"), "table")
        return sha256_json(parts)

    def spec_hash(self) -> str:
        """SHA-256 of the whole spec (canonical JSON)."""
        data = self.model_dump(mode="json")
        data["cohort"] = _stable(data["cohort"], "cohort")
        data["label"] = _stable(data["label"], "label")
        data["features"] = [_stable(f, "feature") for f in data["features"]]
        data["acceptance"] = _stable(data["acceptance"], "acceptance")
        data["monitoring"] = _stable(data["monitoring"], "monitoring")
        if self.monitoring == MonitoringSpec():
            data.pop("monitoring")
        if self.escalation == EscalationPolicy():
            data.pop("escalation")
        if self.evaluation == EvaluationSpec():
            data.pop("evaluation")
        if self.table is None:
            data.pop("table")
        else:
            data["table"] = _stable(data["table"], "table")
        if self.presentation is None:
            data.pop("presentation")
        return sha256_json(data)

    def sql_path(self) -> Path:
        """Path of this task's feature SQL inside the package."""
        if self.feature_sql is None:
            raise TaskSpecInvalid(
                self.name, [("feature_sql", "a table task has no feature SQL (see table)")]
            )
        return Path(str(resources.files("clinical_mlops.features").joinpath(self.feature_sql)))


# Fields added after specs were first hashed. Left at their default they are omitted from the
# hashes, so a spec that does not use them keeps its criteria and spec hashes (and every
# snapshot id built from it).
_LATER_FIELDS: dict[str, dict[str, Any]] = {
    "cohort": {"services": None, "discharged_alive": False},
    "label": {"admission_types": None},
    "feature": {"window": None, "fhir": [], "molar_mass": None},
    "acceptance": {
        "max_reviews_per_100": None,
        "max_coverage_shortfall": 0.05,
        "min_external_sites": 0,
        "min_recalibration_events": 50,
    },
    "monitoring": {"max_open_cases": 50, "max_review_latency_hours": 4.0},
    "table": {"site_column": None, "site": None},
}


def _stable(dumped: dict[str, Any], part: str) -> dict[str, Any]:
    later = _LATER_FIELDS[part]
    return {k: v for k, v in dumped.items() if not (k in later and v == later[k])}


# -- loading ---------------------------------------------------------------------------

_BUILTIN_DIR = "clinical_mlops.tasks"


def builtin_tasks() -> list[str]:
    """Return the names of the task specs shipped with the package."""
    folder = resources.files(_BUILTIN_DIR)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    tagged = False
    for part in map(str, loc):
        if "[" in part:  # a union branch pydantic names by its type, not a field
            tagged = part.startswith("tagged-union[")
            continue
        if tagged:  # the discriminator's value (``points``) after a tagged union
            tagged = False
            continue
        parts.append(part)
    return ".".join(parts) or "(root)"


_BASELINE_FORMS = (
    f"one of {', '.join(BUILTIN_BASELINES)}, or a mapping with kind: points, column or none"
)


def _baseline_shape(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Name a clinical_baseline that is neither a built-in name nor a mapping (one clear line)."""
    value = data.get("clinical_baseline")
    if value is None or isinstance(value, dict) or value in BUILTIN_BASELINES:
        return []
    return [("clinical_baseline", f"expected {_BASELINE_FORMS}; got {value!r}")]


#: A value that starts with this marker is left for a person to complete (``tasks init``).
TODO_MARKER = "TODO"


def _todos(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Return (field path, text) of every string value still marked as a TODO."""
    if isinstance(value, str):
        return [(path or "(root)", value)] if value.lstrip().startswith(TODO_MARKER) else []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return []
    return [t for k, v in items for t in _todos(v, f"{path}.{k}" if path else str(k))]


def task_from_mapping(data: Any, *, source: str) -> TaskSpec:
    """Validate a parsed mapping as a :class:`TaskSpec`, raising ``TaskSpecInvalid``.

    A value still marked ``TODO`` (a drafted spec a person has not completed yet)
    raises :class:`TaskSpecIncomplete` listing every such field.
    """
    if not isinstance(data, dict):
        raise TaskSpecInvalid(
            source, [("(root)", f"expected a mapping, got {type(data).__name__}")]
        )
    todos = _todos(data)
    if todos:
        raise TaskSpecIncomplete(source, [(path, text) for path, text in todos])
    shape = _baseline_shape(data)
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = list(shape)
        for err in exc.errors():
            where = tuple(err["loc"])
            if where[:1] == ("clinical_baseline",) and (
                shape or (len(where) > 1 and str(where[1]).startswith("literal["))
            ):
                continue  # the built-in-name branch of a mapping, or a name already reported
            if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
                got = err.get("ctx", {}).get("tag")
                problems.append(
                    (
                        f"{_format_loc(where)}.kind",
                        "expected points, column or none" + (f"; got {got!r}" if got else ""),
                    )
                )
                continue
            loc = _format_loc(where)
            msg = err["msg"].removeprefix("Value error, ")
            # Validators that name their own field put it first ("unit: ..."): join paths.
            if (
                ": " in msg
                and msg.split(": ", 1)[0]
                .replace(".", "")
                .replace("_", "")
                .replace("/", "")
                .isalnum()
            ):
                head, rest = msg.split(": ", 1)
                if "." not in head and "/" not in head:
                    loc = f"{loc}.{head}" if loc != "(root)" else head
                else:
                    loc = head
                msg = rest
            problems.append((loc, msg))
        raise TaskSpecInvalid(source, problems) from None


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load a built-in task by name (``icu_mortality_48h``) or a spec from a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise TaskSpecInvalid(str(candidate), [("(file)", "no such file")])
        text = candidate.read_text(encoding="utf-8")
        source = str(candidate)
    else:
        name = str(name_or_path)
        if name not in builtin_tasks():
            raise TaskSpecInvalid(
                name, [("(name)", f"unknown task; built-in tasks are {', '.join(builtin_tasks())}")]
            )
        text = resources.files(_BUILTIN_DIR).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        source = f"{name}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskSpecInvalid(source, [(where, f"malformed YAML: {problem}")]) from None
    return task_from_mapping(data, source=source)


def escalation_from_mapping(data: Any, *, source: str) -> EscalationPolicy:
    """Validate a parsed mapping as an escalation policy, raising ``TaskSpecInvalid``.

    ``data`` is the ``escalation`` section itself or a mapping holding it under
    ``escalation`` (a task spec, or a file with that one section). Each problem names
    its field as a task spec would (``escalation.near_threshold.band``).
    """
    if isinstance(data, dict) and set(data) == {"escalation"}:
        data = data["escalation"]
    if not isinstance(data, dict):
        raise TaskSpecInvalid(
            source,
            [
                (
                    "escalation",
                    f"expected a mapping (the escalation section), got {type(data).__name__}",
                )
            ],
        )
    try:
        return EscalationPolicy.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            loc = ".".join(["escalation", *(str(p) for p in err["loc"])])
            msg = err["msg"].removeprefix("Value error, ")
            head, _, rest = msg.partition(": ")
            if head.startswith("escalation") and rest:  # the validator names its own field
                loc, msg = head, rest
            problems.append((loc, msg))
        raise TaskSpecInvalid(source, problems) from None


def load_escalation(path: str | Path) -> EscalationPolicy:
    """Return the escalation policy in a YAML file (the ``escalation`` section of a task spec)."""
    candidate = Path(path)
    try:
        text = candidate.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise TaskSpecInvalid(str(candidate), [("(file)", "no such file")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskSpecInvalid(str(candidate), [(where, f"malformed YAML: {problem}")]) from None
    return escalation_from_mapping(data, source=str(candidate))


def load_sealed_task(name: str, sealed: Path) -> TaskSpec:
    """Return the spec an artifact was built with: built-in ``name``, or the copy sealed in it.

    A snapshot and a release bundle keep the spec they were built from as
    ``task_spec.json``. A built-in task is read from the installed package (callers
    compare its hash with the one they recorded, so an edited built-in is caught); a
    task defined in a YAML file is read from the sealed copy, so it travels with the
    artifact and needs no file outside the workspace.
    """
    if name in builtin_tasks():
        return load_task(name)
    try:
        data = json.loads(sealed.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskSpecInvalid(
            name,
            [
                (
                    "(name)",
                    f"not a built-in task and no sealed spec at {sealed}; rebuild the artifact",
                )
            ],
        ) from None
    return task_from_mapping(data, source=str(sealed))
