"""Payload encryption: AES-256-GCM under per-subject data keys (envelope encryption).

Each subject (pseudonym) gets its own random 256-bit data key; the data key is
stored only *wrapped* by the key provider's active wrap key (see
:mod:`clinical_mlops.privacy.identity`). Destroying a subject's data keys makes
every payload sealed under them unreadable: crypto-shredding.

Sealed format (version 1): ``0x01 || 12-byte random nonce || ciphertext+tag``.
The associated data binds the ciphertext to its ledger position (origin, seq,
type, data-key id), so a payload moved to another entry fails to open.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinical_mlops.errors import WrongKey
from clinical_mlops.hashing import canonical_json, canonical_json_scalars

__all__ = ["DATA_KEY_BYTES", "new_data_key", "open_sealed", "payload_aad", "seal"]

DATA_KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE = 12


def new_data_key() -> bytes:
    """Return a fresh random AES-256 data key."""
    return os.urandom(DATA_KEY_BYTES)


def payload_aad(*, origin: str, seq: int, entry_type: str, key_id: str) -> bytes:
    """Return the associated data that binds a payload to its ledger entry."""
    return canonical_json_scalars(
        {"origin": origin, "seq": seq, "type": entry_type, "key_id": key_id}
    )


def seal(plaintext: bytes, *, key: bytes, aad: bytes) -> bytes:
    """Return ``plaintext`` encrypted with AES-256-GCM under ``key`` (sealed format v1)."""
    nonce = os.urandom(_NONCE)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(blob: bytes, *, key: bytes, aad: bytes, where: str = "payload") -> bytes:
    """Return the plaintext of a sealed blob; WrongKey if key or associated data do not match."""
    if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
        raise WrongKey(f"{where}: not a sealed payload (bad version byte or too short)")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], aad)
    except InvalidTag:
        raise WrongKey(
            f"{where}: the data key does not open this payload (wrong key, or the payload "
            "was altered or moved to another entry)"
        ) from None


def seal_json(obj: Any, *, key: bytes, aad: bytes) -> bytes:
    """Return the canonical JSON of ``obj`` sealed under ``key``."""
    return seal(canonical_json(obj), key=key, aad=aad)
