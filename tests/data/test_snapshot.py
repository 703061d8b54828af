"""Snapshots: the id is stable for the same inputs and changes with any input."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_mlops.data.raw import read_source, write_table
from clinical_mlops.errors import ContractViolation, SnapshotNotFound, WorkspaceError
from clinical_mlops.features.snapshot import build_snapshot, open_snapshot
from clinical_mlops.hashing import sha256_file, sha256_text
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SPEC = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def reference(small_source_dir, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ref"))
    return build_snapshot(ws, SPEC, read_source(small_source_dir))


def test_same_inputs_give_the_same_id_in_another_workspace(reference, small_source_dir, workspace):
    again = build_snapshot(workspace, SPEC, read_source(small_source_dir))
    assert again.id == reference.id
    for name in ("cohort.parquet", "features.parquet", "contracts.json", "manifest.json"):
        assert sha256_file(again.path / name) == sha256_file(reference.path / name)


def test_manifest_records_lineage(reference):
    m = reference.manifest
    assert m["feature_sql"]["sha256"] == sha256_text(SPEC.sql_path().read_text(encoding="utf-8"))
    assert m["cohort_criteria_sha256"] == SPEC.criteria_hash()
    assert m["task"]["spec_sha256"] == SPEC.spec_hash()
    assert set(m["source"]["raw_files"]) == {"patients", "admissions", "icustays", "events"}
    assert m["source"]["deidentification"].startswith("synthetic")
    assert m["counts"]["n_stays"] == m["counts"]["n_train"] + m["counts"]["n_test"]
    assert m["cohort_flow"][-1]["remaining"] == m["counts"]["n_stays"]
    assert set(m["missingness_train"]) == set(SPEC.feature_names)
    assert len(m["split_membership_sha256"]) == 64


def test_snapshot_holds_only_declared_features(reference):
    feats = reference.features()
    assert list(feats.columns) == ["stay_id", *SPEC.feature_names]
    cohort = reference.cohort()
    assert list(cohort.columns) == [
        "stay_id",
        "real_year",
        "split",
        "death_48h",
        "ethnicity",
        "site",
    ]
    assert set(cohort["site"]) == {"north", "south", "east"}
    assert "subject_id" not in cohort.columns  # minimisation: source identifiers stay behind


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=st.integers(min_value=0, max_value=10_000), delta=st.sampled_from([-1.0, 1.0, 7.5]))
def test_changing_any_charted_value_changes_the_id(
    reference, small_source_dir, tmp_path_factory, row, delta
):
    raw = tmp_path_factory.mktemp("mut") / "raw"
    shutil.copytree(small_source_dir, raw)
    events = pq.read_table(raw / "events.parquet")
    i = row % events.num_rows
    values = events["value"].to_pylist()
    values[i] = values[i] + delta
    events = events.set_column(
        events.schema.get_field_index("value"), "value", pa.array(values, pa.float64())
    )
    write_table(events, raw / "events.parquet")
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    try:
        snap = build_snapshot(ws, SPEC, read_source(raw))
    except ContractViolation as exc:  # a mutation may break a contract; it must then be refused
        assert "data-contract violation" in str(exc)
        return
    assert snap.id != reference.id
    assert (
        snap.manifest["source"]["raw_files"]["events"]
        != reference.manifest["source"]["raw_files"]["events"]
    )


def test_another_seed_gives_another_id(reference, workspace):
    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import SyntheticConfig

    other = synthetic_source(workspace, SyntheticConfig(seed=12, scale=0.025))
    assert build_snapshot(workspace, SPEC, other).id != reference.id


def test_open_by_prefix_and_unknown_id(reference):
    ws = Workspace(reference.path.parent.parent.parent)
    assert open_snapshot(ws, reference.id[:10]).id == reference.id
    with pytest.raises(SnapshotNotFound, match="does not exist"):
        open_snapshot(ws, "deadbeefdeadbeef")


def test_a_tampered_snapshot_file_is_refused(reference, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(reference.path.parent.parent.parent, copy)
    path = copy / "artifacts" / "snapshots" / reference.id / "contracts.json"
    path.write_bytes(path.read_bytes().replace(b"ok", b"OK", 1))
    with pytest.raises(WorkspaceError, match="contracts.json does not match its manifest hash"):
        open_snapshot(Workspace(copy), reference.id)
