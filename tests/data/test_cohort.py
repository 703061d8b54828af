"""Each R-T1 criterion removes exactly the stays it should, on a hand-made source."""

from __future__ import annotations

import pandas as pd
import pytest

from clinical_mlops.data.cohort import apply_missingness_criterion, build_cohort
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import ContractViolation
from clinical_mlops.features.engine import extract_features
from clinical_mlops.tasks import load_task
from raw_fixture import UNITS, stay, write_source

SPEC = load_task("icu_mortality_48h")

# stay_id -> the step that must remove it (None: stays in the cohort).
CASES = {
    1: (stay(1), None),
    2: (stay(2, age=17.0), "age >= 18 years"),
    3: (stay(3, real_year=2007), "admitted 2008-2019"),
    4: (stay(4, real_year=2020), "admitted 2008-2019"),
    # 5 is the index stay; 6 is a later ICU stay in the same admission.
    5: (stay(5), None),
    6: (
        stay(6, subject_id=1005, hadm_id=2005, in_offset_h=-24 * 1 + 100),
        "index ICU stay of the admission (repeat stays excluded)",
    ),
    # 7 is the patient's first admission; 8 is their later admission (another hadm).
    7: (stay(7, death_h=None), None),
    8: (stay(8, subject_id=1007, real_year=2013), "first ICU admission of the patient"),
    9: (stay(9, los_h=23.9), "ICU length of stay >= 24 h"),
    10: (stay(10, disch_after_out_h=None), "outcome recorded"),
    11: (
        stay(11, variables=["heart_rate", "map", "spo2", "gcs", "resp_rate"]),
        "at most 50% of the 17 features missing in the window",
    ),
    # 8 of 17 missing (47 %) stays in; 9 of 17 (53 %) is out.
    12: (stay(12, variables=list(UNITS)[:6]), None),
    13: (
        stay(13, variables=list(UNITS)[:5]),
        "at most 50% of the 17 features missing in the window",
    ),
    # Labels: death at hour 30 (in window), hour 80 (after), discharge alive.
    14: (stay(14, death_h=30.0, los_h=30.0), None),
    15: (stay(15, death_h=80.0, los_h=80.0), None),
    16: (stay(16, death_h=72.0, los_h=72.0), None),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = write_source(tmp_path_factory.mktemp("cohort") / "raw", [s for s, _ in CASES.values()])
    source = read_source(root)
    cohort = build_cohort(source, SPEC)
    feats = extract_features(SPEC, cohort=cohort.stays, events=[source.table_path("events")])
    apply_missingness_criterion(cohort, feats, SPEC)
    return cohort


def test_each_criterion_removes_exactly_its_stays(built):
    expected: dict[str, int] = {}
    for _, step in CASES.values():
        if step is not None:
            expected[step] = expected.get(step, 0) + 1
    steps = [s.step for s in built.flow]
    assert set(expected) <= set(steps), f"flow steps {steps}"
    for s in built.flow[1:]:
        assert s.excluded == expected.get(s.step, 0), s
    final = set(built.stays["stay_id"].tolist())
    assert final == {sid for sid, (_, step) in CASES.items() if step is None}
    assert built.flow[0].remaining == len(CASES)
    assert built.flow[-1].remaining == len(final)


def test_flow_counts_are_consistent(built):
    for before, after in zip(built.flow, built.flow[1:], strict=False):
        assert after.remaining == before.remaining - after.excluded


def test_labels_follow_the_window_after_prediction_time(built):
    labels = built.stays.set_index("stay_id")["death_48h"]
    assert labels[14] == 1  # died at hour 30: inside (24, 72]
    assert labels[16] == 1  # died at hour 72: window end is inclusive
    assert labels[15] == 0  # died at hour 80: after the window
    assert labels[1] == 0


def test_temporal_split_by_real_year(tmp_path):
    stays = [stay(1, real_year=2016), stay(2, real_year=2017), stay(3, real_year=2019)]
    cohort = build_cohort(read_source(write_source(tmp_path / "raw", stays)), SPEC)
    split = cohort.stays.set_index("stay_id")["split"]
    assert split.to_dict() == {1: "train", 2: "test", 3: "test"}


def test_death_before_prediction_time_is_a_label_leak(tmp_path):
    # ICU stay charted as 30 h long, but death recorded at hour 10: inconsistent, and a leak.
    stays = [stay(1, death_h=10.0, los_h=30.0)]
    source = read_source(write_source(tmp_path / "raw", stays))
    with pytest.raises(ContractViolation, match=r"label leakage.*stay_id \[1\]"):
        build_cohort(source, SPEC)


def test_cohort_keeps_only_what_is_needed(built):
    assert isinstance(built.stays, pd.DataFrame)
    assert {"window_start", "window_end", "prediction_time", "split", "death_48h"} <= set(
        built.stays.columns
    )
