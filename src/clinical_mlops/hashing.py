"""Canonical JSON and SHA-256 helpers: the basis of every content address.

Canonical JSON here means: UTF-8, keys sorted, no insignificant whitespace, no
NaN/Infinity (they have no JSON form), floats in Python's shortest round-trip
repr. Two equal objects always serialise to the same bytes, so their hashes
can be compared across machines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "FinitePayload",
    "canonical_json",
    "canonical_json_scalars",
    "is_text",
    "payload_json",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
    "sha256_text",
]

_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Return the canonical UTF-8 JSON encoding of ``obj``."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def is_text(value: object) -> bool:
    """Return True for a string UTF-8 can encode: JSON may carry lone surrogates, which
    cannot be stored in the audit record nor sent back, so they are refused as input."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_json_scalars(obj: Mapping[str, Any] | list[Any]) -> bytes:
    """Return :func:`canonical_json` of a flat object or list of text, integers, booleans, None.

    The same bytes, made by orjson: for such values both encoders agree exactly (keys
    sorted by code point, which is UTF-8 byte order; the same escapes; tested over every
    Unicode scalar). Anything else (a float, a nested value, an integer beyond 64 bits)
    takes :func:`canonical_json`, whose float spelling orjson does not share.
    """
    values = obj.values() if isinstance(obj, Mapping) else obj
    for v in values:
        if not (v is None or type(v) is str or type(v) is bool or type(v) is int):
            return canonical_json(obj)
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits
        return canonical_json(obj)


class FinitePayload(dict[str, Any]):
    """A payload whose producer has checked that every number in it is finite.

    :func:`payload_json` encodes it with orjson alone. Without that promise a payload is
    also run through :func:`canonical_json`, because orjson writes NaN and infinity as
    ``null`` where the ledger must refuse them.
    """


def payload_json(payload: Mapping[str, Any]) -> bytes:
    """Return a ledger payload as compact JSON with sorted keys; ValueError/TypeError if invalid.

    Payloads are sealed (encrypted) and hashed as ciphertext, so only their values have to
    round-trip, not a canonical float spelling: orjson's shortest round-trip floats load back
    to the same numbers as ``json``'s. NaN and infinity are refused, not written as null.
    """
    if isinstance(payload, FinitePayload):
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return canonical_json(dict(payload))


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Return the hex SHA-256 of ``text`` encoded as UTF-8."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_json(obj: Any) -> str:
    """Return the hex SHA-256 of the canonical JSON of ``obj``."""
    return sha256_bytes(canonical_json(obj))


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
