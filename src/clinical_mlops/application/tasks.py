"""Check a task spec as training would (``tasks check``); draft one from a table (``tasks init``).

:func:`trainability_problems` is the one rule for what makes a valid spec untrainable
(an unapproved feature, no clinical baseline, a baseline reading features the spec does
not have, a feature SQL that is not shipped, a protected attribute without a column, a
table task named like a built-in one). ``tasks check`` (:func:`check_task`) reports it,
and training (``application.training``) refuses with the same words before any work.


:func:`init_task_from_table` writes the draft of :func:`draft_from_table`, which reads a ``.csv`` or ``.parquet`` file and writes the YAML
of a table task (:class:`~clinical_mlops.tasks.spec.TableColumns`): each column
becomes a feature of the kind its values suggest (numbers -> ``numeric``, 0/1 ->
``flag``, a few distinct texts -> ``categorical``), observed ranges become *draft*
valid ranges, categories the observed values; identifier-like and free-text
columns are listed under ``drop_columns``; ``sex``, ``age`` and ``race`` or
``ethnicity`` columns become protected attributes (race/ethnicity audit-only,
never a model input); a ``site`` or ``hospital`` column becomes ``table.site_column``
(an evaluation stratum, never a model input). What only a person can decide — every feature's
justification and approval, units, the population and setting, the prediction
time, the operating threshold, the acceptance criteria, the intended use and the
consent purposes — is written as a value starting with ``TODO``, which
:func:`~clinical_mlops.tasks.spec.load_task` refuses (``TaskSpecIncomplete``,
naming every such field) until someone replaces it.

A draft never decides a clinical question: it only saves typing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.data.contracts import unapproved_features
from clinical_mlops.data.table import builtin_name_problem, read_table
from clinical_mlops.errors import EvaluationError, TaskSpecInvalid, ValueInvalid
from clinical_mlops.evaluation.baseline import SCORES, score_for
from clinical_mlops.evaluation.fairness import missing_attribute_columns
from clinical_mlops.features.engine import feature_sql_problem
from clinical_mlops.tasks.spec import (
    BASELINE_COLUMN,
    TODO_MARKER,
    ColumnBaseline,
    NoBaseline,
    PointsBaseline,
    TaskSpec,
    load_task,
)

__all__ = [
    "TableDraft",
    "check_task",
    "draft_from_table",
    "escalation_summary",
    "init_task_from_table",
    "require_trainable",
    "trainability_problems",
]


def trainability_problems(spec: TaskSpec) -> list[tuple[str, str]]:
    """Return (field, problem) for everything in a valid ``spec`` that training would refuse.

    Each problem is worded as the step of training that meets it words it, so
    ``tasks check`` and ``train`` say the same thing; training calls
    :func:`require_trainable` before any work.
    """
    problems: list[tuple[str, str]] = []
    named = builtin_name_problem(spec)
    if named:
        problems.append(("name", named))
    sql = feature_sql_problem(spec)
    if sql:
        problems.append(("feature_sql", sql))
    unapproved = unapproved_features(spec)
    if unapproved:
        first = next(i for i, f in enumerate(spec.features) if f.status != "approved")
        problems.append((f"features.{first}.status", unapproved))
    try:
        score_for(spec)
    except EvaluationError as exc:
        problems.append(("clinical_baseline", str(exc)))
    # The evaluation frame: the features, the label, the year, ethnicity (and a baseline column).
    columns = [*spec.feature_names, spec.label.name, "real_year", "ethnicity", BASELINE_COLUMN]
    problems += [("protected_attributes", p) for p in missing_attribute_columns(spec, columns)]
    return problems


def require_trainable(spec: TaskSpec) -> None:
    """Raise :class:`TaskSpecInvalid` listing :func:`trainability_problems`, if there are any."""
    problems = trainability_problems(spec)
    if problems:
        raise TaskSpecInvalid(spec.name, problems)


def _baseline_summary(spec: TaskSpec) -> str:
    declared = spec.clinical_baseline
    if isinstance(declared, PointsBaseline):
        return f"points score {declared.name} (0-{declared.max_points} points)"
    if isinstance(declared, ColumnBaseline):
        return f"{declared.name} from table column {declared.column!r}"
    if isinstance(declared, NoBaseline):
        return "none (reason given)"
    return str(declared)


def escalation_summary(spec: TaskSpec) -> str:
    """Return the task's declared escalation policy in one line (resolved per release later)."""
    policy = spec.escalation
    near = policy.near_threshold
    conditions = []
    for c in policy.review_on:
        if c == "near_threshold":
            band = (
                f"declared band {near.band[0]:g}-{near.band[1]:g}"
                if near.band is not None
                else f"band sized to hold {policy.band_share_per_100:g} in 100 held-out stays"
            )
            c = f"{c} ({band})"
        conditions.append(c)
    beyond = (
        "cases beyond it are flagged review_deferred, not queued"
        if policy.beyond_budget == "defer"
        else "every case meeting a condition is queued"
    )
    return (
        f"review on {', '.join(conditions) or 'nothing'}; budget "
        f"{policy.max_reviews_per_100:g} per 100 stays; {beyond}"
    )


def check_task(name_or_path: str) -> dict[str, Any]:
    """Return the summary of a task spec that training would accept; raise what it would not.

    Raises :class:`TaskSpecInvalid` (or :class:`TaskSpecIncomplete` for a draft) naming
    every field: what the spec loader refuses, then everything :func:`trainability_problems`
    finds, in the words ``train`` would use.
    """
    spec = load_task(name_or_path)
    problems = trainability_problems(spec)
    if problems:
        raise TaskSpecInvalid(str(name_or_path), problems)
    return {
        "name": spec.name,
        "version": spec.version,
        "spec_sha256": spec.spec_hash(),
        "features": len(spec.features),
        "approved_features": len(spec.approved_features),
        "source": "table" if spec.table is not None else "raw events",
        "clinical_baseline": _baseline_summary(spec),
        "escalation": spec.escalation.model_dump(mode="json"),
        "escalation_summary": escalation_summary(spec),
    }


_ID_NAMES = {"id", "mrn", "patient_id", "subject_id", "person_id", "stay_id", "hadm_id"}
_LABEL_HINTS = ("label", "outcome", "target", "death", "died", "mortality", "readmi", "event")
_TIME_HINTS = ("year", "date", "time")
_ETHNICITY_NAMES = {"ethnicity", "race", "ethnic_group"}
_SITE_NAMES = {"site", "hospital", "site_name", "hospital_name", "facility"}
_MAX_CATEGORIES = 30
_AGE_BANDS = '[{label: "18-44", low: 18, high: 44}, {label: "45-64", low: 45, high: 64}, {label: "65-79", low: 65, high: 79}, {label: "80+", low: 80}]'


@dataclass
class TableDraft:
    """A drafted spec: its YAML text and what was inferred from the table."""

    yaml: str
    name: str
    columns: dict[str, str]  # file column -> role (id, label, time, feature:<kind>, dropped, ...)
    todos: int = 0
    notes: list[str] = field(default_factory=list)


def _snake(column: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", str(column).strip().lower()).strip("_")
    return name if re.match(r"^[a-z]", name or "") else f"x_{name or 'column'}"


def _q(value: Any) -> str:
    """A YAML scalar: JSON strings are valid double-quoted YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _todo(what: str) -> str:
    return _q(f"{TODO_MARKER}: {what}")


def _is_binary(values: pd.Series) -> bool:
    present = values.dropna()
    if present.empty:
        return False
    if pd.api.types.is_bool_dtype(present):
        return True
    if not pd.api.types.is_numeric_dtype(present):
        return False
    return set(np.unique(present.astype(float))) <= {0.0, 1.0}


def _years(values: pd.Series) -> pd.Series | None:
    """Return calendar years if ``values`` are years or dates, else None."""
    present = values.dropna()
    if present.empty:
        return None
    if pd.api.types.is_datetime64_any_dtype(present):
        return present.dt.year
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        ok = (present == np.floor(present)) & present.between(1800, 2200)
        return present.astype(int) if bool(ok.all()) else None
    parsed = pd.to_datetime(present.astype(str), errors="coerce", format="mixed")
    return parsed.dt.year if parsed.notna().all() else None


def _pick(frame: pd.DataFrame, given: str | None, test: Any, role: str) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise ValueInvalid(
                f"--{role}: the table has no column {given!r} "
                f"(expected one of {', '.join(map(str, frame.columns))})"
            )
        return given
    return next((str(c) for c in frame.columns if test(str(c), frame[c])), None)


def draft_from_table(
    path: str | Path,
    *,
    name: str | None = None,
    label: str | None = None,
    time: str | None = None,
    id_column: str | None = None,
) -> TableDraft:
    """Return the draft spec of the table at ``path`` (label, time and id guessed unless given).

    Raises ``TableInvalid`` when the file cannot be read and ``ValueError`` when a
    named column is not in it.
    """
    file = Path(path)
    frame = read_table(file)
    task = _snake(name or file.stem)
    id_col = _pick(frame, id_column, lambda c, v: _snake(c) in _ID_NAMES and v.is_unique, "id")
    label_col = _pick(
        frame,
        label,
        lambda c, v: c != id_col and _is_binary(v) and any(h in _snake(c) for h in _LABEL_HINTS),
        "label",
    )
    time_col = _pick(
        frame,
        time,
        lambda c, v: (
            c not in (id_col, label_col)
            and (
                pd.api.types.is_datetime64_any_dtype(v) or any(h in _snake(c) for h in _TIME_HINTS)
            )
            and _years(v) is not None
        ),
        "time",
    )
    roles: dict[str, str] = {}
    for col, role in ((id_col, "id"), (label_col, "label"), (time_col, "time")):
        if col is not None:
            roles[col] = role
    eth_col = next((str(c) for c in frame.columns if _snake(c) in _ETHNICITY_NAMES), None)
    if eth_col is not None and eth_col not in roles:
        roles[eth_col] = "ethnicity (audit only)"
    site_col = next(
        (str(c) for c in frame.columns if _snake(c) in _SITE_NAMES and str(c) not in roles), None
    )
    if site_col is not None:
        roles[site_col] = "site (evaluation stratum)"

    features: list[str] = []
    feature_names: list[str] = []
    dropped: list[str] = []
    renames: dict[str, str] = {}
    taken: set[str] = set()
    for col in map(str, frame.columns):
        if col in roles:
            continue
        values = frame[col]
        fname = _snake(col)
        while fname in taken:
            fname += "_2"
        if _snake(col) in _ID_NAMES or _snake(col).endswith("_id"):
            dropped.append(col)
            roles[col] = "dropped (identifier)"
            continue
        if pd.api.types.is_datetime64_any_dtype(values):
            dropped.append(col)
            roles[col] = "dropped (date or time)"
            continue
        if _is_binary(values):
            kind = "flag"
        elif pd.api.types.is_numeric_dtype(values):
            kind = "numeric"
        elif values.dropna().astype(str).nunique() <= _MAX_CATEGORIES:
            kind = "categorical"
        else:
            dropped.append(col)
            roles[col] = "dropped (free text)"
            continue
        taken.add(fname)
        feature_names.append(fname)
        if fname != col:
            renames[fname] = col
        roles[col] = f"feature:{kind}"
        features.append(_feature_yaml(fname, col, kind, values, file.name))

    label_name = _snake(label_col) if label_col else "outcome"
    if label_col and label_name != label_col:
        renames[label_name] = label_col
    years = _years(frame[time_col]) if time_col else None
    lines = _header(file, task, frame, label_col, years)
    lines += _label_yaml(label_name, label_col)
    lines += _split_yaml(years)
    lines += _table_yaml(
        time_col, label_col, label_name, id_col, eth_col, renames, dropped, site_col
    )
    lines += ["features:", *features, ""]
    lines += _protected_yaml(frame, roles, eth_col)
    baseline = next((k for k, s in SCORES.items() if set(s.features) <= set(feature_names)), None)
    kinds = {
        kind: next((n for n, r in zip(feature_names, features, strict=True) if kind in r), None)
        for kind in ("kind: numeric", "kind: categorical", "kind: flag")
    }
    lines += _governance_yaml(baseline, frame[label_col] if label_col else None, kinds)
    lines += _presentation_yaml(task)
    text = "\n".join(lines) + "\n"
    return TableDraft(
        yaml=text,
        name=task,
        columns=roles,
        todos=text.count(f'"{TODO_MARKER}'),
        notes=[
            f"{len(features)} feature(s), {len(dropped)} column(s) dropped",
            *([] if label_col else ["no 0/1 outcome column recognised: name it with --label"]),
            *([] if time_col else ["no year or date column recognised: name it with --time"]),
            *(
                ["no 'age' column: a table task needs a numeric age feature"]
                if "age" not in feature_names
                else []
            ),
        ],
    )


def init_task_from_table(
    path: str | Path,
    *,
    out: Path | None = None,
    force: bool = False,
    name: str | None = None,
    label: str | None = None,
    time: str | None = None,
    id_column: str | None = None,
) -> tuple[TableDraft, Path]:
    """Write the draft spec of the table at ``path``; return the draft and where it went.

    The draft goes to ``out`` (default: ``./<name>.yaml``). An existing file is kept
    unless ``force``: ``ValueInvalid`` says so, as it does for a named column the table
    lacks; ``TableInvalid`` when the table cannot be read.
    """
    draft = draft_from_table(path, name=name, label=label, time=time, id_column=id_column)
    target = out or Path(f"{draft.name}.yaml")
    if target.exists() and not force:
        raise ValueInvalid(f"--out: {target} exists; pass --force to overwrite it")
    target.write_text(draft.yaml, encoding="utf-8")
    return draft, target


def _feature_yaml(name: str, column: str, kind: str, values: pd.Series, source: str) -> str:
    label = column.replace("_", " ").strip()
    label = label[:1].upper() + label[1:]
    out = [
        f"  - name: {name}",
        f"    label: {_q(label)}  # shown to clinicians",
        f"    kind: {kind}",
        "    source: static",
        "    aggregation: static",
    ]
    present = values.dropna()
    if kind == "numeric":
        lo, hi = float(present.min()), float(present.max())
        lo, hi = (np.floor(lo), np.ceil(hi)) if lo != hi else (np.floor(lo) - 1, np.ceil(hi) + 1)
        unit = _q("a") if name == "age" else _todo(f"UCUM unit of column {column!r}")
        out += [
            f"    unit: {unit}",
            *(["    display_unit: years"] if name == "age" else []),
            f"    valid_range: [{lo:g}, {hi:g}]  # observed in {source}: set the physiologically valid range",
        ]
    elif kind == "flag":
        out += ['    unit: "1"', "    valid_range: [0, 1]"]
    else:
        cats = sorted(present.astype(str).str.strip().unique())
        out.append(f"    categories: [{', '.join(_q(c) for c in cats)}]  # observed in {source}")
    out += [
        f"    justification: {_todo(f'one sentence on why {column!r} is a clinically sound input')}",
        f"    status: {_todo('approved, once a clinician has reviewed this feature (or proposed / withdrawn)')}",
    ]
    return "\n".join(out)


def _header(
    file: Path, task: str, frame: pd.DataFrame, label_col: str | None, years: pd.Series | None
) -> list[str]:
    prevalence = (
        f"{float(pd.to_numeric(frame[label_col], errors='coerce').mean()):.3f}"
        if label_col
        else "unknown"
    )
    span = f"{int(years.min())}-{int(years.max())}" if years is not None else "unknown"
    lo, hi = (int(years.min()), int(years.max())) if years is not None else (None, None)
    return [
        f"# Draft task spec from {file.name} ({len(frame)} rows, years {span}, outcome rate "
        f"{prevalence}).",
        "# Written by `clinical-mlops tasks init`: every value starting with TODO is a decision for",
        "# a person; the spec loader refuses the file until none is left. Observed ranges and",
        "# categories are drafts: replace them with what is clinically valid.",
        f"name: {task}",
        "version: 1",
        f"title: {_todo('one line: what is predicted, for whom, when')}",
        f"description: {_todo('a short paragraph for clinicians')}",
        f"anchor: {_todo('icu_admission or discharge: what the prediction time counts from')}",
        f"prediction_time_hours: {_todo('hours after the anchor when the model runs')}",
        "observation_window:",
        f"  start_hours: {_todo('start of the data window the columns summarise (hours)')}",
        f"  end_hours: {_todo('end of that window, at or before the prediction time')}",
        "",
        "cohort:",
        f"  setting: {_todo('icu or ward')}",
        "  min_age: 18",
        f"  years: [{lo}, {hi}]" if lo is not None else f"  years: {_todo('[first, last] year')}",
        "  first_stay_only: false  # criteria that need raw events are the table producer's",
        "  exclude_repeat_stays_in_admission: false",
        "  min_los_hours: 0",
        "  max_missing_feature_fraction: 0.5",
        "  require_outcome: true",
        "",
    ]


def _presentation_yaml(task: str) -> list[str]:
    """The bedside words: every card, FHIR resource and page speaks of the task in these."""
    return [
        "",
        "presentation:  # the words every bedside output uses for this task, and no other",
        f"  service_id: {task.replace('_', '-')}",
        f"  title: {_todo('CDS service title, e.g. 30-day readmission risk at discharge')}",
        f"  description: {_todo('one or two sentences: what the service estimates, when')}",
        f"  risk_words: {_todo('what the card calls the risk, e.g. 30-day readmission risk')}",
        f"  outcome: {_todo('the outcome in words (FHIR RiskAssessment outcome.text)')}",
        "  outcome_coding: []  # e.g. [{system: 'http://snomed.info/sct', code: ..., display: ...}]",
        f"  event: {_todo('one occurrence of the outcome, e.g. readmission')}",
        f"  events: {_todo('plural, e.g. readmissions')}",
        f"  non_event: {_todo('a patient without it, e.g. patient not readmitted')}",
        f"  non_events: {_todo('plural, e.g. patients not readmitted')}",
        f"  units: {_todo('what one row is, plural: stays or admissions')}",
    ]


def _label_yaml(name: str, column: str | None) -> list[str]:
    return [
        "label:",
        f"  name: {name}",
        "  event: column",
        "  window:",
        f"    start_hours: {_todo('start of the outcome window (hours after the anchor)')}",
        f"    end_hours: {_todo('end of the outcome window')}",
        f"  description: {_todo(f'what a 1 in column {column!r} means, and over which window' if column else 'the outcome')}",
        "",
    ]


def _split_yaml(years: pd.Series | None) -> list[str]:
    if years is None or years.nunique() < 2:
        return [
            "split:",
            "  kind: temporal",
            f"  train_years: {_todo('[first, last] training years')}",
            f"  test_years: {_todo('[first, last] test years, after the training years')}",
            "  cv_folds: 5",
            "",
        ]
    lo, hi = int(years.min()), int(years.max())
    cut = min(int(np.quantile(years, 0.7)), hi - 1)
    return [
        "split:  # about 70 % of rows train, the later years test: check the periods",
        "  kind: temporal",
        f"  train_years: [{lo}, {cut}]",
        f"  test_years: [{cut + 1}, {hi}]",
        "  cv_folds: 5",
        "",
    ]


def _table_yaml(
    time_col: str | None,
    label_col: str | None,
    label_name: str,
    id_col: str | None,
    eth_col: str | None,
    renames: dict[str, str],
    dropped: list[str],
    site_col: str | None = None,
) -> list[str]:
    columns = {k: v for k, v in renames.items() if k != label_name}
    if eth_col is not None and eth_col != "ethnicity":
        columns["ethnicity"] = eth_col
    out = [
        "table:",
        f"  time_column: {_q(time_col) if time_col else _todo('the year or date column')}",
        f"  label_column: {_q(label_col) if label_col else _todo('the 0/1 outcome column')}",
    ]
    if id_col is not None:
        out.append(f"  id_column: {_q(id_col)}  # checked unique, never copied into a snapshot")
    if site_col is not None:
        out.append(
            f"  site_column: {_q(site_col)}  # the hospital: evaluation stratum, not an input"
        )
    if columns:
        out.append("  columns:  # spec name -> column in the file")
        out += [f"    {k}: {_q(v)}" for k, v in columns.items()]
    if dropped:
        out.append(f"  drop_columns: [{', '.join(_q(c) for c in dropped)}]  # never read: review")
    return [*out, ""]


def _protected_yaml(frame: pd.DataFrame, roles: dict[str, str], eth_col: str | None) -> list[str]:
    out = ["protected_attributes:"]
    for col, role in roles.items():
        if _snake(col) in ("sex", "gender") and role == "feature:categorical":
            groups = ", ".join(
                f"{_q(v)}: {_q(v)}" for v in sorted(frame[col].dropna().astype(str).unique())
            )
            out += [
                f"  - name: {_snake(col)}",
                f"    column: {_snake(col)}",
                f"    groups: {{{groups}}}",
            ]
        if _snake(col) == "age" and role == "feature:numeric":
            out += ["  - name: age_group", "    column: age", f"    bands: {_AGE_BANDS}"]
    if eth_col is not None:
        groups = ", ".join(
            f"{_q(v)}: {_q(v)}" for v in sorted(frame[eth_col].dropna().astype(str).unique())
        )
        out += [
            "  - name: ethnicity",
            "    column: ethnicity",
            f"    groups: {{{groups}}}",
            "    optional: true",
        ]
    if len(out) == 1:
        out[0] = "protected_attributes: []  # none recognised: declare sex, age and ethnicity"
    return [*out, ""]


def _baseline_yaml(kinds: dict[str, str | None]) -> list[str]:
    """The clinical_baseline TODO, with the three forms a person can choose from as comments."""
    numeric = kinds.get("kind: numeric") or "<numeric feature>"
    categorical = kinds.get("kind: categorical") or "<categorical feature>"
    flag = kinds.get("kind: flag") or "<flag feature>"
    return [
        "# clinical_baseline: the score clinicians already use; the report compares the model",
        f"# with it (R-L4). Neither built-in score ({', '.join(sorted(SCORES))}) fits these",
        "# columns. Choose one of:",
        "#   a points score over this spec's approved features, from its publication:",
        "#     clinical_baseline:",
        "#       kind: points",
        '#       name: "<score name>"',
        '#       citation: "<publication of the point table>"',
        "#       max_points: 4  # checked: the most the items can add up to",
        "#       items:",
        f"#         - {{feature: {numeric}, bands: [{{high: 30, points: 0}}, {{low: 30, points: 2}}]}}",
        f'#         - {{feature: {categorical}, categories: {{"<category>": 1}}}}',
        f"#         - {{feature: {flag}, points: 1}}",
        "#   a column of this table holding the score as charted (never a model input):",
        '#     clinical_baseline: {kind: column, name: "<score>", column: "<column>",',
        '#                         citation: "<publication>", max_points: 20}',
        "#   none, with the reason (then set acceptance.must_beat_baseline: false):",
        '#     clinical_baseline: {kind: none, reason: "<why no established score applies>"}',
        f"clinical_baseline: {_todo('a points score, a column of the table, or none with a reason (see above)')}",
    ]


def _governance_yaml(
    baseline: str | None, outcome: pd.Series | None, kinds: dict[str, str | None]
) -> list[str]:
    rate = (
        f" (the outcome rate is {float(pd.to_numeric(outcome, errors='coerce').mean()):.3f})"
        if outcome is not None
        else ""
    )
    base = (
        [f"clinical_baseline: {baseline}  # its features are all in the table"]
        if baseline
        else _baseline_yaml(kinds)
    )
    return [
        *base,
        "",
        "thresholds:",
        f"  operating: {_todo('probability at which the care team is alerted' + rate)}",
        "  conformal_alpha: 0.10",
        "  subgroup_auroc_gap: 0.05",
        "  auroc_degradation: 0.05",
        "  psi: 0.2",
        "",
        "acceptance:  # release criteria, declared before validation (gate 2)",
        f"  min_auroc: {_todo('minimum AUROC on the locked test set')}",
        f"  max_ece: {_todo('maximum expected calibration error')}",
        f"  min_subgroup_auroc: {_todo('minimum AUROC in every measurable subgroup')}",
        "  must_beat_baseline: true  # false when clinical_baseline is kind: none",
        "",
        "intended_use:",
        f"  statement: {_todo('who uses the prediction, when, and for which decision')}",
        f"  users: [{_todo('e.g. ward physicians')}]",
        f"  setting: {_todo('where it may be used')}",
        f"  population: {_todo('the patients it was validated for')}",
        "",
        f"non_intended_uses: [{_todo('populations and decisions it must not be used for')}]",
        "",
        "consent:",
        f"  purposes_allowed: [{_todo('e.g. direct_care')}]",
    ]
