"""The bedside executor gives exactly the offline snapshot's feature vector (same SQL, one unit)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pandas as pd
import pytest

from clinical_mlops.data.cohort import build_cohort
from clinical_mlops.data.sources import synthetic_source, ward_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.data.ward import WardConfig
from clinical_mlops.errors import InputInvalid
from clinical_mlops.features.engine import COHORT_COLUMNS, OPTIONAL_COHORT_COLUMNS
from clinical_mlops.features.online import OnlineUnit, features_for_one
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.tasks import load_task, task_from_mapping
from clinical_mlops.workspace import Workspace

N_UNITS = 500


def _units(source, spec, snapshot) -> list[tuple[int, OnlineUnit]]:
    """Return (stay_id, OnlineUnit) of N_UNITS snapshot units, built from the raw tables."""
    cohort = build_cohort(source, spec).stays.set_index("stay_id", drop=False)
    ids = snapshot.features()["stay_id"].tolist()
    assert len(ids) >= N_UNITS
    step = len(ids) / N_UNITS
    chosen = [ids[int(i * step)] for i in range(N_UNITS)]
    key = spec.event_key
    rows = cohort.loc[chosen]
    events = pd.read_parquet(source.table_path("events"))
    events = events.loc[events[key].isin(rows[key])]
    by_unit = {k: g for k, g in events.groupby(key)}
    relations = source.relations()
    admissions = pd.read_parquet(relations["admissions"]) if "admissions" in relations else None
    diagnoses = pd.read_parquet(relations["diagnoses"]) if "diagnoses" in relations else None
    out = []
    for stay_id, row in rows.iterrows():
        own = by_unit.get(row[key], events.iloc[:0])
        columns = [*COHORT_COLUMNS, *(c for c in OPTIONAL_COHORT_COLUMNS if c in row.index)]
        unit = OnlineUnit(
            cohort={c: (None if pd.isna(row[c]) else row[c]) for c in columns},
            events=list(
                zip(own["variable"], own["charttime"].dt.to_pydatetime(), own["value"], strict=True)
            ),
            admissions=(
                []
                if admissions is None
                else [
                    (h, t.to_pydatetime())
                    for h, t in admissions.loc[
                        admissions["subject_id"] == row["subject_id"], ["hadm_id", "admittime"]
                    ].itertuples(index=False)
                ]
            ),
            diagnoses=(
                []
                if diagnoses is None
                else diagnoses.loc[diagnoses["hadm_id"] == row["hadm_id"]]
                .sort_values("seq_num")["icd10"]
                .tolist()
            ),
        )
        out.append((int(stay_id), unit))
    return out


def _same(a, b) -> bool:
    missing_a = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA
    missing_b = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if missing_a or missing_b:
        return missing_a and missing_b
    return type(a)(b) == a if not isinstance(a, str) else a == str(b)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace.open(tmp_path_factory.mktemp("online"))


@pytest.mark.parametrize(
    ("task", "make_source"),
    [
        (
            "icu_mortality_48h",
            lambda ws: synthetic_source(ws, SyntheticConfig(seed=11, scale=0.05)),
        ),
        ("readmission_30d", lambda ws: ward_source(ws, WardConfig(seed=11, scale=0.1))),
    ],
)
def test_online_features_equal_the_offline_snapshot(workspace, task, make_source):
    spec = load_task(task)
    source = make_source(workspace)
    snapshot = build_snapshot(workspace, spec, source)
    offline = snapshot.features().set_index("stay_id")
    differences = []
    present = dict.fromkeys(spec.feature_names, 0)
    for stay_id, unit in _units(source, spec, snapshot):
        online = features_for_one(spec, unit)
        assert list(online) == list(spec.feature_names)
        for name, value in online.items():
            if value is not None:
                present[name] += 1
            if not _same(value, offline.at[stay_id, name]):
                differences.append((stay_id, name, value, offline.at[stay_id, name]))
    assert differences == []
    # Every feature is measured in some of the units: the comparison is not of empty vectors.
    assert all(count > 0 for count in present.values()), present


def _unit(**cohort) -> OnlineUnit:
    start = datetime(2030, 1, 1, 8, 0)
    row = {
        "stay_id": 1,
        "subject_id": 1,
        "hadm_id": 1,
        "age": 70.0,
        "sex": "F",
        "diagnosis_icd10": "A41.9",
        "admittime": start,
        "dischtime": None,
        "los_hours": 30.0,
        "window_start": start,
        "window_end": start + timedelta(hours=24),
        "prediction_time": start + timedelta(hours=24),
    } | cohort
    events = [
        ("map", start + timedelta(hours=1), 61.0),
        ("map", start + timedelta(hours=2), 55.0),
        ("map", start + timedelta(hours=3), 5.0),  # outside the valid range: an artefact
        ("map", start + timedelta(hours=25), 40.0),  # after the prediction time
        ("vasopressor", start + timedelta(hours=4), 1.0),
        ("lactate", start - timedelta(hours=1), 6.0),  # before ICU admission
    ]
    return OnlineUnit(cohort=row, events=events)


SPEC = load_task("icu_mortality_48h")


def test_one_unit_uses_the_window_the_range_and_the_aggregation():
    got = features_for_one(SPEC, _unit())
    assert got["map"] == 55.0 and got["vasopressor"] == 1 and got["lactate"] is None
    assert got["diagnosis_category"] == "infectious" and got["age"] == 70.0
    assert got["ventilation"] is None


def test_a_feature_window_declared_in_the_spec_is_executed():
    data = SPEC.model_dump(mode="json")
    data["features"][4]["window"] = {"start_hours": 1.5, "end_hours": 24}  # map from hour 1.5
    spec = task_from_mapping(data, source="test")
    assert features_for_one(spec, _unit())["map"] == 55.0
    data["features"][4]["window"] = {"start_hours": 0, "end_hours": 1.5}
    spec = task_from_mapping(data, source="test")
    assert features_for_one(spec, _unit())["map"] == 61.0


def test_timezone_aware_times_are_read_as_utc():
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    unit = _unit()
    shifted = OnlineUnit(
        cohort=dict(unit.cohort),
        events=[(v, (t + timedelta(hours=2)).replace(tzinfo=plus2), x) for v, t, x in unit.events],
    )
    assert features_for_one(SPEC, shifted) == features_for_one(SPEC, unit)


def test_a_cohort_row_without_a_required_column_is_named():
    unit = _unit()
    row = dict(unit.cohort)
    row.pop("window_end")
    with pytest.raises(InputInvalid) as info:
        features_for_one(SPEC, OnlineUnit(cohort=row, events=unit.events))
    assert [p for p, _ in info.value.problems] == ["cohort.window_end"]
