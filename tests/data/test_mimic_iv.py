"""The MIMIC-IV v2.2 reader on a hand-written fixture in the official layout.

The fixture (tests/data/fixtures/mimic_iv, described in its README) has twelve patients:
one per inclusion and exclusion rule of the ICU cohort, every mapped itemid, one row of
an unmapped item per event table, and the quirks the reader must handle (a temperature
in °F, an intubated verbal GCS, a lab result before ICU admission, an ICU stay that
outlasts the patient's death, a death recorded only by hospital_expire_flag, ICD-9
primary diagnoses, a vasopressor order marked Rewritten, a lab row without hadm_id).
Every expected number below was worked out by hand from those rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from clinical_mlops.application.training import build_task_snapshot
from clinical_mlops.clock import FixedClock
from clinical_mlops.data.cohort import apply_missingness_criterion, build_cohort
from clinical_mlops.data.mimic_iv import ITEMS, TABLES, extract_mimic_iv, mimic_iv_source
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import EngineUnavailable, SourceInvalid
from clinical_mlops.features import spark as spark_module
from clinical_mlops.features.engine import extract_features
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

FIXTURE = Path(__file__).parent / "fixtures" / "mimic_iv"
SPEC = load_task("icu_mortality_48h")
CLOCK = FixedClock(datetime(2024, 1, 1, tzinfo=UTC))

# stay_id -> (real year, age, split, death_48h) for the six stays that end in the cohort.
COHORT = {
    30000001: (2009, 70.0, "train", 0),
    30000002: (2016, 61.0, "train", 1),
    30000007: (2012, 66.0, "train", 0),
    30000003: (2018, 50.0, "test", 0),
    30000004: (2018, 80.0, "test", 1),
    30000008: (2018, 55.0, "test", 0),
}
NAN = math.nan
FEATURE_ORDER = list(SPEC.feature_names)
# The feature rows, by hand (NaN = no value in hours 0-24 of the ICU stay).
FEATURES = {
    30000001: (70.0, "F", "infectious", 9.0, 58.0, 112.0, 26.0, 38.0, 91.0, 2.1, 3.2, 2.9, 1.8, 95.0, 1.6, 1, 1),
    30000002: (61.0, "M", "circulatory", NAN, 55.0, 120.0, 22.0, 36.1, 89.0, 3.0, 5.5, NAN, NAN, 60.0, 2.4, 1, 0),
    30000003: (50.0, "F", "respiratory", 15.0, 70.0, 95.0, 20.0, NAN, 96.0, NAN, NAN, 3.5, 0.6, NAN, NAN, 1, 0),
    30000004: (80.0, "M", "injury", NAN, 50.0, 130.0, 30.0, 35.0, 85.0, 1.1, 8.0, NAN, NAN, NAN, NAN, 0, 1),
    30000007: (66.0, "F", "circulatory", NAN, 85.0, 80.0, 16.0, NAN, 98.0, NAN, NAN, NAN, NAN, NAN, NAN, 0, 0),
    30000008: (55.0, "M", "endocrine", NAN, 90.0, 75.0, 14.0, NAN, 97.0, 0.9, NAN, NAN, NAN, NAN, NAN, 0, 0),
    # Sparse: excluded by the data-sufficiency criterion (11 of 17 features missing).
    30000012: (58.0, "M", "infectious", NAN, NAN, 100.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0, 0),
}  # fmt: skip
FLOW = [
    ("ICU stays in source", 14, 0),
    ("age >= 18 years", 13, 1),  # 30000005: 16 years old
    ("admitted 2008-2019", 12, 1),  # 30000006: real year 2007
    ("index ICU stay of the admission (repeat stays excluded)", 11, 1),  # 30000017
    ("first ICU admission of the patient", 10, 1),  # 30000018: the patient's second admission
    ("ICU length of stay >= 24 h", 8, 2),  # 30000009: 10 h; 30000010: ends at death, hour 20
    ("outcome recorded", 7, 1),  # 30000011: no discharge, no death
    ("at most 50% of the 17 features missing in the window", 6, 1),  # 30000012
]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_mimic_iv(FIXTURE, tmp_path_factory.mktemp("mimic") / "raw", clock=CLOCK)


# -- helpers for the bad-input copies ------------------------------------------------------


def copy_fixture(tmp_path: Path) -> Path:
    dest = tmp_path / "mimic"
    shutil.copytree(FIXTURE, dest)
    return dest


def _file(root: Path, rel: str) -> Path:
    plain = root / f"{rel}.csv"
    return plain if plain.exists() else root / f"{rel}.csv.gz"


def read_rows(root: Path, rel: str) -> list[list[str]]:
    path = _file(root, rel)
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return list(csv.reader(io.StringIO(raw.decode("utf-8"))))


def write_rows(root: Path, rel: str, rows: list[list[str]]) -> None:
    path = _file(root, rel)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    data = buf.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def edited(tmp_path: Path, rel: str, change: Callable[[list[list[str]]], None]) -> Path:
    """Return a copy of the fixture whose table ``rel`` went through ``change(rows)``."""
    root = copy_fixture(tmp_path)
    rows = read_rows(root, rel)
    change(rows)
    write_rows(root, rel, rows)
    return root


def refused(root: Path, tmp_path: Path, match: str) -> None:
    """Extraction into a workspace is refused with ``match`` and leaves nothing behind."""
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(SourceInvalid, match=match):
        mimic_iv_source(ws, root, clock=CLOCK)
    assert list(ws.sources_dir.iterdir()) == []
    assert list(ws.snapshots_dir.iterdir()) == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clinical_mlops", *args], capture_output=True, text=True, check=False
    )


# -- the mapping -----------------------------------------------------------------------------


def test_the_mapping_covers_every_event_variable_of_the_task_in_the_spec_unit():
    mapped = {i.variable: i.unit for i in ITEMS}
    declared = {f.variable: f.unit for f in SPEC.event_features}
    assert mapped == declared
    assert len({i.itemid for i in ITEMS}) == len(ITEMS) == 24


def test_the_fixture_holds_every_mapped_itemid_and_one_unmapped_row_per_event_table():
    for table in ("icu/chartevents", "hosp/labevents", "icu/inputevents", "icu/procedureevents"):
        rows = read_rows(FIXTURE, table)
        col = rows[0].index("itemid")
        present = {int(r[col]) for r in rows[1:]}
        mapped = {i.itemid for i in ITEMS if i.table == table}
        assert mapped <= present, (table, mapped - present)
        assert len(present - mapped) == 1, table
    # gzip and plain CSV, as users may hold either
    assert (FIXTURE / "icu/chartevents.csv.gz").exists()
    assert (FIXTURE / "icu/icustays.csv").exists()


# -- the extracted source ------------------------------------------------------------------


def test_real_years_ages_ethnicity_and_diagnoses(extracted):
    source = read_source(extracted)
    adm = source.read("admissions").to_pandas().set_index("hadm_id")
    # year(admittime) - anchor_year + middle of anchor_year_group
    assert adm["real_year"].to_dict() == {
        20000001: 2009,
        20000002: 2016,
        20000003: 2018,
        20000004: 2018,
        20000005: 2015,
        20000006: 2007,
        20000007: 2012,
        20000008: 2018,
        20000009: 2015,
        20000010: 2012,
        20000011: 2015,
        20000012: 2012,
        20000018: 2018,
    }
    assert adm.loc[20000006, "age"] == 43.0  # anchor_age 45, admitted two years before anchor
    # ICD-9 primary codes become the ICD-10 chapter range holding them
    assert adm.loc[20000001, "diagnosis_icd10"] == "A00-B99"  # 038.9 septicemia
    assert adm.loc[20000004, "diagnosis_icd10"] == "S00-T88"  # 852.00 head injury
    assert adm.loc[20000007, "diagnosis_icd10"] == "I00-I99"  # 428.0 heart failure
    assert adm.loc[20000002, "diagnosis_icd10"] == "I214"
    # a death recorded only by hospital_expire_flag takes the discharge time
    assert adm.loc[20000004, "deathtime"] == adm.loc[20000004, "dischtime"]
    assert pd.isna(adm.loc[20000011, "dischtime"])
    pat = source.read("patients").to_pandas().set_index("subject_id")["ethnicity"].to_dict()
    assert pat == {
        10000001: "WHITE",
        10000002: "BLACK",
        10000003: "HISPANIC",
        10000004: "ASIAN",
        10000005: "UNKNOWN",
        10000006: "OTHER",
        10000007: "WHITE",
        10000008: "ASIAN",  # first admission UNABLE TO OBTAIN, second ASIAN
        10000009: "WHITE",
        10000010: "BLACK",
        10000011: "OTHER",
        10000012: "UNKNOWN",
    }
    stays = source.read("icustays").to_pandas().set_index("stay_id")
    # the ICU stay of a patient who died at hour 36 ends at death, not at the recorded outtime
    assert stays.loc[30000002, "outtime"] == pd.Timestamp("2161-05-03 00:00:00")
    assert source.info["source"] == "mimic-iv"
    assert source.info["extracted_at"] == "2024-01-01T00:00:00.000000Z"


def test_what_the_rules_dropped_is_counted(extracted):
    counts = read_source(extracted).info["extraction"]
    assert counts["ignored_items"] == {
        "hosp/labevents": {"50931": 1},
        "icu/chartevents": {"220179": 1},
        "icu/inputevents": {"225158": 1},
        "icu/procedureevents": {"225794": 1},
    }
    assert counts["rows_read"]["icu/chartevents"] == 55
    assert counts["rows_kept"]["icu/chartevents"] == 54
    assert counts["lab_rows_outside_icu_stays"] == 1
    assert counts["support_rows_rewritten_or_zero"] == 1
    assert counts["gcs_intubated_scored_15"] == 1
    assert counts["icustays_outtime_clipped_to_death"] == 2
    assert counts["deathtime_from_expire_flag"] == 1
    assert counts["primary_diagnoses_icd9"] == 3
    assert counts["events_by_variable"]["gcs"] == 4  # 13, 15 (ETT), 9 in stay 1; 15 in stay 3
    # flags: a 0 at ICU admission for each of the 14 stays, plus 1s
    assert counts["events_by_variable"]["vasopressor"] == 14 + 4
    assert counts["events_by_variable"]["ventilation"] == 14 + 2


def test_cohort_flow_labels_split_and_features_match_the_hand_computation(extracted):
    source = read_source(extracted)
    cohort = build_cohort(source, SPEC)
    features = extract_features(
        SPEC, cohort=cohort.stays, events=[source.table_path("events")], tables=source.relations()
    )
    got = features.set_index("stay_id")
    assert sorted(got.index) == sorted(FEATURES)
    for stay_id, row in FEATURES.items():
        for name, want in zip(FEATURE_ORDER, row, strict=True):
            value = got.loc[stay_id, name]
            if isinstance(want, float) and math.isnan(want):
                assert pd.isna(value), (stay_id, name, value)
            else:
                assert value == pytest.approx(want, abs=1e-9), (stay_id, name)
    kept = apply_missingness_criterion(cohort, features, SPEC)
    assert [(s.step, s.remaining, s.excluded) for s in cohort.flow] == FLOW
    assert sorted(kept["stay_id"]) == sorted(COHORT)
    stays = cohort.stays.set_index("stay_id")
    for stay_id, (year, age, split, label) in COHORT.items():
        assert stays.loc[stay_id, "real_year"] == year
        assert stays.loc[stay_id, "age"] == age
        assert stays.loc[stay_id, "split"] == split
        assert stays.loc[stay_id, "death_48h"] == label, stay_id


def test_data_build_on_the_fixture_end_to_end(tmp_path):
    ws = str(tmp_path / "ws")
    args = ("data", "build", "--task", "icu_mortality_48h", "--source", "mimic-iv", "--path", str(FIXTURE), "--json", "-w", ws)  # fmt: skip
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["source"] == "mimic-iv"
    assert [(s["step"], s["remaining"], s["excluded"]) for s in out["cohort_flow"]] == FLOW
    assert (out["n_stays"], out["n_train"], out["n_test"], out["n_positive"]) == (6, 3, 3, 2)
    assert out["contracts"]["hard_failed"] == 0
    assert out["missingness"]["gcs"] == pytest.approx(2 / 3, abs=1e-6)
    # The extraction is cached in the workspace: asking again reads it back, unchanged.
    sources = list((Path(ws) / "sources").glob("mimic-iv-*"))
    assert len(sources) == 1
    stamp = (sources[0] / "source.json").stat().st_mtime_ns
    again = mimic_iv_source(Workspace.open(ws), FIXTURE)
    assert again.path == sources[0]
    assert (again.path / "source.json").stat().st_mtime_ns == stamp


# -- bad input ---------------------------------------------------------------------------------


def test_a_missing_table_is_named_and_nothing_is_written(tmp_path):
    root = copy_fixture(tmp_path)
    (root / "icu" / "procedureevents.csv").unlink()
    refused(root, tmp_path, r"table\(s\) missing: icu/procedureevents\.csv\.gz")


def test_a_renamed_column_is_named(tmp_path):
    def rename(rows: list[list[str]]) -> None:
        rows[0][rows[0].index("deathtime")] = "death_time"

    root = edited(tmp_path, "hosp/admissions", rename)
    refused(
        root, tmp_path, r"hosp/admissions \(admissions\.csv\.gz\): column\(s\) deathtime missing"
    )


def test_an_unmapped_itemid_is_ignored_and_counted(tmp_path, extracted):
    def add_row(rows: list[list[str]]) -> None:
        extra = list(rows[1])
        extra[rows[0].index("itemid")] = "999999"  # not in the mapping, not even in d_items
        rows.append(extra)

    root = edited(tmp_path, "icu/chartevents", add_row)
    out = extract_mimic_iv(root, tmp_path / "raw", clock=CLOCK)
    counts = json.loads((out / "source.json").read_text())["extraction"]
    assert counts["ignored_items"]["icu/chartevents"] == {"220179": 1, "999999": 1}
    base = pd.read_parquet(extracted / "events.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "events.parquet"), base)


def test_a_mapped_itemid_missing_from_the_dictionary_is_refused(tmp_path):
    def drop_item(rows: list[list[str]]) -> None:
        rows[:] = [r for r in rows if r[0] != "223761"]

    root = edited(tmp_path, "icu/d_items", drop_item)
    refused(root, tmp_path, r"icu/d_items \(d_items\.csv\): mapped itemid\(s\) 223761 ")


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_gzip_corruption_names_the_file(tmp_path, damage):
    root = copy_fixture(tmp_path)
    path = root / "icu" / "chartevents.csv.gz"
    data = path.read_bytes()
    if damage == "truncated":
        # Header intact, stream cut short: found while scanning the table.
        body = gzip.decompress(data)
        path.write_bytes(gzip.compress(body * 40, mtime=0)[:-200])
    else:
        path.write_bytes(b"this is not a gzip stream\n" + data[10:])
    refused(root, tmp_path, r"icu/chartevents \(.*chartevents\.csv\.gz\): cannot be read")


def test_a_malformed_anchor_year_group_is_named(tmp_path):
    def malform(rows: list[list[str]]) -> None:
        rows[3][rows[0].index("anchor_year_group")] = "2014-16"

    root = edited(tmp_path, "hosp/patients", malform)
    refused(
        root,
        tmp_path,
        r"anchor_year_group: expected 'YYYY - YYYY', found '2014-16' \(subject_id 10000003\)",
    )


def test_spark_asked_but_unavailable_says_how_to_install_and_writes_nothing(tmp_path, monkeypatch):
    # No Java runtime on this machine, as far as the engine can tell.
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(spark_module.shutil, "which", lambda _name: None)
    ws = tmp_path / "ws"
    with pytest.raises(EngineUnavailable, match=r"pip install 'clinical-mlops\[spark\]'"):
        build_task_snapshot(
            Workspace.open(ws), task="icu_mortality_48h", seed=7, scale=1.0, source="mimic-iv",
            path=FIXTURE, engine="spark",
        )  # fmt: skip
    workspace = Workspace.open(ws)
    assert list(workspace.sources_dir.iterdir()) == []  # not even the extraction ran
    assert list(workspace.snapshots_dir.iterdir()) == []


def test_every_table_the_reader_needs_is_in_the_fixture():
    for rel in TABLES:
        assert _file(FIXTURE, rel).exists(), rel


# -- the site ----------------------------------------------------------------------------------


def test_every_mimic_stay_is_at_the_one_declared_hospital(extracted, tmp_path):
    """MIMIC-IV is one hospital: source.json names it, and every cohort stay carries it."""
    from clinical_mlops.features.snapshot import build_snapshot
    from clinical_mlops.tasks import load_task

    source = read_source(extracted)
    assert source.info["site"] == "mimic-iv" == source.default_site
    snap = build_snapshot(Workspace.open(tmp_path / "ws"), load_task("icu_mortality_48h"), source)
    assert set(snap.cohort()["site"]) == {"mimic-iv"}
    ws = Workspace.open(tmp_path / "named")
    named = mimic_iv_source(ws, FIXTURE, clock=CLOCK, site="bidmc")
    assert named.info["site"] == "bidmc"
    assert mimic_iv_source(ws, FIXTURE, clock=CLOCK).info["site"] == "mimic-iv"
    assert len(list(ws.sources_dir.glob("mimic-iv-*"))) == 2  # cached per site
