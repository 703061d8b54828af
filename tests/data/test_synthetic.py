"""The synthetic source: deterministic, and its default cohort reproduces the published figures."""

from __future__ import annotations

import pytest

from clinical_mlops.data.raw import read_source
from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig, generate_source
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.hashing import sha256_file
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SPEC = load_task("icu_mortality_48h")


def test_same_seed_gives_byte_identical_tables(tmp_path):
    a = generate_source(tmp_path / "a", config=SyntheticConfig(seed=3, scale=0.01))
    b = generate_source(tmp_path / "b", config=SyntheticConfig(seed=3, scale=0.01))
    c = generate_source(tmp_path / "c", config=SyntheticConfig(seed=4, scale=0.01))
    for name in ("patients", "admissions", "icustays", "events"):
        assert sha256_file(a / f"{name}.parquet") == sha256_file(b / f"{name}.parquet")
    assert sha256_file(a / "events.parquet") != sha256_file(c / "events.parquet")


def test_scale_is_validated():
    with pytest.raises(ValueError, match="scale: expected a value between"):
        SyntheticConfig(scale=0)


@pytest.fixture(scope="module")
def default_snapshot(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("default"))
    source = synthetic_source(ws, SyntheticConfig(seed=7))
    return build_snapshot(ws, SPEC, source)


@pytest.mark.slow
def test_default_cohort_reproduces_published_figures(default_snapshot):
    s = default_snapshot.summary()
    pub = SPEC.published
    assert abs(s["n_stays"] - pub["n_stays"]) <= 0.02 * pub["n_stays"]
    assert abs(s["prevalence"] - pub["prevalence"]) <= 0.005
    assert abs(s["n_train"] - pub["n_train"]) <= 0.02 * pub["n_train"]
    assert abs(s["n_test"] - pub["n_test"]) <= 0.02 * pub["n_test"]
    for feature, rate in pub["missingness"].items():
        assert abs(s["missingness"][feature] - rate) <= 0.02, feature


@pytest.mark.slow
def test_every_exclusion_removes_someone(default_snapshot):
    flow = default_snapshot.summary()["cohort_flow"]
    assert len(flow) == 8
    assert all(step["excluded"] > 0 for step in flow[1:]), flow


@pytest.mark.slow
def test_missingness_is_informative(default_snapshot):
    feats = default_snapshot.features().merge(default_snapshot.cohort(), on="stay_id")
    measured = feats.loc[feats["lactate"].notna(), "death_48h"].mean()
    missing = feats.loc[feats["lactate"].isna(), "death_48h"].mean()
    assert measured > 1.5 * missing  # sicker patients get lactate drawn


def test_source_json_records_provenance(small_source_dir):
    info = read_source(small_source_dir).info
    assert info["source"] == "synthetic"
    assert info["params"]["seed"] == 11
    assert "no real patients" in info["deidentification"]


# -- hospitals ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sites_frame(tmp_path_factory):
    """Features, cohort and a pooled model's risk for the default hospitals at scale 0.3."""
    from sklearn.linear_model import LogisticRegression

    ws = Workspace.open(tmp_path_factory.mktemp("sites"))
    snap = build_snapshot(ws, SPEC, synthetic_source(ws, SyntheticConfig(seed=5, scale=0.3)))
    frame = snap.features().merge(snap.cohort(), on="stay_id")
    numeric = [f.name for f in SPEC.features if f.kind != "categorical"]
    x = frame[numeric].astype(float)
    x = x.fillna(x.loc[frame["split"] == "train"].median())
    train = frame["split"].eq("train").to_numpy()
    # A pooled model with no site input, as a release trained on all hospitals would be.
    model = LogisticRegression(max_iter=2000).fit(x[train], frame.loc[train, "death_48h"])
    frame["p"] = model.predict_proba(x)[:, 1]
    return frame


def test_the_hospitals_differ_in_prevalence_and_case_mix(sites_frame):
    by_site = sites_frame.groupby("site")
    assert sorted(by_site.groups) == ["east", "north", "south"]
    prevalence = by_site["death_48h"].mean()
    assert prevalence["north"] - prevalence["south"] >= 0.03, prevalence
    share = by_site["diagnosis_category"].value_counts(normalize=True).unstack(fill_value=0.0)
    assert share.loc["south", "injury"] >= 1.3 * share.loc["north", "injury"], share
    assert share.loc["north", "neoplasm"] >= 1.3 * share.loc["south", "neoplasm"], share
    assert share.loc["east", "circulatory"] >= 1.3 * share.loc["north", "circulatory"], share


def test_the_hospitals_differ_in_measurement_practice(sites_frame):
    train = sites_frame.loc[sites_frame["split"] == "train"]
    missing = train.groupby("site")[["lactate", "albumin", "gcs"]].apply(lambda d: d.isna().mean())
    assert missing.loc["north", "lactate"] - missing.loc["south", "lactate"] >= 0.10, missing
    assert missing.loc["north", "albumin"] - missing.loc["south", "albumin"] >= 0.06, missing
    assert missing.loc["east", "gcs"] > missing.loc["south", "gcs"], missing


def test_a_pooled_model_is_miscalibrated_per_hospital(sites_frame):
    """The hospital's hidden outcome offset: calibration-in-the-large differs by site."""
    from clinical_mlops.evaluation.metrics import calibration_slope_intercept

    intercept = {
        site: calibration_slope_intercept(d["death_48h"].to_numpy(), d["p"].to_numpy())["intercept"]
        for site, d in sites_frame.groupby("site")
    }
    # Under-predicted at north, over-predicted at south (logit scale): the pooled model
    # cannot see the hospital, so no pooled refit removes the gap.
    assert intercept["north"] > 0 > intercept["south"], intercept
    assert intercept["north"] - intercept["south"] >= 0.3, intercept


def test_west_keeps_its_own_outcome_rate(tmp_path):
    """Generated alone, west keeps its hidden offset: its rate is above the pooled 11.3 %."""
    ws = Workspace.open(tmp_path)
    west = build_snapshot(
        ws, SPEC, synthetic_source(ws, SyntheticConfig(seed=7, scale=0.2, sites=("west",)))
    )
    assert west.summary()["prevalence"] - SPEC.published["prevalence"] >= 0.015
    assert set(west.cohort()["site"]) == {"west"}


def test_each_hospital_is_deterministic_and_west_is_its_own(tmp_path):
    one = SyntheticConfig(seed=3, scale=0.02, sites=("west",))
    a = generate_source(tmp_path / "a", config=one)
    b = generate_source(tmp_path / "b", config=one)
    c = generate_source(tmp_path / "c", config=SyntheticConfig(seed=3, scale=0.02))
    for name in ("patients", "admissions", "icustays", "events"):
        assert sha256_file(a / f"{name}.parquet") == sha256_file(b / f"{name}.parquet")
    assert sha256_file(a / "events.parquet") != sha256_file(c / "events.parquet")
    assert set(read_source(a).read("admissions").column("site").to_pylist()) == {"west"}
    assert read_source(a).info["params"]["sites"] == ["west"]


def test_data_generate_takes_the_hospitals_and_caches_each_set_apart(tmp_path):
    import json

    from typer.testing import CliRunner

    from clinical_mlops.cli import app

    def run(*extra):
        args = ["data", "generate", "--scale", "0.01", "-w", str(tmp_path), "--json", *extra]
        return CliRunner().invoke(app, args)

    west, default = run("--sites", "west"), run()
    assert west.exit_code == 0 and default.exit_code == 0, west.output + default.output
    west_info, default_info = json.loads(west.stdout), json.loads(default.stdout)
    assert west_info["params"]["sites"] == ["west"]
    assert default_info["params"]["sites"] == ["north", "south", "east"]
    assert west_info["path"] != default_info["path"]
    sites = read_source(west_info["path"]).read("admissions").column("site").to_pylist()
    assert set(sites) == {"west"}
    bad = run("--sites", "north,nowhere")
    assert bad.exit_code != 0
    assert "sites: expected one or more distinct names" in str(bad.exception)
