"""The raw-event contract: the one shape every source (synthetic, MIMIC-IV, FHIR) produces.

A raw source is a folder of four Parquet tables plus ``source.json``:

================  ==========================================================================
table             columns
================  ==========================================================================
``patients``      subject_id, sex (``F``/``M``), ethnicity (nullable)
``admissions``    hadm_id, subject_id, admittime, dischtime (null = outcome unknown),
                  deathtime (in-hospital death, nullable), real_year (de-shifted calendar
                  year of admission), age (whole years at admission), diagnosis_icd10
                  (primary ICD-10 code)
``icustays``      stay_id, subject_id, hadm_id, intime, outtime, careunit
``events``        stay_id (null for events outside an ICU stay), subject_id, hadm_id,
                  charttime, variable, value, unit (UCUM)
================  ==========================================================================

Optional, for admission-level tasks (e.g. readmission): the columns
``admission_type`` (``EMERGENCY``, ``URGENT``, ``ELECTIVE``...), ``discharge_location``
and ``service`` (``MED``, ``SURG``...) in ``admissions`` — read as null when a source
lacks them — and a fifth table ``diagnoses`` (subject_id, hadm_id, seq_num,
icd10: every coded diagnosis of an admission).

Every source says where its data come from: the optional ``site`` column of
``admissions`` names the hospital (or unit) of each admission; where it is absent or
null, ``source.json``'s ``site`` names the one site of the whole source, else the
site is :data:`UNSPECIFIED_SITE`. The site is an evaluation stratum (validation per
site, external validation, trials), never a model input unless a task declares it
as a feature.

Times are timezone-naive timestamps in the source's own (possibly shifted) time
line; only differences between them and ``real_year`` carry meaning.
``source.json`` records where the data came from: ``source``, ``source_version``,
``extracted_at``, ``deidentification`` and any generator parameters.
Features never see a source's quirks: everything downstream reads only this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clinical_mlops.errors import SourceInvalid
from clinical_mlops.hashing import sha256_file

__all__ = [
    "OPTIONAL_COLUMNS",
    "OPTIONAL_SCHEMAS",
    "RAW_SCHEMAS",
    "RAW_TABLES",
    "UNSPECIFIED_SITE",
    "RawSource",
    "read_source",
    "write_table",
]

_TS = pa.timestamp("us")
#: The site of data whose source names none (no ``site`` column, none in source.json).
UNSPECIFIED_SITE = "unspecified"

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "patients": pa.schema(
        [("subject_id", pa.int64()), ("sex", pa.string()), ("ethnicity", pa.string())]
    ),
    "admissions": pa.schema(
        [
            ("hadm_id", pa.int64()),
            ("subject_id", pa.int64()),
            ("admittime", _TS),
            ("dischtime", _TS),
            ("deathtime", _TS),
            ("real_year", pa.int32()),
            ("age", pa.float64()),
            ("diagnosis_icd10", pa.string()),
        ]
    ),
    "icustays": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("subject_id", pa.int64()),
            ("hadm_id", pa.int64()),
            ("intime", _TS),
            ("outtime", _TS),
            ("careunit", pa.string()),
        ]
    ),
    "events": pa.schema(
        [
            ("stay_id", pa.int64()),
            ("subject_id", pa.int64()),
            ("hadm_id", pa.int64()),
            ("charttime", _TS),
            ("variable", pa.string()),
            ("value", pa.float64()),
            ("unit", pa.string()),
        ]
    ),
}
RAW_TABLES = tuple(RAW_SCHEMAS)

# Optional tables: read when present, absent from the source otherwise.
OPTIONAL_SCHEMAS: dict[str, pa.Schema] = {
    "diagnoses": pa.schema(
        [
            ("subject_id", pa.int64()),
            ("hadm_id", pa.int64()),
            ("seq_num", pa.int32()),
            ("icd10", pa.string()),
        ]
    ),
}
# Optional columns of required tables: null when the source does not write them.
OPTIONAL_COLUMNS: dict[str, pa.Schema] = {
    "admissions": pa.schema(
        [
            ("admission_type", pa.string()),
            ("discharge_location", pa.string()),
            ("service", pa.string()),
            ("site", pa.string()),
        ]
    ),
}

# Columns that may hold nulls; a null anywhere else is a hard contract violation.
NULLABLE = {
    "patients": {"ethnicity"},
    "admissions": {
        "dischtime",
        "deathtime",
        "diagnosis_icd10",
        "admission_type",
        "discharge_location",
        "service",
        "site",
    },
    "icustays": {"careunit"},
    "events": {"value", "stay_id"},
}


@dataclass(frozen=True)
class RawSource:
    """A raw source folder that passed the structural checks (tables, columns, types)."""

    path: Path
    info: dict[str, Any]
    file_hashes: dict[str, str] = field(default_factory=dict)

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def has(self, name: str) -> bool:
        """Return whether the source holds table ``name`` (always true for required tables)."""
        return name in RAW_SCHEMAS or name in self.file_hashes

    def relations(self) -> dict[str, list[Path]]:
        """Return the source tables feature SQL may read besides events, by relation name."""
        out = {"admissions": [self.table_path("admissions")]}
        out |= {n: [self.table_path(n)] for n in OPTIONAL_SCHEMAS if self.has(n)}
        return out

    @property
    def default_site(self) -> str:
        """Return the site of admissions whose ``site`` is null (the source's one declared site)."""
        declared = self.info.get("site")
        return str(declared) if declared else UNSPECIFIED_SITE

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Return table ``name`` cast to the contract schema (optional columns null if absent)."""
        table = _read_cast(self.table_path(name), name, columns)
        extra = OPTIONAL_COLUMNS.get(name)
        if extra is None or columns is not None:
            return table
        present = set(pq.read_schema(self.table_path(name)).names)
        for fld in extra:
            if fld.name in present:
                col = pq.read_table(self.table_path(name), columns=[fld.name]).column(0)
                table = table.append_column(fld, col.cast(fld.type))
            else:
                table = table.append_column(fld, pa.nulls(table.num_rows, fld.type))
        return table


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file deterministically (no pandas metadata, fixed options)."""
    table = table.replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)


def _read_cast(path: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    schema = RAW_SCHEMAS.get(name) or OPTIONAL_SCHEMAS[name]
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceInvalid(f"table {name} ({path}): cannot be read as Parquet: {exc}") from None
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    try:
        return table.select(wanted.names).cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
        raise SourceInvalid(f"table {name}: columns do not match the raw contract: {exc}") from None


def read_source(path: str | Path) -> RawSource:
    """Open a raw source folder, checking that every table exists with the contract's columns.

    Raises :class:`SourceInvalid` naming the table and column when a table is
    missing, unreadable, empty, lacks a column or has a column of the wrong type.
    """
    root = Path(path)
    if not root.is_dir():
        raise SourceInvalid(f"raw source {root}: no such folder")
    info_path = root / "source.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SourceInvalid(f"raw source {info_path}: malformed JSON: {exc}") from None
    hashes = {}
    tables = dict(RAW_SCHEMAS)
    tables |= {n: s for n, s in OPTIONAL_SCHEMAS.items() if (root / f"{n}.parquet").exists()}
    for name, schema in tables.items():
        tpath = root / f"{name}.parquet"
        if not tpath.exists():
            raise SourceInvalid(
                f"raw source {root}: table {name} is missing (expected {tpath.name} with columns "
                f"{', '.join(schema.names)})"
            )
        try:
            meta = pq.read_schema(tpath)
            n_rows = pq.ParquetFile(tpath).metadata.num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            raise SourceInvalid(
                f"table {name} ({tpath}): cannot be read as Parquet: {exc}"
            ) from None
        missing = [c for c in schema.names if c not in meta.names]
        if missing:
            raise SourceInvalid(
                f"table {name}: missing column(s) {', '.join(missing)}; the raw contract expects "
                f"{', '.join(f'{f.name} ({f.type})' for f in schema)}"
            )
        for fld in schema:
            got = meta.field(fld.name).type
            if not _castable(got, fld.type):
                raise SourceInvalid(
                    f"table {name}, column {fld.name}: expected {fld.type}, found {got}"
                )
        if n_rows == 0:
            raise SourceInvalid(f"table {name} ({tpath}): the table is empty (0 rows)")
        hashes[name] = sha256_file(tpath)
    return RawSource(path=root, info=info, file_hashes=hashes)


def _castable(got: pa.DataType, want: pa.DataType) -> bool:
    if got == want:
        return True
    if pa.types.is_dictionary(got):
        got = got.value_type
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_floating(want):
        return pa.types.is_floating(got) or pa.types.is_integer(got) or pa.types.is_decimal(got)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got) or pa.types.is_date(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    return False
