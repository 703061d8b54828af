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
``events``        stay_id, subject_id, hadm_id, charttime, variable, value, unit (UCUM)
================  ==========================================================================

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

__all__ = ["RAW_SCHEMAS", "RAW_TABLES", "RawSource", "read_source", "write_table"]

_TS = pa.timestamp("us")

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

# Columns that may hold nulls; a null anywhere else is a hard contract violation.
NULLABLE = {
    "patients": {"ethnicity"},
    "admissions": {"dischtime", "deathtime", "diagnosis_icd10"},
    "icustays": {"careunit"},
    "events": {"value"},
}


@dataclass(frozen=True)
class RawSource:
    """A raw source folder that passed the structural checks (tables, columns, types)."""

    path: Path
    info: dict[str, Any]
    file_hashes: dict[str, str] = field(default_factory=dict)

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Return table ``name`` cast to the contract schema."""
        return _read_cast(self.table_path(name), name, columns)


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file deterministically (no pandas metadata, fixed options)."""
    table = table.replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)


def _read_cast(path: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    schema = RAW_SCHEMAS[name]
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
    for name, schema in RAW_SCHEMAS.items():
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
