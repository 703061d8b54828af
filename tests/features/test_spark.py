"""The Spark engine runs the same feature SQL text as DuckDB and gives the same tables (R-I3)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinical_mlops.data.cohort import build_cohort
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import EngineUnavailable
from clinical_mlops.features import spark as spark_module
from clinical_mlops.features.engine import DuckDBEngine, extract_features
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.features.spark import SparkEngine, spark_session
from clinical_mlops.tasks import load_task, task_from_mapping
from clinical_mlops.workspace import Workspace
from raw_fixture import stay, write_source
from spark_session import assert_same_features

SPEC = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def small_cohort(small_source_dir):
    source = read_source(small_source_dir)
    return source, build_cohort(source, SPEC).stays


@pytest.mark.parametrize("before_prediction_only", [False, True])
def test_spark_and_duckdb_give_identical_features(
    small_cohort, spark_engine, before_prediction_only
):
    source, cohort = small_cohort
    kwargs = dict(
        cohort=cohort,
        events=[source.table_path("events")],
        tables=source.relations(),
        before_prediction_only=before_prediction_only,
    )
    duck = extract_features(SPEC, engine=DuckDBEngine(), **kwargs)
    spark = extract_features(SPEC, engine=spark_engine, **kwargs)
    assert len(duck) == len(cohort) > 500
    assert duck["lactate"].notna().any() and duck["lactate"].isna().any()
    assert_same_features(duck, spark, SPEC)


def test_the_window_is_half_open_on_spark_too(tmp_path, spark_engine):
    stays = [
        stay(
            1,
            extra_events=[
                (23.99, "heart_rate", 140.0, None),
                (24.0, "heart_rate", 180.0, None),
                (-0.5, "heart_rate", 170.0, None),
                (3.0, "ventilation", 1.0, None),
            ],
        ),
        stay(2, variables=["map", "gcs"], diagnosis_icd10="D61.81"),
    ]
    source = read_source(write_source(tmp_path / "raw", stays))
    cohort = build_cohort(source, SPEC).stays
    feats = extract_features(
        SPEC, cohort=cohort, events=[source.table_path("events")], engine=spark_engine
    ).set_index("stay_id")
    assert feats.loc[1, "heart_rate"] == 140.0
    assert feats.loc[1, "ventilation"] == 1
    assert pd.isna(feats.loc[2, "lactate"])
    assert feats.loc[2, "diagnosis_category"] == "blood"


def test_generated_windows_and_aggregations_run_alike_on_spark(small_cohort, spark_engine):
    # Per-feature windows (interval arithmetic), mean, last and any: every form the generated
    # event_features relation takes, executed by both engines.
    data = SPEC.model_dump(mode="json")
    changes = {
        "map": {"window": {"start_hours": 1.5, "end_hours": 12}, "aggregation": "mean"},
        "heart_rate": {"window": {"start_hours": 6, "end_hours": 24}, "aggregation": "last"},
        "spo2": {"aggregation": "mean"},
        "gcs": {"window": {"start_hours": 0, "end_hours": 23.25}},
    }
    for f in data["features"]:
        f.update(changes.get(f["name"], {}))
    spec = task_from_mapping(data, source="test")
    source, cohort = small_cohort
    kwargs = dict(cohort=cohort, events=[source.table_path("events")], tables=source.relations())
    duck = extract_features(spec, engine=DuckDBEngine(), **kwargs)
    spark = extract_features(spec, engine=spark_engine, **kwargs)
    base = extract_features(SPEC, engine=DuckDBEngine(), **kwargs)
    assert not duck["map"].equals(base["map"]) and not duck["heart_rate"].equals(base["heart_rate"])
    assert_same_features(duck, spark, spec)


def test_a_snapshot_built_on_spark_has_the_same_id(small_source_dir, spark_engine, tmp_path):
    source = read_source(small_source_dir)
    duck = build_snapshot(Workspace.open(tmp_path / "a"), SPEC, source)
    spark = build_snapshot(Workspace.open(tmp_path / "b"), SPEC, source, engine=spark_engine)
    assert spark.id == duck.id
    build = json.loads((spark.path / "build.json").read_text(encoding="utf-8"))
    assert build["engine"] == "spark"
    assert "engine" not in json.dumps(spark.manifest)


def test_missing_pyspark_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name.startswith("pyspark"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    with pytest.raises(EngineUnavailable, match=r"pip install 'clinical-mlops\[spark\]'"):
        spark_session()


def test_missing_java_says_how_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(spark_module.shutil, "which", lambda _name: None)
    with pytest.raises(EngineUnavailable, match="needs Java, and none was found"):
        SparkEngine().session  # noqa: B018 - the property starts the session
