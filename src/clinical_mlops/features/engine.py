"""Feature extraction: a task's SQL text run over the raw events by an engine.

The SQL file names its inputs (``cohort``, ``events``, ``feature_ranges``) and
returns one row per stay. The embedded engine is DuckDB; a Spark engine runs the
same text (R-I3). Whatever the engine, :func:`extract_features` enforces R-P1:
the result must contain exactly ``stay_id`` plus the features declared in the
spec, every one of them approved — an extra column is refused, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.errors import UndeclaredFeature
from clinical_mlops.hashing import sha256_text
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "COHORT_COLUMNS",
    "DuckDBEngine",
    "FeatureEngine",
    "FeatureSQL",
    "extract_features",
    "feature_ranges",
    "load_feature_sql",
]

COHORT_COLUMNS = (
    "stay_id",
    "age",
    "sex",
    "diagnosis_icd10",
    "window_start",
    "window_end",
    "prediction_time",
)


@dataclass(frozen=True)
class FeatureSQL:
    """A task's feature SQL text and its SHA-256 (recorded in every snapshot's lineage)."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)


def load_feature_sql(spec: TaskSpec) -> FeatureSQL:
    """Return the feature SQL shipped for ``spec``."""
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
    """Runs feature SQL over a cohort frame and raw event files."""

    name: str

    def run(
        self,
        sql: str,
        *,
        cohort: pd.DataFrame,
        events: list[Path],
        ranges: pd.DataFrame,
        before_prediction_only: bool = False,
    ) -> pd.DataFrame: ...


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
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in events)
            con.execute(f"CREATE TEMP VIEW raw_events AS SELECT * FROM read_parquet([{files}])")
            if before_prediction_only:
                # Time travel: the events as they stood at each stay's prediction time.
                con.execute(
                    "CREATE TEMP VIEW events AS SELECT e.* FROM raw_events e "
                    "JOIN cohort c ON e.stay_id = c.stay_id WHERE e.charttime < c.prediction_time"
                )
            else:
                con.execute("CREATE TEMP VIEW events AS SELECT * FROM raw_events")
            return con.execute(sql).df()
        finally:
            con.close()


def extract_features(
    spec: TaskSpec,
    *,
    cohort: pd.DataFrame,
    events: list[Path],
    engine: FeatureEngine | None = None,
    sql: FeatureSQL | None = None,
    before_prediction_only: bool = False,
) -> pd.DataFrame:
    """Return the feature table (``stay_id`` + declared features) for the cohort stays.

    Raises :class:`UndeclaredFeature` if the SQL returns a column the spec does
    not declare, omits a declared one, or returns a feature not approved.
    """
    engine = engine or DuckDBEngine()
    sql = sql or load_feature_sql(spec)
    frame = cohort.loc[:, list(COHORT_COLUMNS)].copy()
    table = engine.run(
        sql.text,
        cohort=frame,
        events=events,
        ranges=feature_ranges(spec),
        before_prediction_only=before_prediction_only,
    )
    return conform_features(table, spec, sql_name=sql.name)


def conform_features(table: pd.DataFrame, spec: TaskSpec, *, sql_name: str) -> pd.DataFrame:
    """Check R-P1 on an engine's output and return it with canonical column order and types."""
    declared = list(spec.feature_names)
    got = [c for c in table.columns if c != "stay_id"]
    extra = [c for c in got if c not in declared]
    if extra:
        raise UndeclaredFeature(
            f"{sql_name} returns column(s) {', '.join(extra)} that task {spec.name!r} does not "
            "declare; declare, justify and approve them in the task spec or remove them from the SQL"
        )
    missing = [c for c in declared if c not in got]
    if missing:
        raise UndeclaredFeature(
            f"{sql_name} does not return declared feature(s) {', '.join(missing)} of task {spec.name!r}"
        )
    unapproved = [f.name for f in spec.features if f.status != "approved"]
    if unapproved:
        raise UndeclaredFeature(
            f"feature(s) {', '.join(unapproved)} of task {spec.name!r} are declared but not approved "
            "(status must be 'approved' before they may reach a model)"
        )
    out = table.loc[:, ["stay_id", *declared]].copy()
    out["stay_id"] = out["stay_id"].astype(np.int64)
    for f in spec.features:
        if f.kind == "numeric":
            out[f.name] = pd.to_numeric(out[f.name], errors="raise").astype("float64")
        elif f.kind == "flag":
            out[f.name] = out[f.name].astype("Int8")
        else:
            out[f.name] = out[f.name].astype("string")
    return out.sort_values("stay_id").reset_index(drop=True)
