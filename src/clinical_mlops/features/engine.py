"""Feature extraction: a task's SQL text run over the raw events by an engine.

The SQL file names its inputs (``cohort``, ``events``, ``feature_ranges`` and,
when the source has them, ``admissions`` and ``diagnoses``) and returns one row
per unit of analysis (an ICU stay, or a hospital admission for admission tasks;
the id column is called ``stay_id`` either way). The embedded engine is DuckDB;
:class:`~clinical_mlops.features.spark.SparkEngine` runs the same text on Spark
SQL (R-I3). Whatever the engine, :func:`extract_features` enforces R-P1:
the result must contain exactly ``stay_id`` plus the features declared in the
spec, every one of them approved — an extra column is refused, not dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import duckdb
import pandas as pd

from clinical_mlops.data.contracts import conform_features
from clinical_mlops.errors import TaskSpecInvalid
from clinical_mlops.hashing import sha256_text
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "COHORT_COLUMNS",
    "OPTIONAL_COHORT_COLUMNS",
    "SOURCE_RELATIONS",
    "DuckDBEngine",
    "FeatureEngine",
    "FeatureSQL",
    "cohort_frame",
    "extract_features",
    "feature_ranges",
    "feature_sql_problem",
    "load_feature_sql",
    "time_travel_sql",
]

COHORT_COLUMNS = (
    "stay_id",
    "subject_id",
    "hadm_id",
    "age",
    "sex",
    "diagnosis_icd10",
    "admittime",
    "dischtime",
    "los_hours",
    "window_start",
    "window_end",
    "prediction_time",
)
# Admission columns a source may add (see clinical_mlops.data.raw.OPTIONAL_COLUMNS); passed to
# the SQL when the source has them.
OPTIONAL_COHORT_COLUMNS = ("admission_type", "discharge_location", "service")

# Source tables besides ``events`` that feature SQL may read, when the source holds them.
SOURCE_RELATIONS = ("admissions", "diagnoses")


@dataclass(frozen=True)
class FeatureSQL:
    """A task's feature SQL text and its SHA-256 (recorded in every snapshot's lineage)."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)


def feature_sql_problem(spec: TaskSpec) -> str | None:
    """Return why ``spec``'s feature SQL cannot be loaded (not shipped), or None."""
    if spec.feature_sql is None or spec.sql_path().is_file():
        return None
    shipped = sorted(
        p.name
        for p in resources.files("clinical_mlops.features").iterdir()
        if p.name.endswith(".sql")
    )
    return (
        f"no feature SQL {spec.feature_sql!r} is shipped with clinical-mlops "
        f"(shipped: {', '.join(shipped)})"
    )


def load_feature_sql(spec: TaskSpec) -> FeatureSQL:
    """Return the feature SQL shipped for ``spec``; ``TaskSpecInvalid`` if there is none."""
    problem = feature_sql_problem(spec)
    if problem:
        raise TaskSpecInvalid(spec.name, [("feature_sql", problem)])
    path = spec.sql_path()
    return FeatureSQL(name=path.name, text=path.read_text(encoding="utf-8"))


def feature_ranges(spec: TaskSpec) -> pd.DataFrame:
    """Return the (variable, low, high) table of valid ranges for the spec's event features."""
    rows = [
        (f.variable, float(f.valid_range[0]), float(f.valid_range[1]))
        for f in spec.event_features
        if f.variable is not None and f.valid_range is not None
    ]
    return pd.DataFrame(rows, columns=["variable", "low", "high"])


class FeatureEngine(Protocol):
    """Runs feature SQL over a cohort frame and raw Parquet files; returns one row per unit.

    Every engine registers the same relations: ``cohort`` (the frame),
    ``feature_ranges`` (the frame), ``events`` (the event files), and each entry
    of ``tables`` (``admissions``, ``diagnoses``) as a view over its files. With
    ``before_prediction_only`` the ``events`` relation holds only the events of
    cohort units charted strictly before the unit's prediction time, joined on
    ``event_key`` (``stay_id`` or ``hadm_id``): the leakage check's time travel.
    """

    name: str

    def run(
        self,
        sql: str,
        *,
        cohort: pd.DataFrame,
        events: list[Path],
        ranges: pd.DataFrame,
        tables: Mapping[str, list[Path]] | None = None,
        event_key: str = "stay_id",
        before_prediction_only: bool = False,
    ) -> pd.DataFrame: ...


def time_travel_sql(event_key: str) -> str:
    """Return the SELECT that keeps each unit's events charted before its prediction time."""
    if event_key not in ("stay_id", "hadm_id"):
        raise ValueError(f"event_key: expected stay_id or hadm_id, got {event_key!r}")
    return (
        "SELECT e.* FROM raw_events e JOIN cohort c "
        f"ON e.{event_key} = c.{event_key} WHERE e.charttime < c.prediction_time"
    )


def _parquet_list(paths: list[Path]) -> str:
    return ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)


class DuckDBEngine:
    """The embedded engine: DuckDB reading the Parquet event files in place."""

    name = "duckdb"

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None):
        self.threads = threads
        self.memory_limit = memory_limit

    def run(
        self,
        sql: str,
        *,
        cohort: pd.DataFrame,
        events: list[Path],
        ranges: pd.DataFrame,
        tables: Mapping[str, list[Path]] | None = None,
        event_key: str = "stay_id",
        before_prediction_only: bool = False,
    ) -> pd.DataFrame:
        con = duckdb.connect(":memory:")
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            if self.memory_limit:
                con.execute(f"SET memory_limit = '{self.memory_limit}'")
            con.register("cohort_df", cohort)
            con.execute("CREATE TEMP TABLE cohort AS SELECT * FROM cohort_df")
            con.register("feature_ranges", ranges)
            files = _parquet_list(events)
            con.execute(f"CREATE TEMP VIEW raw_events AS SELECT * FROM read_parquet([{files}])")
            for name, paths in (tables or {}).items():
                con.execute(
                    f"CREATE TEMP VIEW {_relation(name)} AS "
                    f"SELECT * FROM read_parquet([{_parquet_list(paths)}])"
                )
            if before_prediction_only:
                # Time travel: the events as they stood at each unit's prediction time.
                con.execute(f"CREATE TEMP VIEW events AS {time_travel_sql(event_key)}")
            else:
                con.execute("CREATE TEMP VIEW events AS SELECT * FROM raw_events")
            return con.execute(sql).df()
        finally:
            con.close()


def _relation(name: str) -> str:
    if name not in SOURCE_RELATIONS:
        raise ValueError(
            f"tables: {name!r} is not a source relation ({', '.join(SOURCE_RELATIONS)})"
        )
    return name


def cohort_frame(cohort: pd.DataFrame) -> pd.DataFrame:
    """Return the columns of ``cohort`` that feature SQL may read (the ``cohort`` relation)."""
    optional = [c for c in OPTIONAL_COHORT_COLUMNS if c in cohort.columns]
    return cohort.loc[:, [*COHORT_COLUMNS, *optional]].copy()


def extract_features(
    spec: TaskSpec,
    *,
    cohort: pd.DataFrame,
    events: list[Path],
    tables: Mapping[str, list[Path]] | None = None,
    engine: FeatureEngine | None = None,
    sql: FeatureSQL | None = None,
    before_prediction_only: bool = False,
) -> pd.DataFrame:
    """Return the feature table (``stay_id`` + declared features) for the cohort units.

    Raises :class:`UndeclaredFeature` if the SQL returns a column the spec does
    not declare, omits a declared one, or returns a feature not approved.
    """
    engine = engine or DuckDBEngine()
    sql = sql or load_feature_sql(spec)
    table = engine.run(
        sql.text,
        cohort=cohort_frame(cohort),
        events=events,
        ranges=feature_ranges(spec),
        tables=tables,
        event_key=spec.event_key,
        before_prediction_only=before_prediction_only,
    )
    return conform_features(table, spec, sql_name=sql.name)
