"""The scale-out feature engine: the task's feature SQL text, unchanged, on Spark SQL (R-I3).

:class:`SparkEngine` registers the same relations as the embedded DuckDB engine
(``cohort``, ``events``, ``feature_ranges``, the optional source tables and the
spec's generated ``event_features``) and runs the same SQL file; a parity test holds the two to identical feature tables.
Data crosses the Python/JVM boundary as Arrow (``createDataFrame`` of a
``pyarrow.Table`` in, ``DataFrame.toArrow`` out), so timestamps stay
timezone-naive (``TIMESTAMP_NTZ``, session time zone UTC) exactly as in the
Parquet files, and nothing depends on the driver's local time zone.

Local mode (``local[2]``) needs only ``pip install 'clinical-mlops[spark]'`` and
Java 17. On a cluster give any master URL (``spark://host:7077``, ``yarn``,
``k8s://...``) and put the raw source where every executor can read it (HDFS,
S3, a shared mount); see docs/DATA.md for a ``spark-submit`` run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from clinical_mlops.errors import EngineUnavailable
from clinical_mlops.features.engine import SOURCE_RELATIONS, time_travel_sql

__all__ = ["DEFAULT_MASTER", "INSTALL_HINT", "SparkEngine", "spark_session"]

DEFAULT_MASTER = "local[2]"
INSTALL_HINT = (
    "install the Spark extra (pip install 'clinical-mlops[spark]', or `make install "
    "EXTRAS=dev,spark`) and a Java 17 runtime (`java -version` must work, or set JAVA_HOME)"
)

# Settings that make Spark deterministic in what we compare and quiet in tests: no web UI, no
# console progress bar, loopback only, few shuffle partitions, naive timestamps in UTC.
_BASE_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
_LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


def _log4j_option() -> str:
    path = resources.files("clinical_mlops.features").joinpath("spark-log4j2.properties")
    return f"-Dlog4j2.configurationFile=file:{path}"


def spark_session(*, master: str = DEFAULT_MASTER, conf: Mapping[str, str] | None = None) -> Any:
    """Return a SparkSession for ``master`` (created, or the running one reused).

    Raises :class:`EngineUnavailable` naming what to install when pyspark is
    missing or the JVM cannot start.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineUnavailable(f"the Spark engine needs pyspark: {INSTALL_HINT}") from None
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise EngineUnavailable(f"the Spark engine needs Java, and none was found: {INSTALL_HINT}")
    settings = dict(_BASE_CONF)
    if master.startswith("local"):
        settings |= _LOCAL_CONF
        # Without it Spark warns that the host name resolves to a loopback address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings["spark.driver.extraJavaOptions"] = _log4j_option()
    settings |= dict(conf or {})
    builder = SparkSession.builder.master(master).appName("clinical-mlops-features")
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j/pyspark raise many types when the JVM cannot start
        raise EngineUnavailable(
            f"the Spark engine could not start ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return session


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """Return ``frame`` as Arrow with microsecond timestamps (Spark's resolution)."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    fields = [
        pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


class SparkEngine:
    """Runs feature SQL on Spark SQL; the session is created on first use unless given."""

    name = "spark"

    def __init__(
        self,
        *,
        master: str = DEFAULT_MASTER,
        conf: Mapping[str, str] | None = None,
        session: Any | None = None,
    ):
        self.master = master
        self.conf = dict(conf or {})
        self._session = session

    @property
    def session(self) -> Any:
        """The SparkSession this engine runs on."""
        if self._session is None:
            self._session = spark_session(master=self.master, conf=self.conf)
        return self._session

    def run(
        self,
        sql: str,
        *,
        cohort: pd.DataFrame,
        events: list[Path],
        ranges: pd.DataFrame,
        tables: Mapping[str, list[Path]] | None = None,
        views: Sequence[tuple[str, str]] = (),
        event_key: str = "stay_id",
        before_prediction_only: bool = False,
    ) -> pd.DataFrame:
        spark = self.session
        views_made = ["cohort", "feature_ranges", "raw_events", "events"]
        try:
            spark.createDataFrame(_arrow(cohort)).createOrReplaceTempView("cohort")
            spark.createDataFrame(_arrow(ranges)).createOrReplaceTempView("feature_ranges")
            spark.read.parquet(*[str(p) for p in events]).createOrReplaceTempView("raw_events")
            for name, paths in (tables or {}).items():
                if name not in SOURCE_RELATIONS:
                    raise ValueError(f"tables: {name!r} is not a source relation")
                spark.read.parquet(*[str(p) for p in paths]).createOrReplaceTempView(name)
                views_made.append(name)
            if before_prediction_only:
                spark.sql(time_travel_sql(event_key)).createOrReplaceTempView("events")
            else:
                spark.table("raw_events").createOrReplaceTempView("events")
            for name, select in views:
                spark.sql(select).createOrReplaceTempView(name)
                views_made.append(name)
            result: pa.Table = spark.sql(sql).toArrow()
        finally:
            for view in views_made:
                spark.catalog.dropTempView(view)
        return result.to_pandas()
