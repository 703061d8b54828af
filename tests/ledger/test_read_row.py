"""Property: reading a stored entry row never raises, whatever its cells hold (Hypothesis).

The storage battery (``test_storage_oddities.py``) puts oddities into real databases; this
drives :func:`read_row` with any mix of the values a SQLite or PostgreSQL driver can return.
"""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_mlops.ledger.store import ENTRY_COLUMNS, storage_class
from clinical_mlops.ledger.verify import ENTRY_STORAGE, parse_row, read_row

GOOD: dict[str, Any] = {
    "seq": 7,
    "time": "2024-03-01T08:00:00.000000Z",
    "type": "training_run",
    "schema": "training_run/v1",
    "actor": "pipeline",
    "subject": None,
    "key_id": "dek-1",
    "payload_hash": "ab" * 32,
    "payload": b"\x01\x02",
    "public": "{}",
    "prev_hash": "cd" * 32,
    "leaf_hash": "ef" * 32,
    "sig_key_id": "sign-1",
    "signature": "",
}

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.datetimes(timezones=st.just(UTC)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    changes=st.dictionaries(st.sampled_from(ENTRY_COLUMNS), ANY_VALUE, min_size=1, max_size=4),
    as_stored_bytes=st.booleans(),
)
def test_any_cells_read_as_a_reading_never_an_exception(
    changes: dict[str, Any], as_stored_bytes: bool
) -> None:
    row = GOOD | changes
    classes = [storage_class(row[c]) for c in ENTRY_COLUMNS]
    values = [row[c] for c in ENTRY_COLUMNS]
    if as_stored_bytes:  # SQLite: text comes back as its bytes, its class from typeof()
        values = [v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in values]
    reading = read_row(values, classes)
    odd = [c for c, cls in zip(ENTRY_COLUMNS, classes, strict=True) if cls not in ENTRY_STORAGE[c]]
    for column in odd:  # every cell of another class is named
        assert any(f"column {column} " in p for p in reading.problems), (column, reading)
    if reading.entry is not None and not reading.problems:
        assert parse_row(values, classes) == reading.entry


def test_a_well_formed_row_reads_back_exactly() -> None:
    values = [GOOD[c] for c in ENTRY_COLUMNS]
    reading = read_row(values, [storage_class(v) for v in values])
    assert reading.problems == [] and reading.seq == 7
    assert reading.entry is not None and reading.entry.payload == b"\x01\x02"
    assert read_row(values, [storage_class(v) for v in values]).entry == parse_row(values)


def test_an_unreadable_row_keeps_its_stored_leaf() -> None:
    row = GOOD | {"actor": None, "time": Decimal("1.5")}
    values = [row[c] for c in ENTRY_COLUMNS]
    reading = read_row(values, [storage_class(v) for v in values])
    assert reading.entry is None and reading.seq == 7
    assert reading.stored_leaf == bytes.fromhex("ef" * 32)
    assert reading.problems == [
        "column time is stored as real, expected text",
        "column actor is stored as null, expected text",
    ]
