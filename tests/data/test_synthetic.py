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
