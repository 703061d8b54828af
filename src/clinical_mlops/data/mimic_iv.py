"""MIMIC-IV v2.2 reader: the official CSV layout (``hosp/``, ``icu/``) into the raw-event contract.

MIMIC-IV is credentialed data (PhysioNet); nothing of it ships with this package. Point
the reader at the folder that holds ``hosp/`` and ``icu/`` as PhysioNet distributes them
(``.csv.gz``; an uncompressed ``.csv`` beside it is read instead) and it writes the four
raw tables of :mod:`clinical_mlops.data.raw`, so the cohort, the contracts and the feature
SQL run on it unchanged.

Tables read: ``hosp/patients``, ``hosp/admissions``, ``hosp/diagnoses_icd``,
``hosp/labevents`` + ``hosp/d_labitems``, ``icu/icustays``, ``icu/chartevents`` +
``icu/d_items``, ``icu/inputevents`` (vasopressors) and ``icu/procedureevents`` (invasive
ventilation). Each is read by DuckDB with explicit column types; the large event tables
are streamed and only the rows of mapped items are kept (chartevents has over 300 million
rows; no table is ever held whole in memory). What the reader does, in order:

* **Items.** :data:`ITEMS` maps 24 MIMIC-IV itemids to the 14 event variables of the ICU
  task, with the unit MIMIC records and the UCUM unit written (°F → °C is the one
  conversion; K/µL and 10⁹/L are the same number). Rows of any other itemid are
  **ignored and counted** per table and itemid in ``source.json`` (``extraction.
  ignored_items``). A mapped itemid that the data's dictionary (``d_items`` /
  ``d_labitems``) does not define is **refused**: the files are another release.
* **GCS** is the sum of eye, verbal and motor charted at the same time; a verbal
  response of ``No Response-ETT`` (intubated) gives 15, the convention of the SAPS II
  definition that MIMIC's public concept code follows. Components are not carried
  forward, so a time with one or two components charted gives no total.
* **Vasopressor and ventilation flags.** MetaVision records every infusion and
  procedure, so absence means none: each ICU stay gets a 0 at ICU admission, and a 1
  at the start of each norepinephrine, epinephrine, dopamine, phenylephrine or
  vasopressin infusion with a positive rate or amount (at ICU admission if it was
  already running), and of each invasive-ventilation episode. Rows whose status is
  ``Rewritten`` (orders re-entered) are not used.
* **Labs** carry no ``stay_id``: a lab result joins the patient's ICU stay whose
  ``[intime, outtime]`` contains its time; results outside every ICU stay are dropped
  and counted.
* **Dates.** MIMIC-IV shifts each patient's dates by a constant; ``anchor_year`` is a
  shifted year that corresponds to a real year inside ``anchor_year_group`` (e.g.
  ``2014 - 2016``). The real year of an admission is estimated as *year(admittime) −
  anchor_year + middle of the group* (2015 for ``2014 - 2016``). The estimate is within
  ±1 year of the truth; an admission in the patient's anchor year always lands in its
  group, and the groups' edges (2016/2017) are the temporal split's, so such an
  admission is always on the right side of the split. Timestamps stay shifted (only
  their differences are used). Age is ``anchor_age`` + (year(admittime) − anchor_year).
* **Deaths.** ``deathtime`` is the in-hospital death; where it is empty but
  ``hospital_expire_flag`` is 1, the discharge time is used. An ICU stay ends at death
  at the latest: ``outtime`` after ``deathtime`` is clipped to it (counted).
* **Primary diagnosis** is ``diagnoses_icd`` with ``seq_num = 1``. ICD-10 codes are kept
  as MIMIC stores them (no dot); an ICD-9 code is replaced by the ICD-10 chapter range
  that holds its ICD-9 chapter (e.g. ``I00-I99`` for 390–459), which is all the feature
  SQL reads of it.
* **Ethnicity** is the patient's first recorded ``race`` of a known value, grouped into
  ASIAN, BLACK, HISPANIC, WHITE and OTHER (UNKNOWN when never recorded).

The result is cached in the workspace by the input files' sizes and modification times,
the reader version and the mapping; building is all-or-nothing (a staging folder renamed
into place), so a failure leaves no half-written source.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.data.raw import (
    OPTIONAL_COLUMNS,
    RAW_SCHEMAS,
    RawSource,
    read_source,
    write_table,
)
from clinical_mlops.errors import SourceInvalid
from clinical_mlops.hashing import sha256_json
from clinical_mlops.workspace import Workspace

__all__ = [
    "ICD9_CHAPTERS",
    "ITEMS",
    "MIMIC_SITE",
    "MIMIC_VERSION",
    "READER_VERSION",
    "TABLES",
    "MappedItem",
    "extract_mimic_iv",
    "mimic_iv_source",
]

MIMIC_VERSION = "2.2"
READER_VERSION = "clinical-mlops-mimic-iv/1"

Progress = Callable[[str], None]

# The columns the reader uses, per table, with their DuckDB types. Other columns of the
# files are read as text and not used; a missing one is refused, naming file and column.
_TS = "TIMESTAMP"
TABLES: dict[str, dict[str, str]] = {
    "hosp/patients": {
        "subject_id": "BIGINT",
        "gender": "VARCHAR",
        "anchor_age": "INTEGER",
        "anchor_year": "INTEGER",
        "anchor_year_group": "VARCHAR",
    },
    "hosp/admissions": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "admittime": _TS,
        "dischtime": _TS,
        "deathtime": _TS,
        "admission_type": "VARCHAR",
        "discharge_location": "VARCHAR",
        "race": "VARCHAR",
        "hospital_expire_flag": "INTEGER",
    },
    "hosp/diagnoses_icd": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "seq_num": "INTEGER",
        "icd_code": "VARCHAR",
        "icd_version": "INTEGER",
    },
    "hosp/d_labitems": {"itemid": "INTEGER", "label": "VARCHAR"},
    "hosp/labevents": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "itemid": "INTEGER",
        "charttime": _TS,
        "valuenum": "DOUBLE",
        "valueuom": "VARCHAR",
    },
    "icu/icustays": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "stay_id": "BIGINT",
        "first_careunit": "VARCHAR",
        "intime": _TS,
        "outtime": _TS,
    },
    "icu/d_items": {"itemid": "INTEGER", "label": "VARCHAR"},
    "icu/chartevents": {
        "subject_id": "BIGINT",
        "hadm_id": "BIGINT",
        "stay_id": "BIGINT",
        "charttime": _TS,
        "itemid": "INTEGER",
        "value": "VARCHAR",
        "valuenum": "DOUBLE",
    },
    "icu/inputevents": {
        "subject_id": "BIGINT",
        "stay_id": "BIGINT",
        "starttime": _TS,
        "endtime": _TS,
        "itemid": "INTEGER",
        "amount": "DOUBLE",
        "rate": "DOUBLE",
        "statusdescription": "VARCHAR",
    },
    "icu/procedureevents": {
        "subject_id": "BIGINT",
        "stay_id": "BIGINT",
        "starttime": _TS,
        "endtime": _TS,
        "itemid": "INTEGER",
        "statusdescription": "VARCHAR",
    },
}
_EVENT_TABLES = ("icu/chartevents", "hosp/labevents", "icu/inputevents", "icu/procedureevents")
_DICTIONARY = {
    "icu/chartevents": "icu/d_items",
    "icu/inputevents": "icu/d_items",
    "icu/procedureevents": "icu/d_items",
    "hosp/labevents": "hosp/d_labitems",
}

Conversion = Literal["none", "fahrenheit_to_celsius", "gcs_eye", "gcs_verbal", "gcs_motor", "flag"]


@dataclass(frozen=True)
class MappedItem:
    """One MIMIC-IV itemid and the raw-event variable it becomes."""

    itemid: int
    table: str
    label: str
    variable: str
    mimic_unit: str
    unit: str
    conversion: Conversion = "none"


def _chart(
    itemid: int, label: str, variable: str, mimic_unit: str, unit: str, conv: Conversion = "none"
) -> MappedItem:
    return MappedItem(itemid, "icu/chartevents", label, variable, mimic_unit, unit, conv)


def _lab(itemid: int, label: str, variable: str, mimic_unit: str, unit: str) -> MappedItem:
    return MappedItem(itemid, "hosp/labevents", label, variable, mimic_unit, unit)


def _vaso(itemid: int, label: str) -> MappedItem:
    return MappedItem(itemid, "icu/inputevents", label, "vasopressor", "", "1", "flag")


# Itemids as defined by MIMIC-IV v2.2's d_items / d_labitems (the ones MIT-LCP's public
# concept code uses for the same measurements).
ITEMS: tuple[MappedItem, ...] = (
    _chart(220045, "Heart Rate", "heart_rate", "bpm", "/min"),
    _chart(220210, "Respiratory Rate", "resp_rate", "insp/min", "/min"),
    _chart(224690, "Respiratory Rate (Total)", "resp_rate", "insp/min", "/min"),
    _chart(220277, "O2 saturation pulseoxymetry", "spo2", "%", "%"),
    _chart(220052, "Arterial Blood Pressure mean", "map", "mmHg", "mm[Hg]"),
    _chart(220181, "Non Invasive Blood Pressure mean", "map", "mmHg", "mm[Hg]"),
    _chart(225312, "ART BP Mean", "map", "mmHg", "mm[Hg]"),
    _chart(223762, "Temperature Celsius", "temperature", "°C", "Cel"),
    _chart(223761, "Temperature Fahrenheit", "temperature", "°F", "Cel", "fahrenheit_to_celsius"),
    _chart(220739, "GCS - Eye Opening", "gcs", "", "{score}", "gcs_eye"),
    _chart(223900, "GCS - Verbal Response", "gcs", "", "{score}", "gcs_verbal"),
    _chart(223901, "GCS - Motor Response", "gcs", "", "{score}", "gcs_motor"),
    _lab(50912, "Creatinine", "creatinine", "mg/dL", "mg/dL"),
    _lab(50813, "Lactate", "lactate", "mmol/L", "mmol/L"),
    _lab(50862, "Albumin", "albumin", "g/dL", "g/dL"),
    _lab(50885, "Bilirubin, Total", "bilirubin", "mg/dL", "mg/dL"),
    _lab(51265, "Platelet Count", "platelets", "K/uL", "10*9/L"),
    _lab(51237, "INR(PT)", "inr", "", "{INR}"),
    _vaso(221906, "Norepinephrine"),
    _vaso(221289, "Epinephrine"),
    _vaso(221662, "Dopamine"),
    _vaso(221749, "Phenylephrine"),
    _vaso(222315, "Vasopressin"),
    MappedItem(
        225792, "icu/procedureevents", "Invasive Ventilation", "ventilation", "", "1", "flag"
    ),
)

# ICD-9 chapter (first three digits, inclusive) -> the ICD-10 chapter range that holds it.
ICD9_CHAPTERS: tuple[tuple[int, int, str], ...] = (
    (1, 139, "A00-B99"),
    (140, 239, "C00-D49"),
    (240, 279, "E00-E89"),
    (280, 289, "D50-D89"),
    (290, 319, "F01-F99"),
    (320, 359, "G00-G99"),
    (360, 379, "H00-H59"),
    (380, 389, "H60-H95"),
    (390, 459, "I00-I99"),
    (460, 519, "J00-J99"),
    (520, 579, "K00-K95"),
    (580, 629, "N00-N99"),
    (630, 679, "O00-O9A"),
    (680, 709, "L00-L99"),
    (710, 739, "M00-M99"),
    (740, 759, "Q00-Q99"),
    (760, 779, "P00-P96"),
    (780, 799, "R00-R99"),
    (800, 999, "S00-T88"),
)
# Supplementary ICD-9 classifications: V codes (health status) and E codes (external causes).
_ICD9_V = "Z00-Z99"
_ICD9_E = "V00-Y99"

_BATCH_ROWS = 1_000_000


def mapping_sha256() -> str:
    """Return the SHA-256 of the item mapping and chapter table (recorded with the source)."""
    return sha256_json(
        {"items": [asdict(i) for i in ITEMS], "icd9": [list(c) for c in ICD9_CHAPTERS]}
    )


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def _locate(root: Path) -> dict[str, Path]:
    """Return the file of every table the reader needs, preferring ``.csv`` over ``.csv.gz``."""
    if not root.is_dir():
        raise SourceInvalid(f"MIMIC-IV folder {root}: no such folder")
    found, missing = {}, []
    for name in TABLES:
        for suffix in (".csv", ".csv.gz"):
            candidate = root / f"{name}{suffix}"
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(name)
    if missing:
        listed = ", ".join(f"{n}.csv.gz" for n in missing)
        raise SourceInvalid(
            f"MIMIC-IV folder {root}: table(s) missing: {listed} (MIMIC-IV v{MIMIC_VERSION} "
            "layout expected: hosp/ and icu/ folders with the official .csv.gz files)"
        )
    return found


def _header(path: Path, rel: str) -> list[str]:
    """Return the column names in the first line of a CSV (gzip or plain)."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
                line = fh.readline()
        else:
            with path.open(encoding="utf-8", newline="") as fh:
                line = fh.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceInvalid(f"{rel} ({path}): cannot be read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceInvalid(f"{rel} ({path}): not UTF-8 text: {exc}") from None
    if not line.strip():
        raise SourceInvalid(f"{rel} ({path}): the file is empty (expected a header row)")
    return [c.strip().lstrip("\ufeff") for c in next(csv.reader([line]))]


def _check_columns(rel: str, path: Path, header: list[str]) -> None:
    needed = TABLES[rel]
    missing = [c for c in needed if c not in header]
    if missing:
        raise SourceInvalid(
            f"{rel} ({path.name}): column(s) {', '.join(missing)} missing; the reader needs "
            f"{', '.join(needed)}; the file has {', '.join(header)}"
        )


def _csv(path: Path, header: list[str], types: dict[str, str]) -> str:
    """Return a DuckDB ``read_csv`` call over ``path`` with every column's type fixed."""
    columns = ", ".join(f"'{_q(c)}': '{types.get(c, 'VARCHAR')}'" for c in header)
    return (
        f"read_csv('{_q(str(path))}', header = true, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', columns = {{{columns}}}, "
        "timestampformat = '%Y-%m-%d %H:%M:%S', dateformat = '%Y-%m-%d')"
    )


def _q(text: str) -> str:
    return text.replace("'", "''")


class _Reader:
    """One extraction: a DuckDB connection, the located files and the counts it reports."""

    def __init__(self, root: Path, scratch: Path, progress: Progress | None):
        self.root = root
        self.files = _locate(root)
        self.headers = {rel: _header(p, rel) for rel, p in self.files.items()}
        for rel, path in self.files.items():
            _check_columns(rel, path, self.headers[rel])
        self.scratch = scratch
        self.say = progress or (lambda _text: None)
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET temp_directory = '{_q(str(scratch / 'duckdb-tmp'))}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.counts: dict[str, Any] = {"rows_read": {}, "rows_kept": {}, "ignored_items": {}}

    def relation(self, rel: str) -> str:
        return _csv(self.files[rel], self.headers[rel], TABLES[rel])

    def run(self, rel: str, sql: str) -> None:
        """Execute ``sql`` (which reads ``rel``); a DuckDB error names the file."""
        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            raise SourceInvalid(
                f"{rel} ({self.files[rel]}): cannot be read: {_first_line(exc)}"
            ) from None

    def load(self, rel: str, table: str, *, where: str = "") -> None:
        """Load the used columns of a small table into a DuckDB temp table."""
        self.say(f"reading {rel}")
        cols = ", ".join(TABLES[rel])
        self.run(
            rel, f"CREATE TEMP TABLE {table} AS SELECT {cols} FROM {self.relation(rel)} {where}"
        )
        n = self.con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        self.counts["rows_read"][rel] = int(n[0]) if n else 0

    def scan(self, rel: str, table: str) -> None:
        """Stream an event table, keeping the rows of mapped items and counting the rest."""
        ids = sorted(i.itemid for i in ITEMS if i.table == rel)
        cols = [c for c in TABLES[rel] if c != "itemid"]
        kept = ", ".join(f"CASE WHEN _m THEN {c} END AS {c}" for c in cols)
        sql = (
            f"SELECT itemid, _m, {kept} FROM (SELECT *, itemid IN ({', '.join(map(str, ids))}) "
            f"AS _m FROM {self.relation(rel)})"
        )
        out = self.scratch / f"{table}.parquet"
        ignored: dict[int, int] = {}
        read = kept_rows = 0
        self.say(f"scanning {rel}")
        try:
            reader = _batches(self.con, sql)
            with pq.ParquetWriter(out, _stage_schema(rel)) as writer:
                for batch in reader:
                    mask = batch.column("_m")
                    read += batch.num_rows
                    other = pc.filter(batch.column("itemid"), pc.invert(mask))
                    for entry in pc.value_counts(other).to_pylist():
                        ignored[entry["values"]] = ignored.get(entry["values"], 0) + entry["counts"]
                    mine = pa.Table.from_batches([batch]).filter(mask).drop_columns(["_m"])
                    kept_rows += mine.num_rows
                    writer.write_table(mine.cast(_stage_schema(rel)))
                    self.say(f"scanning {rel}: {read:,} rows read, {kept_rows:,} kept")
        except duckdb.Error as exc:
            raise SourceInvalid(
                f"{rel} ({self.files[rel]}): cannot be read: {_first_line(exc)}"
            ) from None
        self.con.execute(
            f"CREATE TEMP VIEW {table} AS SELECT * FROM read_parquet('{_q(str(out))}')"
        )
        self.counts["rows_read"][rel] = read
        self.counts["rows_kept"][rel] = kept_rows
        self.counts["ignored_items"][rel] = {str(k): v for k, v in sorted(ignored.items())}

    def scalar(self, sql: str) -> int:
        row = self.con.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def _batches(con: duckdb.DuckDBPyConnection, sql: str) -> pa.RecordBatchReader:
    """Return the result of ``sql`` as a stream of Arrow record batches."""
    reader: pa.RecordBatchReader = con.sql(sql).to_arrow_reader(_BATCH_ROWS)
    return reader


def _stage_schema(rel: str) -> pa.Schema:
    arrow = {
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "DOUBLE": pa.float64(),
        "VARCHAR": pa.string(),
        _TS: pa.timestamp("us"),
    }
    return pa.schema([(c, arrow[t]) for c, t in TABLES[rel].items() if c != "itemid"]).insert(
        0, pa.field("itemid", pa.int32())
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------
# Transformation (DuckDB SQL over the loaded tables and the staged event rows)
# ---------------------------------------------------------------------------------------

_UNKNOWN_RACE = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")


def _register_mapping(con: duckdb.DuckDBPyConnection) -> None:
    rows = [(i.itemid, i.table, i.variable, i.unit, i.conversion) for i in ITEMS]
    con.execute(
        "CREATE TEMP TABLE item_map (itemid INTEGER, tbl VARCHAR, variable VARCHAR, "
        "unit VARCHAR, conversion VARCHAR)"
    )
    con.executemany("INSERT INTO item_map VALUES (?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TEMP TABLE icd9_chapters (lo INTEGER, hi INTEGER, chapter VARCHAR)")
    con.executemany("INSERT INTO icd9_chapters VALUES (?, ?, ?)", list(ICD9_CHAPTERS))


def _check_dictionaries(r: _Reader) -> dict[str, str]:
    """Refuse mapped itemids that the data's dictionaries do not define; return their labels."""
    labels: dict[str, str] = {}
    for dict_rel, table in (("icu/d_items", "d_items"), ("hosp/d_labitems", "d_labitems")):
        mapped = [i for i in ITEMS if _DICTIONARY[i.table] == dict_rel]
        have = dict(
            r.con.execute(
                f"SELECT itemid, label FROM {table} WHERE itemid IN "
                f"({', '.join(str(i.itemid) for i in mapped)})"
            ).fetchall()
        )
        absent = [i for i in mapped if i.itemid not in have]
        if absent:
            listed = ", ".join(f"{i.itemid} ({i.label}, {i.variable})" for i in absent)
            raise SourceInvalid(
                f"{dict_rel} ({r.files[dict_rel].name}): mapped itemid(s) {listed} not defined; "
                f"these files are not MIMIC-IV v{MIMIC_VERSION} (or the dictionary is truncated)"
            )
        labels |= {str(k): str(v) for k, v in sorted(have.items())}
    return labels


def _check_anchor_groups(r: _Reader) -> None:
    bad = r.con.execute(
        "SELECT subject_id, anchor_year_group FROM patients WHERE anchor_year_group IS NULL "
        "OR NOT regexp_full_match(trim(anchor_year_group), '\\d{4} *- *\\d{4}') ORDER BY 1 LIMIT 5"
    ).fetchall()
    if bad:
        raise SourceInvalid(
            f"hosp/patients ({r.files['hosp/patients'].name}), column anchor_year_group: expected "
            f"'YYYY - YYYY', found {', '.join(f'{v!r} (subject_id {s})' for s, v in bad)}"
        )


_PATIENTS_SQL = f"""
CREATE TEMP TABLE out_patients AS
WITH race AS (
    SELECT subject_id, admittime, hadm_id,
        CASE
            WHEN race IS NULL OR upper(race) IN ({", ".join(f"'{v}'" for v in _UNKNOWN_RACE)}) THEN NULL
            WHEN upper(race) LIKE 'WHITE%' OR upper(race) = 'PORTUGUESE' THEN 'WHITE'
            WHEN upper(race) LIKE 'BLACK%' THEN 'BLACK'
            WHEN upper(race) LIKE 'HISPANIC%' OR upper(race) = 'SOUTH AMERICAN' THEN 'HISPANIC'
            WHEN upper(race) LIKE 'ASIAN%' THEN 'ASIAN'
            ELSE 'OTHER'
        END AS grp
    FROM admissions
),
first_known AS (
    SELECT subject_id, grp FROM (
        SELECT subject_id, grp,
            row_number() OVER (PARTITION BY subject_id ORDER BY admittime, hadm_id) AS rn
        FROM race WHERE grp IS NOT NULL
    ) WHERE rn = 1
)
SELECT p.subject_id, p.gender AS sex, coalesce(f.grp, 'UNKNOWN') AS ethnicity
FROM patients p LEFT JOIN first_known f USING (subject_id)
ORDER BY p.subject_id
"""

_ADMISSIONS_SQL = f"""
CREATE TEMP TABLE out_admissions AS
WITH primary_dx AS (
    SELECT hadm_id,
        CASE
            WHEN icd_version = 10 THEN upper(trim(icd_code))
            WHEN upper(trim(icd_code)) LIKE 'V%' THEN '{_ICD9_V}'
            WHEN upper(trim(icd_code)) LIKE 'E%' THEN '{_ICD9_E}'
            ELSE (SELECT c.chapter FROM icd9_chapters c
                  WHERE TRY_CAST(substr(trim(icd_code), 1, 3) AS INTEGER) BETWEEN c.lo AND c.hi)
        END AS code
    FROM diagnoses
),
groups AS (
    SELECT subject_id, anchor_age, anchor_year,
        (CAST(regexp_extract(anchor_year_group, '(\\d{{4}}) *- *(\\d{{4}})', 1) AS INTEGER)
         + CAST(regexp_extract(anchor_year_group, '(\\d{{4}}) *- *(\\d{{4}})', 2) AS INTEGER)) // 2
            AS group_middle
    FROM patients
)
SELECT a.hadm_id, a.subject_id, a.admittime, a.dischtime,
    coalesce(a.deathtime, CASE WHEN a.hospital_expire_flag = 1 THEN a.dischtime END) AS deathtime,
    CAST(year(a.admittime) - g.anchor_year + g.group_middle AS INTEGER) AS real_year,
    CAST(g.anchor_age + year(a.admittime) - g.anchor_year AS DOUBLE) AS age,
    d.code AS diagnosis_icd10,
    a.admission_type, a.discharge_location,
    (a.deathtime IS NULL AND a.hospital_expire_flag = 1) AS _death_from_flag
FROM admissions a
JOIN groups g USING (subject_id)
LEFT JOIN primary_dx d USING (hadm_id)
ORDER BY a.hadm_id
"""

_STAYS_SQL = """
CREATE TEMP TABLE out_icustays AS
SELECT i.stay_id, i.subject_id, i.hadm_id, i.intime,
    CASE WHEN a.deathtime >= i.intime AND a.deathtime < i.outtime THEN a.deathtime
         ELSE i.outtime END AS outtime,
    i.first_careunit AS careunit,
    coalesce(a.deathtime >= i.intime AND a.deathtime < i.outtime, false) AS _clipped
FROM icustays i LEFT JOIN out_admissions a USING (hadm_id)
ORDER BY i.stay_id
"""

_EVENTS_SQL = """
WITH stays AS (SELECT stay_id, subject_id, hadm_id, intime, outtime FROM out_icustays),
chart AS (
    SELECT c.stay_id, c.charttime, m.variable, m.unit,
        CASE WHEN m.conversion = 'fahrenheit_to_celsius' THEN round((c.valuenum - 32) * 5 / 9, 2)
             ELSE c.valuenum END AS value
    FROM stage_chart c JOIN item_map m USING (itemid)
    WHERE m.conversion IN ('none', 'fahrenheit_to_celsius') AND c.valuenum IS NOT NULL
),
gcs_parts AS (
    SELECT c.stay_id, c.charttime,
        max(CASE WHEN m.conversion = 'gcs_eye' THEN c.valuenum END) AS eye,
        max(CASE WHEN m.conversion = 'gcs_verbal' THEN c.valuenum END) AS verbal,
        max(CASE WHEN m.conversion = 'gcs_motor' THEN c.valuenum END) AS motor,
        bool_or(m.conversion = 'gcs_verbal' AND c.value = 'No Response-ETT') AS intubated
    FROM stage_chart c JOIN item_map m USING (itemid)
    WHERE m.conversion LIKE 'gcs_%'
    GROUP BY c.stay_id, c.charttime
),
gcs AS (
    SELECT stay_id, charttime, 'gcs' AS variable, '{score}' AS unit,
        CASE WHEN intubated THEN 15.0 ELSE eye + verbal + motor END AS value
    FROM gcs_parts
    WHERE intubated OR (eye IS NOT NULL AND verbal IS NOT NULL AND motor IS NOT NULL)
),
labs AS (
    SELECT s.stay_id, l.charttime, m.variable, m.unit, l.valuenum AS value
    FROM stage_lab l
    JOIN item_map m USING (itemid)
    JOIN stays s ON l.subject_id = s.subject_id AND l.charttime >= s.intime
        AND l.charttime <= s.outtime
    WHERE l.valuenum IS NOT NULL
),
support AS (
    SELECT stay_id, starttime, endtime, itemid FROM stage_input
    WHERE (rate > 0 OR amount > 0) AND coalesce(statusdescription, '') <> 'Rewritten'
    UNION ALL
    SELECT stay_id, starttime, endtime, itemid FROM stage_proc
    WHERE coalesce(statusdescription, '') <> 'Rewritten'
),
flags AS (
    SELECT s.stay_id, s.intime AS charttime, f.variable, '1' AS unit, 0.0 AS value
    FROM stays s CROSS JOIN (VALUES ('vasopressor'), ('ventilation')) f(variable)
    UNION ALL
    SELECT s.stay_id,
        CASE WHEN p.starttime < s.intime AND p.endtime > s.intime THEN s.intime
             ELSE p.starttime END AS charttime,
        m.variable, m.unit, 1.0 AS value
    FROM support p JOIN stays s USING (stay_id) JOIN item_map m USING (itemid)
),
all_events AS (
    SELECT * FROM chart UNION ALL SELECT * FROM gcs UNION ALL SELECT * FROM labs
    UNION ALL SELECT * FROM flags
)
SELECT e.stay_id, s.subject_id, s.hadm_id, e.charttime, e.variable, CAST(e.value AS DOUBLE) AS value,
    e.unit
FROM all_events e JOIN stays s USING (stay_id)
ORDER BY e.stay_id, e.charttime, e.variable, e.value
"""


def _write_small(con: duckdb.DuckDBPyConnection, table: str, name: str, out: Path) -> int:
    schema = RAW_SCHEMAS[name]
    extra = OPTIONAL_COLUMNS.get(name)
    names = list(schema.names)
    if name == "admissions" and extra is not None:
        names += ["admission_type", "discharge_location"]
        schema = pa.schema(
            [*schema, extra.field("admission_type"), extra.field("discharge_location")]
        )
    data = _batches(con, f"SELECT {', '.join(names)} FROM {table}").read_all()
    write_table(data.cast(schema), out / f"{name}.parquet")
    return data.num_rows


def _write_events(r: _Reader, out: Path) -> dict[str, int]:
    """Write events.parquet in (stay, time, variable) order; return the row count per variable."""
    schema = RAW_SCHEMAS["events"]
    per_variable: dict[str, int] = {}
    r.say("writing events")
    reader = _batches(r.con, _EVENTS_SQL)
    with pq.ParquetWriter(out / "events.parquet", schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).cast(schema))
            for entry in pc.value_counts(batch.column("variable")).to_pylist():
                key = entry["values"]
                per_variable[key] = per_variable.get(key, 0) + entry["counts"]
    return dict(sorted(per_variable.items()))


#: The site of a MIMIC-IV extract: one hospital (Beth Israel Deaconess Medical Center).
MIMIC_SITE = "mimic-iv"


def extract_mimic_iv(
    mimic_dir: str | Path,
    out_dir: str | Path,
    *,
    clock: Clock | None = None,
    progress: Progress | None = None,
    site: str = MIMIC_SITE,
) -> Path:
    """Write the raw-event contract tables and ``source.json`` for a MIMIC-IV v2.2 folder.

    MIMIC-IV is one hospital's data: every stay is at ``site`` (``source.json["site"]``),
    the evaluation stratum of the validation matrix and of external validation.

    ``progress(text)`` receives a line per step and per million rows scanned. Raises
    :class:`SourceInvalid` naming the file (and column or itemid) when a table is missing,
    a needed column is absent, a file is corrupt or not CSV, a mapped itemid is not in
    the dictionary, or ``anchor_year_group`` is malformed. ``out_dir`` may be partly
    written when it raises: write to a staging folder (as :func:`mimic_iv_source` does).
    """
    root, out = Path(mimic_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "_scan"
    scratch.mkdir(exist_ok=True)
    r = _Reader(root, scratch, progress)
    try:
        con = r.con
        _register_mapping(con)
        r.load("hosp/patients", "patients")
        _check_anchor_groups(r)
        r.load("hosp/admissions", "admissions")
        r.load("hosp/diagnoses_icd", "diagnoses", where="WHERE seq_num = 1")
        r.load("icu/icustays", "icustays")
        r.load("icu/d_items", "d_items")
        r.load("hosp/d_labitems", "d_labitems")
        labels = _check_dictionaries(r)
        for rel, stage in zip(
            _EVENT_TABLES, ("stage_chart", "stage_lab", "stage_input", "stage_proc"), strict=True
        ):
            r.scan(rel, stage)

        r.say("mapping patients, admissions and ICU stays")
        con.execute(_PATIENTS_SQL)
        con.execute(_ADMISSIONS_SQL)
        con.execute(_STAYS_SQL)
        counts = r.counts
        counts["patients"] = _write_small(con, "out_patients", "patients", out)
        counts["admissions"] = _write_small(con, "out_admissions", "admissions", out)
        counts["icustays"] = _write_small(con, "out_icustays", "icustays", out)
        counts["events_by_variable"] = _write_events(r, out)
        counts["events"] = sum(counts["events_by_variable"].values())
        counts |= _report(r)
        counts["dictionary_labels"] = labels
    finally:
        r.con.close()
    for leftover in sorted(scratch.rglob("*"), reverse=True):
        leftover.rmdir() if leftover.is_dir() else leftover.unlink()
    scratch.rmdir()

    info = {
        "source": "mimic-iv",
        "site": site,
        "source_version": MIMIC_VERSION,
        "extracted_at": utc_iso((clock or SystemClock()).now()),
        "deidentification": (
            "MIMIC-IV v2.2 (PhysioNet credentialed access): HIPAA Safe Harbor de-identification, "
            "dates shifted per patient; real years estimated from anchor_year_group (within 1 year)"
        ),
        "params": {
            "reader": READER_VERSION,
            "mapping_sha256": mapping_sha256(),
            "files": {rel: p.stat().st_size for rel, p in sorted(r.files.items())},
        },
        "extraction": counts,
    }
    (out / "source.json").write_text(
        json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out


def _report(r: _Reader) -> dict[str, Any]:
    """Counts of what the mapping rules dropped or changed (all recorded in source.json)."""
    s = r.scalar
    return {
        "chart_rows_of_unknown_stays": s(
            "SELECT COUNT(*) FROM stage_chart WHERE stay_id NOT IN (SELECT stay_id FROM icustays)"
        ),
        "lab_rows_outside_icu_stays": s(
            "SELECT COUNT(*) FROM stage_lab l WHERE NOT EXISTS (SELECT 1 FROM out_icustays s "
            "WHERE s.subject_id = l.subject_id AND l.charttime BETWEEN s.intime AND s.outtime)"
        ),
        "support_rows_rewritten_or_zero": s(
            "SELECT COUNT(*) FROM stage_input WHERE NOT (rate > 0 OR amount > 0) "
            "OR coalesce(statusdescription, '') = 'Rewritten'"
        )
        + s("SELECT COUNT(*) FROM stage_proc WHERE statusdescription = 'Rewritten'"),
        "gcs_intubated_scored_15": s(
            "SELECT COUNT(DISTINCT (stay_id, charttime)) FROM stage_chart "
            "WHERE itemid = 223900 AND value = 'No Response-ETT'"
        ),
        "icustays_outtime_clipped_to_death": s("SELECT COUNT(*) FROM out_icustays WHERE _clipped"),
        "deathtime_from_expire_flag": s(
            "SELECT COUNT(*) FROM out_admissions WHERE _death_from_flag"
        ),
        "primary_diagnoses_icd9": s("SELECT COUNT(*) FROM diagnoses WHERE icd_version = 9"),
    }


# ---------------------------------------------------------------------------------------
# Workspace cache
# ---------------------------------------------------------------------------------------


def _fingerprint(files: Iterable[tuple[str, Path]]) -> str:
    stats = {rel: [p.stat().st_size, p.stat().st_mtime_ns] for rel, p in files}
    return sha256_json({"reader": READER_VERSION, "mapping": mapping_sha256(), "files": stats})[:12]


def mimic_iv_source(
    workspace: Workspace,
    path: str | Path,
    *,
    clock: Clock | None = None,
    progress: Progress | None = None,
    site: str = MIMIC_SITE,
) -> RawSource:
    """Return the raw source extracted from the MIMIC-IV folder ``path``, extracting if needed.

    Extraction is cached under ``sources/`` in the workspace, keyed by the input files'
    sizes and modification times, the reader version, the mapping and ``site``; it is
    written to a staging folder and renamed into place only when complete.
    """
    if not site.strip():
        raise SourceInvalid("site: expected the name of the MIMIC-IV hospital, got ''")
    files = _locate(Path(path))
    key = _fingerprint(sorted(files.items()))
    if site != MIMIC_SITE:  # the default keeps the cache folders already extracted
        key += "-" + sha256_json({"site": site})[:8]
    final = workspace.sources_dir / f"mimic-iv-{key}"
    if not (final / "source.json").exists():
        with workspace.staging_dir(workspace.sources_dir) as stage:
            extract_mimic_iv(path, stage, clock=clock, progress=progress, site=site)
            workspace.publish(stage, final)
    return read_source(final)
