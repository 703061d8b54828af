"""Data contracts: leakage is caught, bad input stops with a readable report, nothing is written."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinical_mlops.data.contracts import MAX_OUT_OF_RANGE_FRACTION
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import ContractViolation, LeakageDetected, SourceInvalid
from clinical_mlops.features.engine import FeatureSQL, load_feature_sql
from clinical_mlops.features.snapshot import build_snapshot, list_snapshots
from clinical_mlops.tasks import load_task
from raw_fixture import stay, write_source

SPEC = load_task("icu_mortality_48h")


def _stays(n: int = 8, **overrides):
    out = [
        stay(i, death_h=40.0 if i % 4 == 0 else None, los_h=40.0 if i % 4 == 0 else 48.0)
        for i in range(1, n + 1)
    ]
    out[1] = stay(2, real_year=2018)
    out[2] = stay(3, real_year=2018, death_h=30.0, los_h=30.0)
    for sid, kw in overrides.items():
        out[sid - 1] = stay(sid, **(out[sid - 1] | kw))
    return out


def _leaky_sql() -> FeatureSQL:
    """The shipped SQL with lactate read past the prediction time (24 h beyond the window)."""
    good = load_feature_sql(SPEC)
    text = good.text.replace(
        "    a.lactate,\n",
        "    (SELECT MAX(e.value) FROM events e WHERE e.stay_id = c.stay_id"
        " AND e.variable = 'lactate' AND e.charttime >= c.window_start"
        " AND e.charttime < c.window_end + INTERVAL 24 HOUR) AS lactate,\n",
    )
    assert text != good.text
    return FeatureSQL(name="leaky.sql", text=text)


def test_planted_post_prediction_event_is_caught_by_the_leakage_check(tmp_path, workspace):
    # Stay 5 has a lactate of 9.9 charted at hour 30, after its prediction time (hour 24).
    stays = _stays()
    stays[4] = stay(5, extra_events=[(30.0, "lactate", 9.9, None)])
    source = read_source(write_source(tmp_path / "raw", stays))
    with pytest.raises(LeakageDetected) as info:
        build_snapshot(workspace, SPEC, source, sql=_leaky_sql())
    message = str(info.value)
    assert "features.lactate" in message
    assert "5" in message.split("features.lactate", 1)[1]
    assert list_snapshots(workspace) == []


def test_the_shipped_sql_ignores_the_planted_event(tmp_path, workspace):
    stays = _stays()
    stays[4] = stay(5, extra_events=[(30.0, "lactate", 9.9, None), (-2.0, "lactate", 8.8, None)])
    source = read_source(write_source(tmp_path / "raw", stays))
    snap = build_snapshot(workspace, SPEC, source)
    lactate = snap.features().set_index("stay_id")["lactate"]
    assert lactate[5] == 1.5  # only the hour-2 value; hour 30 and the pre-ICU draw are outside


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda s: s.__setitem__(0, stay(1, extra_events=[(3.0, "lactate", 15.0, "mg/dL")])),
            "unit matches spec — events.unit",
        ),
        (
            lambda s: s.__setitem__(0, stay(1, los_h=-5.0)),
            "timestamps in order — icustays.outtime: ICU out-time before in-time",
        ),
        (lambda s: s.append(stay(1)), "unique identifier — icustays.stay_id"),
        (lambda s: s.__setitem__(0, stay(1, sex="X")), "patients.sex"),
    ],
)
def test_hard_violations_name_table_column_and_rows(tmp_path, workspace, mutate, fragment):
    stays = _stays()
    mutate(stays)
    source = read_source(write_source(tmp_path / "raw", stays))
    with pytest.raises(ContractViolation) as info:
        build_snapshot(workspace, SPEC, source)
    assert fragment in str(info.value)
    assert "nothing was written" in str(info.value)
    assert list_snapshots(workspace) == []
    assert not any(workspace.snapshots_dir.iterdir()), "no staging folder may be left behind"


def test_out_of_range_values_are_soft_when_rare_and_hard_when_systematic(tmp_path, workspace):
    many = [
        stay(i, extra_events=[(h, "heart_rate", 95.0, None) for h in range(3, 20)])
        for i in range(1, 9)
    ]
    many[1] = stay(
        2, real_year=2018, extra_events=[(h, "heart_rate", 95.0, None) for h in range(3, 20)]
    )
    many[2] = stay(3, real_year=2018, death_h=30.0, los_h=30.0)
    many[3] = stay(4, death_h=40.0, los_h=40.0)
    many[0] = stay(
        1,
        extra_events=[(3.0, "heart_rate", 0.0, None)]
        + [(h, "heart_rate", 95.0, None) for h in range(4, 20)],
    )
    snap = build_snapshot(workspace, SPEC, read_source(write_source(tmp_path / "a", many)))
    soft = [
        c
        for c in snap.contracts()["checks"]
        if c["column"] == "value[heart_rate]" and not c["passed"]
    ]
    assert soft and soft[0]["severity"] == "soft" and soft[0]["count"] == 1
    assert snap.features().set_index("stay_id").loc[1, "heart_rate"] == 95.0  # artefact ignored

    # A quarter of all heart rates out of range: a unit or mapping fault, not artefacts.
    bad = _stays()
    bad[0] = stay(1, extra_events=[(h, "heart_rate", 400.0, None) for h in range(3, 8)])
    assert MAX_OUT_OF_RANGE_FRACTION < 5 / (8 + 5)
    with pytest.raises(
        ContractViolation, match=r"value in physiological range — events.value\[heart_rate\]"
    ):
        build_snapshot(workspace, SPEC, read_source(write_source(tmp_path / "b", bad)))


def test_empty_source_table_is_refused(tmp_path):
    root = write_source(tmp_path / "raw", _stays())
    schema = pq.read_schema(root / "events.parquet")
    pq.write_table(pa.Table.from_pylist([], schema=schema), root / "events.parquet")
    with pytest.raises(SourceInvalid, match=r"table events .* empty \(0 rows\)"):
        read_source(root)


def test_missing_table_and_missing_column_are_named(tmp_path):
    root = write_source(tmp_path / "raw", _stays())
    (root / "patients.parquet").unlink()
    with pytest.raises(SourceInvalid, match="table patients is missing"):
        read_source(root)
    root = write_source(tmp_path / "raw2", _stays())
    t = pq.read_table(root / "icustays.parquet").drop_columns(["outtime"])
    pq.write_table(t, root / "icustays.parquet")
    with pytest.raises(SourceInvalid, match="table icustays: missing column.*outtime"):
        read_source(root)


def test_wrong_column_type_is_named(tmp_path):
    root = write_source(tmp_path / "raw", _stays())
    t = pq.read_table(root / "events.parquet")
    t = t.set_column(
        t.schema.get_field_index("value"),
        "value",
        pa.array([str(v) for v in t["value"].to_pylist()]),
    )
    pq.write_table(t, root / "events.parquet")
    with pytest.raises(
        SourceInvalid, match="table events, column value: expected double, found string"
    ):
        read_source(root)


def test_single_class_split_is_refused(tmp_path, workspace):
    stays = [stay(i) for i in range(1, 6)] + [stay(9, real_year=2018)]
    with pytest.raises(ContractViolation, match="train split has only label 0"):
        build_snapshot(workspace, SPEC, read_source(write_source(tmp_path / "raw", stays)))
