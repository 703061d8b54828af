"""The byte format of entries and checkpoints is pinned: a change would orphan every
existing ledger, so it must be a deliberate new version, never an accident."""

from __future__ import annotations

import base64
import hashlib

from clinical_mlops.ledger.entries import (
    Checkpoint,
    StoredEntry,
    body_bytes,
    entry_signing_message,
    leaf_bytes,
)
from clinical_mlops.ledger.merkle import leaf_hash

ENTRY = StoredEntry(
    seq=7,
    time="2024-03-01T08:00:00.000000Z",
    type="alert",
    schema="alert/v1",
    actor="svc",
    subject=None,
    key_id="dek_000000000000000000000000",
    payload_hash="ab" * 32,
    payload=b"\x01sealed",
    public="{}",
    prev_hash="cd" * 32,
    leaf_hash="",
    sig_key_id="sign-20240301-00000000",
    signature="ef" * 64,
)


def test_entry_body_leaf_and_signing_message_bytes_are_pinned():
    body = body_bytes(ENTRY.body_fields())
    assert body == (
        b'{"actor":"svc","key_id":"dek_000000000000000000000000","payload_hash":"'
        + b"ab" * 32
        + b'","prev":"'
        + b"cd" * 32
        + b'","public":"{}","schema":"alert/v1",'
        b'"seq":7,"subject":null,"time":"2024-03-01T08:00:00.000000Z","type":"alert","v":1}'
    )
    leaf = leaf_bytes(body, sig_key_id=ENTRY.sig_key_id, signature=ENTRY.signature)
    assert leaf == body + b'\n["sign-20240301-00000000","' + b"ef" * 64 + b'"]'
    assert leaf_hash(leaf) == hashlib.sha256(b"\x00" + leaf).digest()
    assert entry_signing_message(origin="ledger-x", body_hash_hex="00" * 32) == (
        b'{"body":"' + b"00" * 32 + b'","kind":"clinical-mlops/entry/v1","origin":"ledger-x"}'
    )


def test_checkpoint_message_is_pinned():
    cp = Checkpoint(origin="ledger-x", size=3, root="11" * 32, time="t", key_id="k", signature="")
    # Signed as a C2SP tlog-checkpoint note: origin line, size, base64 root, extension line.
    assert cp.message() == (
        b"clinical-mlops/ledger-x\n3\n" + base64.b64encode(b"\x11" * 32) + b"\ntime t\n"
    )
    # Checkpoints signed before the note format still verify against this message.
    assert cp.legacy_message() == (
        b'{"key_id":"k","kind":"clinical-mlops/checkpoint/v1","origin":"ledger-x","root":"'
        + b"11" * 32
        + b'","size":3,"time":"t"}'
    )
