"""Bring-your-own table: a snapshot from one prepared row per patient, without raw events.

Many teams already hold a table with one row per patient (or per stay) whose
features were aggregated by their own pipeline. A task spec with a ``table``
section (:class:`~clinical_mlops.tasks.spec.TableColumns`) declares its columns:
the features (kind, unit, valid range, categories, justification, approval), the
0/1 label, the event time or calendar year of the temporal split, the protected
attributes and an optional patient id. :func:`prepare_table` checks a CSV or
Parquet file against them, and ``features.snapshot.build_table_snapshot`` writes the
result as the same content-addressed snapshot the raw-event pipeline writes, so
training, validation, bundles, gates, serving and monitoring run unchanged. The feature SQL step becomes a *declared-column projection*:

1. **Columns** (R-P1): every declared column must be present; a column the spec
   does not declare is refused unless ``table.drop_columns`` lists it (then it is
   dropped and the manifest names it) — nothing is ignored silently.
2. **Types**: numeric features must hold numbers, flags 0/1, the label 0/1, the
   time column a year or a date; the patient id, when declared, must be unique
   (one row per patient, so no patient sits in both train and test). The id is
   never copied into the snapshot: a row's ``stay_id`` is its 1-based row number.
3. **Cohort flow**: rows in the table, age >= ``cohort.min_age``, year within
   ``cohort.years``, outcome recorded, inside the train or test period, and the
   data-sufficiency criterion. Criteria that need raw events (first stay, length
   of stay, service, discharged alive) cannot be checked on a table; the manifest
   lists them as the table producer's responsibility.
4. **Contracts**: values outside a feature's valid range are artefacts set to
   missing when they are at most 1 % of the column (soft), and stop the build
   above that (hard: a unit or mapping error); categories must be declared.

The leakage check of the raw-event pipeline recomputes every feature from the
events charted before the prediction time; a table holds no event times, so that
check **cannot run**. The manifest says so (``leakage_check``), and the table's
producer is responsible for computing each column from data available at the
prediction time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clinical_mlops.data.cohort import (
    Cohort,
    FlowStep,
    _split,
    apply_missingness_criterion,
    require_both_classes,
)
from clinical_mlops.data.contracts import (
    MAX_OUT_OF_RANGE_FRACTION,
    Check,
    ContractReport,
    check_features,
    conform_features,
)
from clinical_mlops.data.raw import UNSPECIFIED_SITE
from clinical_mlops.errors import ContractViolation, TableInvalid, TaskSpecInvalid
from clinical_mlops.hashing import sha256_file, sha256_json
from clinical_mlops.tasks.spec import (
    BASELINE_COLUMN,
    ColumnBaseline,
    TableColumns,
    TaskSpec,
    builtin_tasks,
)

__all__ = [
    "LEAKAGE_NOT_CHECKED",
    "TABLE_SOURCE",
    "PreparedTable",
    "builtin_name_problem",
    "declared_columns",
    "prepare_table",
    "read_table",
]

TABLE_SOURCE = "table"
LEAKAGE_NOT_CHECKED = (
    "not checked: a prepared table holds no event times, so features cannot be recomputed "
    "from the events charted before the prediction time; the table's producer is responsible "
    "for computing every column from data available at the prediction time"
)
# Cohort criteria that need raw events, with the value that asks for nothing; a table cannot
# show them, so any other value is listed as the table producer's responsibility.
_EVENT_CRITERIA = {
    "first_stay_only": False,
    "exclude_repeat_stays_in_admission": False,
    "min_los_hours": 0,
    "services": None,
    "discharged_alive": False,
}
_EXAMPLES = 5

StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class PreparedTable:
    """A table checked against its spec: the cohort and features a snapshot is written from.

    ``source``, ``sql`` and ``extra`` are the snapshot manifest's source, feature-code
    and table sections (the projection, the criteria a table cannot show, the leakage
    check that could not run).
    """

    stays: pd.DataFrame
    features: pd.DataFrame
    report: ContractReport
    flow: list[dict[str, Any]]
    source: dict[str, Any]
    sql: dict[str, str]
    extra: dict[str, Any]


def read_table(path: str | Path) -> pd.DataFrame:
    """Return the rows of a ``.csv`` or ``.parquet`` file; raise ``TableInvalid`` if unreadable."""
    file = Path(path)
    if not file.is_file():
        raise TableInvalid(f"table {file}: no such file")
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(file)
        elif suffix == ".parquet":
            frame = pq.read_table(file).to_pandas()
        else:
            raise TableInvalid(f"table {file}: expected a .csv or .parquet file, got {suffix!r}")
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        raise TableInvalid(f"table {file}: cannot be read: {exc}") from None
    if frame.empty:
        raise TableInvalid(f"table {file}: the table has no rows")
    dupes = sorted({str(c) for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise TableInvalid(f"table {file}: column name(s) {dupes} appear more than once")
    return frame


def declared_columns(spec: TaskSpec) -> dict[str, str]:
    """Return spec name -> file column for every column the task reads (features first).

    The keys are the feature names, the label name, ``__time__``, ``__id__`` (when an
    id is declared), ``__site__`` (when a site column is declared), ``ethnicity`` (when a
    protected attribute reads it) and
    :data:`~clinical_mlops.tasks.spec.BASELINE_COLUMN` (when the clinical baseline is a
    column of the table).
    """
    table = _table(spec)
    out = {f.name: table.columns.get(f.name, f.name) for f in spec.features}
    out[spec.label.name] = table.label_column or table.columns.get(spec.label.name, spec.label.name)
    out["__time__"] = table.time_column
    if table.id_column:
        out["__id__"] = table.id_column
    if table.site_column:
        out["__site__"] = table.site_column
    if any(a.column == "ethnicity" for a in spec.protected_attributes):
        out["ethnicity"] = table.columns.get("ethnicity", "ethnicity")
    if isinstance(spec.clinical_baseline, ColumnBaseline):
        out[BASELINE_COLUMN] = spec.clinical_baseline.column
    return out


def _baseline_points(values: pd.Series, baseline: ColumnBaseline, where: str) -> pd.Series:
    """Return the charted clinical score as floats: whole points in [0, max_points] or missing."""
    what = f"clinical baseline column {baseline.column!r}"
    nums = _numbers(values, what, where)
    bad = nums.notna() & ((nums != np.floor(nums)) | (nums < 0) | (nums > baseline.max_points))
    if bad.any():
        shown = sorted({float(v) for v in nums[bad]})[:_EXAMPLES]
        raise TableInvalid(
            f"{where}: {what} must hold whole points from 0 to {baseline.max_points} "
            f"(clinical_baseline.max_points); found {shown} (rows {_rows(bad)})"
        )
    return nums


def _table(spec: TaskSpec) -> TableColumns:
    if spec.table is None:
        raise TaskSpecInvalid(
            spec.name,
            [
                (
                    "table",
                    "--source table needs a task spec with a table section declaring its "
                    "columns; draft one with `clinical-mlops tasks init --from-table FILE`",
                )
            ],
        )
    return spec.table


def builtin_name_problem(spec: TaskSpec) -> str | None:
    """Return why a table task may not carry its name (a built-in task's), or None."""
    if spec.table is not None and spec.name in builtin_tasks():
        return f"{spec.name!r} is a built-in task; give the table task its own name"
    return None


def _rows(mask: np.ndarray | pd.Series) -> str:
    """Up to five 1-based file rows where ``mask`` holds (the header is row 0)."""
    rows = (np.flatnonzero(np.asarray(mask, dtype=bool)) + 1)[:_EXAMPLES].tolist()
    return ", ".join(str(r) for r in rows)


def _check_columns(frame: pd.DataFrame, spec: TaskSpec, where: str) -> dict[str, str]:
    cols = declared_columns(spec)
    table = _table(spec)
    present = set(map(str, frame.columns))
    optional_ethnicity = all(
        a.optional for a in spec.protected_attributes if a.column == "ethnicity"
    )
    missing = [
        f"{col} ({name})"
        for name, col in cols.items()
        if col not in present and not (name == "ethnicity" and optional_ethnicity)
    ]
    if missing:
        raise TableInvalid(
            f"{where}: declared column(s) missing: {', '.join(missing)}; the file has "
            f"{', '.join(sorted(present))}"
        )
    extra = sorted(present - set(cols.values()) - set(table.drop_columns))
    if extra:
        raise TableInvalid(
            f"{where}: column(s) {extra} are not declared by task {spec.name!r}; an undeclared "
            "input is refused, not ignored (R-P1): declare, justify and approve it as a feature, "
            "or list it under table.drop_columns to drop it knowingly"
        )
    return {k: v for k, v in cols.items() if v in present}


def _numbers(values: pd.Series, what: str, where: str) -> pd.Series:
    """Return ``values`` as floats; raise naming the rows that are not numbers."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    coerced = pd.to_numeric(values, errors="coerce")
    bad = coerced.isna() & values.notna()
    if bad.any():
        shown = ", ".join(repr(v) for v in values[bad].astype(str).unique()[:_EXAMPLES])
        raise TableInvalid(
            f"{where}: {what} holds values that are not numbers ({shown}; rows {_rows(bad)})"
        )
    return coerced.astype(float)


def _binary(values: pd.Series, what: str, where: str) -> pd.Series:
    nums = _numbers(values, what, where)
    bad = nums.notna() & ~nums.isin([0.0, 1.0])
    if bad.any():
        shown = sorted({float(v) for v in nums[bad]})[:_EXAMPLES]
        raise TableInvalid(
            f"{where}: {what} must be binary (0/1, or true/false); found {shown} "
            f"(rows {_rows(bad)})"
        )
    return nums


def _years(values: pd.Series, column: str, where: str) -> pd.Series:
    """Return the calendar year of each row from a year or a date/time column."""
    what = f"time column {column!r}"
    if values.isna().any():
        raise TableInvalid(f"{where}: {what} is empty in rows {_rows(values.isna())}")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.year.astype("int32")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        years = values.astype(float)
        bad = (years != np.floor(years)) | (years < 1800) | (years > 2200)
        if bad.any():
            raise TableInvalid(
                f"{where}: {what} holds numbers that are not calendar years (rows {_rows(bad)})"
            )
        return years.astype("int32")
    parsed = pd.to_datetime(values.astype(str), errors="coerce", format="mixed")
    if parsed.isna().any():
        bad = parsed.isna()
        shown = ", ".join(repr(v) for v in values[bad].astype(str).unique()[:_EXAMPLES])
        raise TableInvalid(
            f"{where}: {what} holds values that are neither years nor dates ({shown}; rows "
            f"{_rows(bad)})"
        )
    return parsed.dt.year.astype("int32")


def _sites(values: pd.Series, column: str, where: str) -> np.ndarray:
    """Return each row's hospital (text); refuse empty cells, naming the rows."""
    text = values.astype("string").str.strip()
    empty = text.isna() | text.eq("")
    if empty.any():
        raise TableInvalid(
            f"{where}: site column {column!r} is empty in rows {_rows(empty)}; every row needs "
            "its hospital (or declare one table.site for the whole table)"
        )
    return text.to_numpy(dtype=str)


def _unique_ids(values: pd.Series, column: str, where: str) -> Check:
    if values.isna().any():
        raise TableInvalid(f"{where}: id column {column!r} is empty in rows {_rows(values.isna())}")
    dup = values.duplicated(keep=False).to_numpy()
    if dup.any():
        n_ids = int(values[dup].nunique())
        raise TableInvalid(
            f"{where}: id column {column!r}: {n_ids} patient id(s) appear in more than one row "
            f"(rows {_rows(dup)}); the table must hold one row per patient so that no patient is "
            "in both the train and the test period"
        )
    return Check("unique identifier", "hard", True, "table", column, 0, (), "ok")


def _in_range(features: pd.DataFrame, spec: TaskSpec) -> tuple[pd.DataFrame, list[Check]]:
    """Set the few out-of-range values of each numeric feature to missing; refuse many."""
    checks: list[Check] = []
    out = features.copy()
    for f in spec.features:
        if f.kind != "numeric" or f.valid_range is None:
            continue
        lo, hi = f.valid_range
        col = out[f.name].astype(float)
        present = col.notna()
        bad = (present & ~np.isfinite(col)) | (col < lo) | (col > hi)
        n_bad, n = int(bad.sum()), int(present.sum())
        name = "value in physiological range"
        if not n_bad:
            checks.append(Check(name, "soft", True, "table", f.name, 0, (), "ok"))
            continue
        frac = n_bad / n if n else 0.0
        ex = tuple(int(r) for r in out.loc[bad, "stay_id"].head(_EXAMPLES))
        hard = frac > MAX_OUT_OF_RANGE_FRACTION
        if not hard:
            out.loc[bad, f.name] = np.nan
        action = (
            "too many to be artefacts — check the column's unit"
            if hard
            else "treated as artefacts and set to missing"
        )
        checks.append(
            Check(
                name,
                "hard" if hard else "soft",
                False,
                "table",
                f.name,
                n_bad,
                ex,
                f"{n_bad} of {n} values ({frac:.2%}) outside [{lo:g}, {hi:g}] {f.shown_unit}; "
                f"{action} (file rows listed)",
            )
        )
    return out, checks


def prepare_table(
    spec: TaskSpec, path: str | Path, *, on_step: StepCallback | None = None
) -> PreparedTable:
    """Return the table task's cohort and features read from the file at ``path``, checked.

    Raises :class:`TableInvalid` naming the column and file rows when the file does
    not match the spec's declared columns (missing or undeclared column, wrong type,
    label not 0/1, duplicate patient id), :class:`UndeclaredFeature` for a feature
    not approved, and :class:`ContractViolation` on hard contract failures.
    ``features.snapshot.build_table_snapshot`` writes the result as a snapshot.
    """
    step = on_step or (lambda _name: None)
    file = Path(path)
    where = f"table {file.name}"
    table = _table(spec)
    named = builtin_name_problem(spec)
    if named:
        raise TaskSpecInvalid(spec.name, [("name", named)])

    step("checking declared columns and types")
    frame = read_table(file)
    cols = _check_columns(frame, spec, where)
    checks: list[Check] = [Check("declared columns present", "hard", True, "table", None)]
    if "__id__" in cols:
        checks.append(_unique_ids(frame[cols["__id__"]], cols["__id__"], where))
    label = spec.label.name
    y = _binary(frame[cols[label]], f"label column {cols[label]!r}", where)
    checks.append(Check("label is binary", "hard", True, "table", cols[label]))
    n = len(frame)
    projected: dict[str, Any] = {"stay_id": np.arange(1, n + 1, dtype=np.int64)}
    for f in spec.features:
        values = frame[cols[f.name]]
        what = f"feature column {cols[f.name]!r} ({f.kind})"
        if f.kind == "numeric":
            projected[f.name] = _numbers(values, what, where)
        elif f.kind == "flag":
            projected[f.name] = _binary(values, what, where)
        else:
            projected[f.name] = values.astype("string").str.strip()
    features = conform_features(pd.DataFrame(projected), spec, sql_name=where)
    features, range_checks = _in_range(features, spec)
    checks += range_checks

    step("applying cohort criteria")
    eth = cols.get("ethnicity")
    stays = pd.DataFrame(
        {
            "stay_id": features["stay_id"],
            "real_year": _years(frame[cols["__time__"]], cols["__time__"], where).to_numpy(),
            label: y.to_numpy(),
            "ethnicity": (frame[eth].astype("string") if eth else pd.Series([pd.NA] * n)).array,
            "age": features["age"].to_numpy(),
        }
    )
    # The hospital: an evaluation stratum, like ethnicity never a feature (R-P1).
    if "__site__" in cols:
        stays["site"] = _sites(frame[cols["__site__"]], cols["__site__"], where)
    else:
        stays["site"] = table.site or UNSPECIFIED_SITE
    if isinstance(spec.clinical_baseline, ColumnBaseline):
        # Audit-only, like ethnicity: read into the cohort, never into the features (R-P1).
        column = cols[BASELINE_COLUMN]
        stays[BASELINE_COLUMN] = _baseline_points(
            frame[column], spec.clinical_baseline, where
        ).to_numpy()
    cohort = Cohort(stays=stays, flow=[FlowStep("rows in table", n, 0)])
    crit = spec.cohort
    cohort._record(f"age >= {crit.min_age:g} years", stays["age"].to_numpy() >= crit.min_age)
    y0, y1 = crit.years
    cohort._record(f"year {y0}-{y1}", cohort.stays["real_year"].between(y0, y1).to_numpy())
    if crit.require_outcome:
        cohort._record("outcome recorded", cohort.stays[label].notna().to_numpy())
    elif cohort.stays[label].isna().any():
        raise TableInvalid(
            f"{where}: label column {cols[label]!r} is empty in rows "
            f"{_rows(stays[label].isna())} and cohort.require_outcome is false"
        )
    cohort.stays["split"] = _split(cohort.stays["real_year"], spec)
    if (cohort.stays["split"] == "none").any():
        cohort._record("in the train or test period", (cohort.stays["split"] != "none").to_numpy())
    if cohort.stays.empty:
        raise ContractViolation(
            "cohort is empty after the inclusion criteria: "
            + "; ".join(f"{s.step}: {s.remaining}" for s in cohort.flow)
        )

    step("checking feature contracts")
    kept = features.loc[features["stay_id"].isin(cohort.stays["stay_id"])]
    report = ContractReport(checks)
    report.extend(check_features(kept, spec).checks)
    report.raise_if_failed(where)

    step("applying the data-sufficiency criterion")
    kept = apply_missingness_criterion(cohort, kept.reset_index(drop=True), spec)
    if cohort.stays.empty:
        raise ContractViolation("cohort is empty after the data-sufficiency criterion")
    require_both_classes(cohort.stays, spec)

    projection = {
        "columns": {k: v for k, v in cols.items() if k != "__id__"},
        **({"site": table.site} if table.site else {}),
        "id_column_checked_not_copied": cols.get("__id__"),
        "dropped_columns": sorted(c for c in table.drop_columns if c in set(frame.columns)),
    }
    dumped = spec.cohort.model_dump(mode="json")
    return PreparedTable(
        stays=cohort.stays,
        features=kept,
        report=report,
        flow=[s.as_dict() for s in cohort.flow],
        source={
            "source": TABLE_SOURCE,
            "source_version": None,
            "extracted_at": None,
            "deidentification": "declared by the table's producer (not verifiable here)",
            "params": {"file": file.name, "format": file.suffix.lower().lstrip(".")},
            "raw_files": {"table": sha256_file(file)},
        },
        sql={"name": "declared-column projection", "sha256": sha256_json(projection)},
        extra={
            "table": projection
            | {
                "criteria_not_checked": sorted(
                    k for k, inert in _EVENT_CRITERIA.items() if dumped.get(k) != inert
                ),
                "criteria_note": (
                    "criteria that need raw events (first stay, repeat stays, length of stay, "
                    "service, discharged alive) cannot be checked on a table: the table's "
                    "producer is responsible for them"
                ),
            },
            "leakage_check": {"checked": False, "reason": LEAKAGE_NOT_CHECKED},
        },
    )
