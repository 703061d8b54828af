"""The readmission task runs on the same data plane as the ICU task, from its spec alone (R-T9)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import clinical_mlops
from clinical_mlops.application.training import train_model
from clinical_mlops.cli import app
from clinical_mlops.data.cohort import build_cohort
from clinical_mlops.data.sources import ward_source
from clinical_mlops.data.ward import WardConfig
from clinical_mlops.features.engine import DuckDBEngine, extract_features
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.modeling.train import TrainingConfig
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from spark_session import assert_same_features, spark, spark_engine  # noqa: F401

SPEC = load_task("readmission_30d")
ICU = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def ward(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ward"))
    return ws, ward_source(ws, WardConfig(seed=7, scale=0.12))


@pytest.fixture(scope="module")
def snapshot(ward):
    ws, source = ward
    return build_snapshot(ws, SPEC, source)


def test_spec_declares_fourteen_approved_features_and_an_admission_unit():
    assert len(SPEC.approved_features) == 14
    assert SPEC.unit == "admission" and SPEC.event_key == "hadm_id"
    assert ICU.unit == "icu_stay" and ICU.event_key == "stay_id"
    assert SPEC.thresholds.subgroup_auroc_gap == 0.05


def test_ward_snapshot_flow_and_prevalence(snapshot):
    s = snapshot.summary()
    steps = [row["step"] for row in s["cohort_flow"]]
    assert steps == [
        "admissions in source",
        "age >= 18 years",
        "admitted 2008-2019",
        "service MED",
        "discharged alive",
        "hospital length of stay >= 0 h",
        "outcome recorded",
        "at most 50% of the 14 features missing in the window",
    ]
    assert all(row["excluded"] > 0 for row in s["cohort_flow"][1:5])
    assert 0.11 < s["prevalence"] < 0.18
    assert s["n_stays"] == s["n_train"] + s["n_test"] > 3000
    assert list(snapshot.features().columns) == ["stay_id", *SPEC.feature_names]
    assert s["missingness"]["hemoglobin"] > s["missingness"]["heart_rate"] > 0


def test_readmission_label_is_an_unplanned_admission_within_30_days(ward):
    _ws, source = ward
    stays = build_cohort(source, SPEC).stays
    adm = source.read("admissions").to_pandas()
    pairs = stays[["hadm_id", "subject_id", "dischtime"]].merge(
        adm[["subject_id", "hadm_id", "admittime", "admission_type"]],
        on="subject_id",
        suffixes=("", "_other"),
    )
    days = (pairs["admittime"] - pairs["dischtime"]).dt.total_seconds() / 86_400
    within = (pairs["hadm_id_other"] != pairs["hadm_id"]) & (days > 0) & (days <= 30)
    unplanned = pairs["admission_type"].isin(["EMERGENCY", "URGENT"])
    expected = set(pairs.loc[within & unplanned, "hadm_id"])
    label = stays.set_index("hadm_id")[SPEC.label.name]
    assert set(label[label == 1].index) == expected
    only_planned = set(pairs.loc[within & ~unplanned, "hadm_id"]) - expected
    assert only_planned and not label.loc[sorted(only_planned)].any()


def test_discharge_features_use_only_the_last_day(ward):
    _ws, source = ward
    cohort = build_cohort(source, SPEC).stays.head(300)
    kwargs = dict(cohort=cohort, events=[source.table_path("events")], tables=source.relations())
    full = extract_features(SPEC, **kwargs).set_index("stay_id")
    ev = source.read("events").to_pandas()
    one = cohort.iloc[0]
    hr = ev.loc[(ev["hadm_id"] == one["hadm_id"]) & (ev["variable"] == "heart_rate")]
    in_window = hr.loc[hr["charttime"] >= one["dischtime"] - pd.Timedelta(hours=24)]
    assert len(in_window) < len(hr)  # the admission-day value lies outside the window
    last = in_window.sort_values("charttime")["value"].iloc[-1]
    assert full.loc[one["stay_id"], "heart_rate"] == last
    assert full["charlson_index"].max() >= 2
    assert set(full["discharge_disposition"].dropna()) <= set(
        SPEC.feature("discharge_disposition").categories
    )


def test_readmission_on_spark_gives_the_same_features(ward, spark_engine):  # noqa: F811
    _ws, source = ward
    cohort = build_cohort(source, SPEC).stays
    kwargs = dict(cohort=cohort, events=[source.table_path("events")], tables=source.relations())
    duck = extract_features(SPEC, engine=DuckDBEngine(), **kwargs)
    on_spark = extract_features(SPEC, engine=spark_engine, **kwargs)
    assert_same_features(duck, on_spark, SPEC)


def test_data_build_json_has_the_same_shape_for_both_tasks(tmp_path):
    runner = CliRunner()
    out = {}
    for task, scale in (("readmission_30d", 0.05), ("icu_mortality_48h", 0.02)):
        res = runner.invoke(
            app,
            [
                "data",
                "build",
                "--task",
                task,
                "--seed",
                "7",
                "--scale",
                str(scale),
                "--json",
                "--workspace",
                str(tmp_path / "ws"),
            ],
        )
        assert res.exit_code == 0, res.output
        out[task] = json.loads(res.stdout)
    assert set(out["readmission_30d"]) == set(out["icu_mortality_48h"])
    assert out["readmission_30d"]["source"] == "synthetic-ward"
    assert out["readmission_30d"]["task"] == "readmission_30d"


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }


def test_no_pipeline_module_branches_on_a_task_name():
    root = Path(clinical_mlops.__file__).parent
    names = {"readmission_30d", "icu_mortality_48h"}
    for package in ("data", "features", "modeling", "evaluation"):
        for path in (root / package).rglob("*.py"):
            found = names & _string_constants(path)
            assert not found, f"{path} names task(s) {found}"


def test_readmission_trains_and_validates(snapshot, ward):
    ws, _source = ward
    result = train_model(
        ws,
        snapshot,
        config=TrainingConfig(
            seed=7, search_iterations=1, n_boot=50, candidates=("logistic_regression",)
        ),
    )
    summary = result.summary()
    assert summary["model_version"].startswith("readmission_30d-")
    assert (result.folder / "model_card.md").exists()
    assert summary["baseline"]["name"] == "LACE-like index"
    assert 0.6 < summary["test"]["auroc"] < 0.95
    assert 0.6 < summary["baseline"]["auroc"] < summary["test"]["auroc"] + 0.1


def test_the_ward_hospitals_differ_in_readmission_and_discharge_bloods(tmp_path):
    """Each hospital keeps its own readmission rate and its own haemoglobin habit."""
    ws = Workspace.open(tmp_path)
    snap = build_snapshot(ws, SPEC, ward_source(ws, WardConfig(seed=3, scale=0.5)))
    frame = snap.features().merge(snap.cohort(), on="stay_id")
    by_site = frame.groupby("site")
    assert sorted(by_site.groups) == ["east", "north", "south"]
    rate = by_site[SPEC.label.name].mean()
    assert rate["north"] - rate["south"] >= 0.04, rate
    undrawn = by_site["hemoglobin"].apply(lambda v: v.isna().mean())
    assert undrawn["south"] - undrawn["north"] >= 0.08, undrawn
