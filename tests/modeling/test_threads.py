"""Threads: the number asked reaches DuckDB and XGBoost, and never changes the model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinical_mlops.application.training import feature_engine
from clinical_mlops.data.raw import read_source
from clinical_mlops.features.engine import feature_ranges
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.modeling.train import TrainingConfig, fit_model
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SPEC = load_task("icu_mortality_48h")


def config(n_jobs: int) -> TrainingConfig:
    return TrainingConfig(seed=5, search_iterations=2, n_boot=100, n_jobs=n_jobs)


@pytest.fixture(scope="module")
def snapshot(small_source_dir, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("threads"))
    return build_snapshot(ws, SPEC, read_source(small_source_dir))


@pytest.mark.parametrize("threads", [1, 3])
def test_the_feature_engine_runs_duckdb_with_the_threads_asked(small_source_dir, threads):
    engine = feature_engine("duckdb", threads=threads)
    out = engine.run(
        "SELECT current_setting('threads') AS threads",
        cohort=pd.DataFrame({"stay_id": [1]}),
        events=[read_source(small_source_dir).table_path("events")],
        ranges=feature_ranges(SPEC),
    )
    assert int(out["threads"].iloc[0]) == threads


def test_the_booster_is_fitted_with_the_threads_asked_and_the_model_does_not_change(snapshot):
    one = fit_model(snapshot, config=config(1))
    two = fit_model(snapshot, config=config(2))
    for fitted, n in ((one, 1), (two, 2)):
        assert fitted.training["config"]["n_jobs"] == n
        if fitted.selected_model != "logistic_regression":
            booster = fitted.model.scorer.booster  # type: ignore[union-attr]
            generic = json.loads(booster.save_config())["learner"]["generic_param"]
            assert generic["nthread"] == str(n)
    assert one.model.model_sha256 == two.model.model_sha256
    assert one.selection["cv"] == two.selection["cv"]
