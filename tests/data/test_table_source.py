"""Bring-your-own table: a prepared table becomes the same snapshot as raw events would give.

The table is made from the synthetic ICU cohort's own feature table, so every value can be
checked against the raw-event pipeline's output, row for row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from clinical_mlops.cli import app
from clinical_mlops.data.raw import read_source
from clinical_mlops.data.table import LEAKAGE_NOT_CHECKED
from clinical_mlops.errors import (
    ContractViolation,
    TableInvalid,
    TaskSpecInvalid,
    UndeclaredFeature,
)
from clinical_mlops.features.snapshot import (
    Snapshot,
    build_snapshot,
    build_table_snapshot,
    list_snapshots,
)
from clinical_mlops.tasks import load_task, task_from_mapping
from clinical_mlops.workspace import Workspace

ICU = load_task("icu_mortality_48h")
NAMES = list(ICU.feature_names)
TABLE = {
    "time_column": "admission_year",
    "label_column": "died_48h",
    "id_column": "patient_id",
    "columns": {"heart_rate": "Heart Rate"},
    "drop_columns": ["note"],
}


def table_spec(**changes: Any) -> dict[str, Any]:
    """The ICU task re-declared over a prepared table (every feature a column)."""
    data = ICU.model_dump(mode="json")
    data.pop("feature_sql")
    data["name"] = "icu_table_48h"
    data["label"]["event"] = "column"
    for f in data["features"]:
        f.update(source="static", aggregation="static", variable=None)
    data["table"] = dict(TABLE)
    data.update(changes)
    return data


def write_spec(folder: Path, data: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def icu(small_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    ws = Workspace.open(tmp_path_factory.mktemp("icu"))
    return build_snapshot(ws, ICU, read_source(small_source_dir))


@pytest.fixture(scope="module")
def table(icu: Snapshot) -> pd.DataFrame:
    """One row per ICU stay: the raw pipeline's features, label, year and ethnicity."""
    t = icu.features().merge(icu.cohort(), on="stay_id")
    t.insert(0, "patient_id", [f"P{i:06d}" for i in t["stay_id"]])
    t["note"] = "free text"
    t = t.rename(
        columns={"heart_rate": "Heart Rate", "death_48h": "died_48h", "real_year": "admission_year"}
    )
    return t.drop(columns=["stay_id", "split", "site"])


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spec(tmp_path_factory.mktemp("spec"), table_spec())


def _csv(folder: Path, frame: pd.DataFrame, name: str = "table.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def test_a_table_gives_the_raw_pipelines_features_row_for_row(
    icu: Snapshot, table: pd.DataFrame, spec_path: Path, tmp_path: Path
) -> None:
    spec = load_task(spec_path)
    ws = Workspace.open(tmp_path / "ws")
    csv = _csv(tmp_path, table)
    parquet = tmp_path / "table.parquet"
    table.to_parquet(parquet, index=False)
    snap = build_table_snapshot(ws, spec, csv)
    again = build_table_snapshot(ws, spec, parquet)

    expected = icu.features()[NAMES]
    got = snap.features()
    assert list(got.columns) == ["stay_id", *NAMES]
    assert got["stay_id"].tolist() == list(range(1, len(table) + 1))  # file rows, not patient ids
    pd.testing.assert_frame_equal(got[NAMES], expected, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(again.features(), got)
    cohort = snap.cohort()
    assert cohort["death_48h"].tolist() == icu.cohort()["death_48h"].tolist()
    assert cohort["split"].tolist() == icu.cohort()["split"].tolist()
    assert snap.summary()["prevalence"] == icu.summary()["prevalence"]

    m = snap.manifest
    assert m["source"]["source"] == "table" and m["source"]["params"]["format"] == "csv"
    assert m["leakage_check"] == {"checked": False, "reason": LEAKAGE_NOT_CHECKED}
    assert m["table"]["dropped_columns"] == ["note"]
    assert m["table"]["id_column_checked_not_copied"] == "patient_id"
    assert m["feature_sql"]["name"] == "declared-column projection"
    assert [s["step"] for s in m["cohort_flow"]] == [
        "rows in table",
        "age >= 18 years",
        "year 2008-2019",
        "outcome recorded",
        f"at most 50% of the {len(NAMES)} features missing in the window",
    ]
    # the patient identifiers never reach the snapshot
    for name in ("cohort.parquet", "features.parquet", "manifest.json"):
        assert b"P000" not in (snap.path / name).read_bytes()
    # the spec travels with the snapshot: a task from a file needs no file outside it
    assert snap.spec().spec_hash() == spec.spec_hash()
    assert json.loads((snap.path / "task_spec.json").read_text())["name"] == "icu_table_48h"


def test_data_build_source_table_on_the_command_line(
    table: pd.DataFrame, spec_path: Path, tmp_path: Path
) -> None:
    csv = _csv(tmp_path, table)
    args = ["data", "build", "--source", "table", "--path", str(csv), "--task", str(spec_path)]
    res = CliRunner().invoke(app, [*args, "-w", str(tmp_path / "ws"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["source"] == "table" and summary["n_stays"] == len(table)
    human = CliRunner().invoke(
        app, ["data", "show", summary["snapshot_id"], "-w", str(tmp_path / "ws")]
    )
    assert "leakage check: not checked" in " ".join(human.stdout.split())
    bad = CliRunner().invoke(
        app, [*args[:-2], "--task", "icu_mortality_48h", "-w", str(tmp_path / "ws")]
    )
    assert bad.exit_code != 0 and "table" in str(bad.exception)


def _broken(table: pd.DataFrame, how: str) -> pd.DataFrame:
    t = table.copy()
    if how == "missing":
        return t.drop(columns=["lactate"])
    if how == "text":
        t["lactate"] = t["lactate"].astype(object)
        t.loc[2, "lactate"] = "high"
    elif how == "label":
        t.loc[0, "died_48h"] = 2
    elif how == "flag":
        t.loc[1, "ventilation"] = 3
    elif how == "extra":
        t["insurance"] = "public"
    elif how == "duplicate":
        t.loc[4, "patient_id"] = t.loc[3, "patient_id"]
    elif how == "year":
        t["admission_year"] = t["admission_year"].astype(object)
        t.loc[5, "admission_year"] = "soon"
    return t


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("missing", "declared column(s) missing: lactate (lactate)"),
        (
            "text",
            "feature column 'lactate' (numeric) holds values that are not numbers ('high'; rows 3)",
        ),
        (
            "label",
            "label column 'died_48h' must be binary (0/1, or true/false); found [2.0] (rows 1)",
        ),
        ("flag", "feature column 'ventilation' (flag) must be binary"),
        ("extra", "column(s) ['insurance'] are not declared by task 'icu_table_48h'"),
        ("duplicate", "1 patient id(s) appear in more than one row (rows 4, 5)"),
        (
            "year",
            "time column 'admission_year' holds values that are neither years nor dates ('soon'",
        ),
    ],
)
def test_bad_tables_are_refused_naming_column_and_rows(
    table: pd.DataFrame, spec_path: Path, tmp_path: Path, how: str, fragment: str
) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(TableInvalid) as info:
        build_table_snapshot(ws, load_task(spec_path), _csv(tmp_path, _broken(table, how)))
    assert fragment in str(info.value)
    assert "table.csv" in str(info.value)
    assert list_snapshots(ws) == []  # nothing half-built


def test_an_undeclared_column_is_refused_unless_dropped_knowingly(
    table: pd.DataFrame, tmp_path: Path
) -> None:
    """R-P1: an extra column is refused, not ignored; listed in drop_columns it is dropped."""
    t = _broken(table, "extra")
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(TableInvalid, match="R-P1"):
        build_table_snapshot(ws, load_task(write_spec(tmp_path, table_spec())), _csv(tmp_path, t))
    dropping = table_spec(table=TABLE | {"drop_columns": ["note", "insurance"]})
    snap = build_table_snapshot(ws, load_task(write_spec(tmp_path, dropping)), _csv(tmp_path, t))
    assert snap.manifest["table"]["dropped_columns"] == ["insurance", "note"]
    assert "insurance" not in snap.features().columns


def test_out_of_range_values_few_are_artefacts_many_stop_the_build(
    table: pd.DataFrame, spec_path: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(tmp_path / "ws")
    spec = load_task(spec_path)
    few = table.copy()
    few.loc[7, "Heart Rate"] = 900.0  # one value: a typing error
    snap = build_table_snapshot(ws, spec, _csv(tmp_path, few))
    assert np.isnan(snap.features().loc[7, "heart_rate"])
    soft = snap.manifest["contracts"]["soft"]
    assert [(c["column"], c["count"], c["examples"]) for c in soft] == [("heart_rate", 1, [8])]
    many = table.copy()
    many["Heart Rate"] = many["Heart Rate"] * 10  # a unit error
    with pytest.raises(ContractViolation, match="too many to be artefacts"):
        build_table_snapshot(ws, spec, _csv(tmp_path, many, "many.csv"))


def test_a_feature_not_approved_cannot_reach_a_model(table: pd.DataFrame, tmp_path: Path) -> None:
    data = table_spec()
    data["features"][10]["status"] = "proposed"
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(UndeclaredFeature, match="lactate .* not approved"):
        build_table_snapshot(ws, load_task(write_spec(tmp_path, data)), _csv(tmp_path, table))


def test_a_table_task_may_not_reuse_a_built_in_name(table: pd.DataFrame, tmp_path: Path) -> None:
    spec = load_task(write_spec(tmp_path, table_spec(name="icu_mortality_48h")))
    with pytest.raises(TaskSpecInvalid, match="is a built-in task"):
        build_table_snapshot(Workspace.open(tmp_path / "ws"), spec, _csv(tmp_path, table))


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda d: d.update(feature_sql="x.sql"), "feature_sql", "no feature SQL"),
        (
            lambda d: d["features"][4].update(source="event", variable="map", aggregation="mean"),
            "features",
            "are event features",
        ),
        (lambda d: d["label"].update(event="in_hospital_death"), "label.event", "use 'column'"),
        (
            lambda d: d.update(features=[f for f in d["features"] if f["name"] != "age"]),
            "features",
            "numeric 'age' feature",
        ),
        (
            lambda d: d["table"].update(columns={"potassium": "K"}),
            "table.columns",
            "neither features",
        ),
        (
            lambda d: d["protected_attributes"].append(
                {"name": "payer", "column": "payer", "groups": {"A": "A"}}
            ),
            "protected_attributes",
            "must be a feature or 'ethnicity'",
        ),
    ],
)
def test_the_table_declaration_is_checked_when_the_spec_loads(
    change: Any, field: str, fragment: str
) -> None:
    data = table_spec()
    change(data)
    with pytest.raises(TaskSpecInvalid) as info:
        task_from_mapping(data, source="t.yaml")
    problems = dict(info.value.problems)
    assert field in problems and fragment in problems[field], info.value


def test_a_raw_event_task_cannot_read_a_column_label() -> None:
    data = ICU.model_dump(mode="json")
    data["label"]["event"] = "column"
    with pytest.raises(TaskSpecInvalid, match="needs a table section"):
        task_from_mapping(data, source="t.yaml")
    assert ICU.table is None and ICU.feature_sql == "icu_mortality_48h.sql"


# -- the hospital of each row ----------------------------------------------------------------


def test_a_declared_site_column_reaches_the_cohort_never_the_features(
    icu: Snapshot, table: pd.DataFrame, tmp_path: Path
) -> None:
    with_site = table.assign(hospital=icu.cohort()["site"].to_numpy())
    ws = Workspace.open(tmp_path / "ws")
    csv = _csv(tmp_path, with_site)
    # Not declared: an undeclared column is refused, never read silently (R-P1).
    with pytest.raises(TableInvalid, match=r"\['hospital'\] are not declared"):
        build_table_snapshot(ws, load_task(write_spec(tmp_path, table_spec())), csv)
    spec = load_task(write_spec(tmp_path, table_spec(table=TABLE | {"site_column": "hospital"})))
    snap = build_table_snapshot(ws, spec, csv)
    assert snap.cohort()["site"].tolist() == icu.cohort()["site"].tolist()
    assert len(set(snap.cohort()["site"])) == 3
    assert "hospital" not in snap.features().columns and "site" not in snap.features().columns
    assert snap.manifest["table"]["columns"]["__site__"] == "hospital"
    # An empty cell is refused with its row, and nothing is half-built.
    blank = with_site.astype({"hospital": object})
    blank.loc[3, "hospital"] = None
    with pytest.raises(TableInvalid, match=r"site column 'hospital' is empty in rows 4"):
        build_table_snapshot(ws, spec, _csv(tmp_path, blank, "blank.csv"))
    assert list_snapshots(ws) == [snap.id]


def test_a_table_may_declare_its_one_site(table: pd.DataFrame, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    spec = load_task(write_spec(tmp_path, table_spec(table=TABLE | {"site": "st-marys"})))
    snap = build_table_snapshot(ws, spec, _csv(tmp_path, table))
    assert set(snap.cohort()["site"]) == {"st-marys"}
    assert snap.manifest["table"]["site"] == "st-marys"
    undeclared = build_table_snapshot(
        ws, load_task(write_spec(tmp_path, table_spec())), _csv(tmp_path, table)
    )
    assert set(undeclared.cohort()["site"]) == {"unspecified"}
    both = table_spec(table=TABLE | {"site": "a", "site_column": "hospital"})
    with pytest.raises(TaskSpecInvalid, match="either site_column"):
        task_from_mapping(both, source="t.yaml")


def test_declaring_no_site_keeps_a_table_specs_hashes() -> None:
    bare = task_from_mapping(table_spec(), source="t.yaml")
    spelled = task_from_mapping(
        table_spec(table=TABLE | {"site": None, "site_column": None}), source="t.yaml"
    )
    assert (spelled.spec_hash(), spelled.criteria_hash()) == (
        bare.spec_hash(),
        bare.criteria_hash(),
    )
    declared = task_from_mapping(table_spec(table=TABLE | {"site": "x"}), source="t.yaml")
    assert declared.criteria_hash() != bare.criteria_hash()
