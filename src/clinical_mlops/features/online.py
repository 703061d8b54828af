"""The bedside executor: one unit's features from the same SQL the offline snapshot runs.

:func:`features_for_one` registers one cohort row, the unit's raw events and (for
tasks that read them) the patient's admissions and the admission's diagnoses as the
relations the task's feature SQL reads, registers the spec's generated
``event_features``, and runs the task SQL on DuckDB in process. Windows, valid
ranges, aggregations and static derivations (ICD-10 chapter, Charlson index, prior
admissions) are therefore exactly those of training: offline (DuckDB or Spark) and
online cannot disagree on a feature for the same raw data.

Events must already be in each feature's canonical unit (the spec's ``unit``):
converting what an EHR sends is the FHIR reader's job
(:mod:`clinical_mlops.units`). Timestamps are read as UTC; a timezone-aware one is
converted to UTC, a naive one is taken as UTC already, as in the raw source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from clinical_mlops.data.contracts import conform_features
from clinical_mlops.errors import InputInvalid
from clinical_mlops.features.engine import (
    COHORT_COLUMNS,
    OPTIONAL_COHORT_COLUMNS,
    DuckDBEngine,
    feature_ranges,
    feature_views,
    load_feature_sql,
)
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["OnlineUnit", "features_for_one"]

_TIMES = ("admittime", "dischtime", "window_start", "window_end", "prediction_time")


@dataclass(frozen=True)
class OnlineUnit:
    """One unit of analysis as the bedside sees it: its cohort row and its raw events."""

    #: one cohort row: ``features.engine.COHORT_COLUMNS`` (+ optional ones such as
    #: ``discharge_location``)
    cohort: Mapping[str, Any]
    #: (variable, charttime, value), each value in its feature's canonical unit
    events: Sequence[tuple[str, datetime, float]]
    #: (hadm_id, admittime) of the same patient's admissions (prior admissions count them)
    admissions: Sequence[tuple[Any, datetime]] = ()
    #: ICD-10 codes of this admission (the Charlson index reads them)
    diagnoses: Sequence[str] = ()


def _utc(value: Any, where: str) -> datetime | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise InputInvalid([(where, f"expected a date-time, got {type(value).__name__}")])
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _frames(spec: TaskSpec, unit: OnlineUnit) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    missing = [c for c in COHORT_COLUMNS if c not in unit.cohort]
    if missing:
        raise InputInvalid([(f"cohort.{c}", "required for the feature SQL") for c in missing])
    row = {c: unit.cohort[c] for c in COHORT_COLUMNS}
    for c in OPTIONAL_COHORT_COLUMNS:
        if c in unit.cohort:
            row[c] = unit.cohort[c]
    for c in _TIMES:
        row[c] = _utc(row[c], f"cohort.{c}")
    cohort = pd.DataFrame([row])
    for c in _TIMES:
        cohort[c] = pd.to_datetime(cohort[c]).astype("datetime64[us]")
    ids = {"stay_id": row["stay_id"], "subject_id": row["subject_id"], "hadm_id": row["hadm_id"]}
    events = pd.DataFrame(
        {
            "stay_id": pd.Series([ids["stay_id"]] * len(unit.events), dtype="Int64"),
            "subject_id": pd.Series([ids["subject_id"]] * len(unit.events), dtype="Int64"),
            "hadm_id": pd.Series([ids["hadm_id"]] * len(unit.events), dtype="Int64"),
            "charttime": pd.Series(
                [_utc(t, f"events[{i}].charttime") for i, (_, t, _) in enumerate(unit.events)],
                dtype="datetime64[us]",
            ),
            "variable": pd.Series([v for v, _, _ in unit.events], dtype="object"),
            "value": pd.Series([x for _, _, x in unit.events], dtype="float64"),
            "unit": pd.Series([None] * len(unit.events), dtype="object"),
        }
    )
    tables: dict[str, Any] = {
        "admissions": pd.DataFrame(
            {
                "subject_id": pd.Series([ids["subject_id"]] * len(unit.admissions), dtype="Int64"),
                "hadm_id": pd.Series([h for h, _ in unit.admissions], dtype="Int64"),
                "admittime": pd.Series(
                    [_utc(t, f"admissions[{i}]") for i, (_, t) in enumerate(unit.admissions)],
                    dtype="datetime64[us]",
                ),
            }
        ),
        "diagnoses": pd.DataFrame(
            {
                "subject_id": pd.Series([ids["subject_id"]] * len(unit.diagnoses), dtype="Int64"),
                "hadm_id": pd.Series([ids["hadm_id"]] * len(unit.diagnoses), dtype="Int64"),
                "seq_num": pd.Series(range(1, len(unit.diagnoses) + 1), dtype="Int32"),
                "icd10": pd.Series(list(unit.diagnoses), dtype="object"),
            }
        ),
    }
    return cohort, events, tables


def _plain(value: Any, kind: str) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == "numeric":
        return float(value)
    if kind == "flag":
        return int(value)
    return str(value)


def features_for_one(spec: TaskSpec, unit: OnlineUnit) -> dict[str, Any]:
    """Return feature name -> value (None when missing) for one unit, computed by the task SQL.

    The values equal those of the offline snapshot for the same raw data: the same
    generated ``event_features`` relation and the same task SQL run, on DuckDB in
    process. Raises ``InputInvalid`` for a cohort row without a required column or a
    time that is not a date-time; the R-P1 checks of the offline path apply too.
    """
    sql = load_feature_sql(spec)
    cohort, events, tables = _frames(spec, unit)
    table = DuckDBEngine(shared=True).run(
        sql.text,
        cohort=cohort,
        events=events,
        ranges=feature_ranges(spec),
        tables=tables,
        views=feature_views(spec),
        event_key=spec.event_key,
    )
    conformed = conform_features(table, spec, sql_name=sql.name)
    if len(conformed) != 1:
        raise InputInvalid(
            [("cohort", f"expected one unit, the feature SQL returned {len(conformed)}")]
        )
    values = conformed.iloc[0]
    return {f.name: _plain(values[f.name], f.kind) for f in spec.features}
