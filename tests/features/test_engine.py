"""The feature engine enforces R-P1 and respects the observation window."""

from __future__ import annotations

import pytest

from clinical_mlops.data.cohort import build_cohort
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import UndeclaredFeature
from clinical_mlops.features.engine import (
    FeatureSQL,
    extract_features,
    feature_ranges,
    load_feature_sql,
)
from clinical_mlops.tasks import load_task, task_from_mapping
from raw_fixture import stay, write_source

SPEC = load_task("icu_mortality_48h")


@pytest.fixture
def cohort_and_events(tmp_path):
    stays = [
        stay(
            1,
            extra_events=[
                (0.0, "heart_rate", 130.0, None),
                (23.99, "heart_rate", 140.0, None),
                (24.0, "heart_rate", 180.0, None),
                (-0.5, "heart_rate", 170.0, None),
            ],
        ),
        stay(2, variables=["map", "gcs"], diagnosis_icd10="D61.81"),
        stay(3, diagnosis_icd10="D32.9", extra_events=[(5.0, "ventilation", 1.0, None)]),
    ]
    source = read_source(write_source(tmp_path / "raw", stays))
    return build_cohort(source, SPEC).stays, [source.table_path("events")]


def test_window_is_half_open_and_starts_at_icu_admission(cohort_and_events):
    cohort, events = cohort_and_events
    feats = extract_features(SPEC, cohort=cohort, events=events).set_index("stay_id")
    # 130 at hour 0 and 140 at hour 23.99 count; 180 at hour 24 and 170 before admission do not.
    assert feats.loc[1, "heart_rate"] == 140.0


def test_missing_variables_are_null_and_flags_are_integers(cohort_and_events):
    cohort, events = cohort_and_events
    feats = extract_features(SPEC, cohort=cohort, events=events).set_index("stay_id")
    assert feats.loc[2, ["lactate", "heart_rate", "ventilation"]].isna().all()
    assert feats.loc[3, "ventilation"] == 1
    assert feats.loc[1, "ventilation"] == 0
    assert str(feats["ventilation"].dtype) == "Int8"


def test_icd10_chapters(cohort_and_events):
    cohort, events = cohort_and_events
    feats = extract_features(SPEC, cohort=cohort, events=events).set_index("stay_id")
    assert feats["diagnosis_category"].to_dict() == {1: "infectious", 2: "blood", 3: "neoplasm"}


def test_an_undeclared_column_is_refused_not_dropped(cohort_and_events):
    cohort, events = cohort_and_events
    good = load_feature_sql(SPEC)
    sneaky = FeatureSQL(
        "sneaky.sql", good.text.replace("a.gcs,", "a.gcs, c.diagnosis_icd10 AS icd_code,")
    )
    with pytest.raises(
        UndeclaredFeature,
        match="returns column\\(s\\) icd_code that task 'icu_mortality_48h' does not declare",
    ):
        extract_features(SPEC, cohort=cohort, events=events, sql=sneaky)


def test_a_declared_feature_the_sql_omits_is_refused(cohort_and_events):
    cohort, events = cohort_and_events
    good = load_feature_sql(SPEC)
    short = FeatureSQL("short.sql", good.text.replace("    a.gcs,\n", ""))
    with pytest.raises(UndeclaredFeature, match="does not return declared feature\\(s\\) gcs"):
        extract_features(SPEC, cohort=cohort, events=events, sql=short)


def test_a_feature_not_yet_approved_cannot_leave(cohort_and_events):
    cohort, events = cohort_and_events
    data = SPEC.model_dump(mode="json")
    data["features"][10]["status"] = "proposed"
    spec = task_from_mapping(data, source="test")
    with pytest.raises(UndeclaredFeature, match="lactate .* not approved"):
        extract_features(spec, cohort=cohort, events=events)


def test_ranges_come_from_the_spec():
    ranges = feature_ranges(SPEC).set_index("variable")
    assert tuple(ranges.loc["lactate"]) == SPEC.feature("lactate").valid_range
    assert len(ranges) == len(SPEC.event_features)
