"""The ledger's fast encoders give the bytes (or the values) of the canonical encoder.

Bodies, leaves and signing messages are hashed and signed, so their bytes must never
change: ``canonical_json_scalars`` (orjson) is checked byte for byte against
``canonical_json`` (the standard library) over every Unicode scalar value and random
objects. Payloads are sealed and hashed as ciphertext, so ``payload_json`` only has to
give back the same values, and must refuse NaN and infinity unless promised finite.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_mlops.errors import EntryPayloadInvalid
from clinical_mlops.hashing import (
    FinitePayload,
    canonical_json,
    canonical_json_scalars,
    payload_json,
)
from clinical_mlops.ledger.entries import validate_new_entry

SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()


def test_every_unicode_scalar_encodes_identically() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        block = chars[start : start + 4096]
        text = "".join(block)
        obj = {text: text, "k" + block[0]: block[-1], block[len(block) // 2]: None}
        assert canonical_json_scalars(obj) == canonical_json(obj)
        assert canonical_json_scalars(block) == canonical_json(block)


@SETTINGS
@given(st.dictionaries(st.text(), scalars, max_size=12))
def test_flat_objects_encode_identically(obj: dict[str, Any]) -> None:
    assert canonical_json_scalars(obj) == canonical_json(obj)


@SETTINGS
@given(st.lists(scalars, max_size=6))
def test_flat_lists_encode_identically(items: list[Any]) -> None:
    assert canonical_json_scalars(items) == canonical_json(items)


def test_what_orjson_spells_differently_takes_the_canonical_encoder() -> None:
    for obj in ({"x": 1e-05}, {"x": 1e16}, {"x": 2**70}, {"x": [1, 2]}, {"x": {"y": 1}}):
        assert canonical_json_scalars(obj) == canonical_json(obj)
    assert canonical_json({"x": 1e-05}) == b'{"x":1e-05}'  # orjson would write 1e-5


finite = st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(
    scalars | finite,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(st.dictionaries(st.text(), values, max_size=8))
def test_finite_payloads_round_trip_to_the_same_values(obj: dict[str, Any]) -> None:
    fast = payload_json(FinitePayload(obj))
    assert json.loads(fast) == json.loads(canonical_json(obj)) == obj
    assert list(json.loads(fast)) == sorted(obj)  # keys sorted like the canonical form


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_payload_without_the_promise_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError):
        payload_json({"inputs": {"lactate": bad}})
    with pytest.raises(EntryPayloadInvalid, match="not JSON-serialisable"):
        validate_new_entry(
            entry_type="snapshot_built",
            actor="system:test",
            payload={"deep": [{"x": bad}]},
            subject=None,
            public=None,
        )
