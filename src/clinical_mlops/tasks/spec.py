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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinical_mlops.errors import TaskSpecIncomplete, TaskSpecInvalid
from clinical_mlops.hashing import sha256_json

__all__ = [
    "FHIR_DERIVATIONS",
    "FHIR_RESOURCES",
    "MONITORING_RULES",
    "AcceptanceCriteria",
    "AgeBand",
    "CohortCriteria",
    "Feature",
    "FhirSource",
    "LabelSpec",
    "MonitoringRule",
    "MonitoringSpec",
    "ProtectedAttribute",
    "SplitSpec",
    "TableColumns",
    "TaskSpec",
    "Thresholds",
    "Window",
    "builtin_tasks",
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
        if self.source == "static":
            for field in ("window", "fhir", "molar_mass"):
                if getattr(self, field) not in (None, ()):
                    raise ValueError(
                        f"{field}: a static feature comes from the cohort row (the Patient, "
                        "Encounter and Conditions online), not from coded events"
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
    required_evidence: tuple[Literal["explanation", "fairness", "robustness", "profile"], ...] = (
        "explanation",
        "fairness",
        "robustness",
        "profile",
    )


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


class TableColumns(_Strict):
    """The columns of one prepared table, for a task that reads no raw events (``data.table``).

    Each spec feature is the file column of the same name, or the one ``columns``
    maps it to (``columns`` may also map the label and ``ethnicity``).
    ``label_column`` holds the 0/1 outcome (default: ``label.name``);
    ``time_column`` the event time (date or timestamp) or the calendar year the
    temporal split reads; ``id_column`` an optional patient identifier, checked for
    duplicates and never copied into a snapshot. Columns of the file that are
    knowingly not used are listed in ``drop_columns``; any other column the spec
    does not declare is refused (R-P1), never ignored silently.
    """

    time_column: str = Field(min_length=1)
    label_column: str | None = None
    id_column: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    drop_columns: tuple[str, ...] = ()


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
    # The established points score the validation report compares the model with (R-L4);
    # its point table lives in clinical_mlops.evaluation.baseline.
    clinical_baseline: Literal["sofa_like", "lace_like"] | None = None
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    # A task over one prepared table instead of raw events (bring-your-own table).
    table: TableColumns | None = None
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
            parts["table"] = self.table.model_dump(mode="json")
        return sha256_json(parts)

    def spec_hash(self) -> str:
        """SHA-256 of the whole spec (canonical JSON)."""
        data = self.model_dump(mode="json")
        data["cohort"] = _stable(data["cohort"], "cohort")
        data["label"] = _stable(data["label"], "label")
        data["features"] = [_stable(f, "feature") for f in data["features"]]
        if self.monitoring == MonitoringSpec():
            data.pop("monitoring")
        if self.table is None:
            data.pop("table")
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
    return ".".join(str(part) for part in loc) or "(root)"


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
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _format_loc(tuple(err["loc"]))
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
