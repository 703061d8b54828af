"""Auditor export: a range of entries with proofs, a signed checkpoint and the public keys,
in one JSON file that :func:`verify_bundle` checks with no database and no secret.

Bundle format ``clinical-mlops/audit-bundle/v1``::

    {
      "format": "clinical-mlops/audit-bundle/v1",
      "origin": "<ledger id>",
      "public_keys": {"<key id>": "<raw Ed25519 public key, hex>"},
      "checkpoint": {origin, size, root, time, key_id, signature},
      "entries": [ {seq, time, type, schema, actor, subject, key_id, payload_hash,
                    public, prev, leaf_hash, sig_key_id, signature, payload}, ... ],
      "inclusion_proofs": [[hex, ...], ...],           # one per entry, against checkpoint
      "previous_checkpoint": {...} | null,              # optional, an older checkpoint
      "consistency_proof": [hex, ...] | null            # previous_checkpoint -> checkpoint
    }

Payloads travel sealed (the auditor can check their hashes, not read them).
The public keys in a bundle prove only that the bundle is self-consistent: an
auditor must compare them (``--public-key``) with keys obtained out of band.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clinical_mlops.errors import BundleInvalid, EntryNotFound, LedgerCorrupted
from clinical_mlops.ledger.entries import Checkpoint, StoredEntry, body_bytes, leaf_bytes
from clinical_mlops.ledger.merkle import (
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from clinical_mlops.ledger.store import StoredTree
from clinical_mlops.ledger.verify import (
    Problem,
    VerifyReport,
    check_checkpoint_signature,
    check_entry_signature,
    parse_row,
)
from clinical_mlops.privacy.keys import public_key_hex

__all__ = ["BUNDLE_FORMAT", "export_bundle", "load_bundle", "verify_bundle"]

BUNDLE_FORMAT = "clinical-mlops/audit-bundle/v1"
_ENTRY_KEYS = [
    "seq",
    "time",
    "type",
    "schema",
    "actor",
    "subject",
    "key_id",
    "payload_hash",
    "payload",
    "public",
    "prev",
    "leaf_hash",
    "sig_key_id",
    "signature",
]


def export_bundle(
    ledger: Any, *, start: int, end: int | None = None, previous_size: int | None = None
) -> dict[str, Any]:
    """Return the bundle of entries ``start..end-1`` proven against a fresh checkpoint.

    ``previous_size`` adds a consistency proof from the stored checkpoint of
    that size (e.g. the one given to the auditor last time) to the new one.
    """
    cp = ledger.checkpoint()
    end = cp.size if end is None else end
    if not 0 <= start < end <= cp.size:
        raise EntryNotFound(f"cannot export entries {start}..{end - 1}: ledger has {cp.size}")
    previous = None
    proof = None
    if previous_size is not None:
        matches = [c for c in ledger.checkpoints() if c.size == previous_size]
        if not matches:
            raise EntryNotFound(f"no stored checkpoint of size {previous_size}")
        previous = matches[-1]
        proof = (
            ledger.consistency_proof(previous_size, cp.size)["proof"]
            if previous_size < cp.size
            else []
        )
    store = ledger.store
    with store.engine.connect() as conn:
        tree = StoredTree(store, conn, cp.size)
        try:
            rows = [parse_row(*r) for r in store.raw_rows(conn, start=start, end=end)]
        except ValueError as exc:
            raise LedgerCorrupted(
                f"cannot export a damaged ledger: {exc}; run `clinical-mlops audit verify`"
            ) from None
        proofs = [[h.hex() for h in inclusion_proof(e.seq, cp.size, tree)] for e in rows]
    keys = ledger.provider.public_keys()
    return {
        "format": BUNDLE_FORMAT,
        "origin": ledger.origin,
        "public_keys": {kid: public_key_hex(k) for kid, k in sorted(keys.items())},
        "checkpoint": cp.to_json(),
        "entries": [_entry_json(e) for e in rows],
        "inclusion_proofs": proofs,
        "previous_checkpoint": None if previous is None else previous.to_json(),
        "consistency_proof": proof,
    }


def _entry_json(entry: StoredEntry) -> dict[str, Any]:
    out = entry.body_fields()
    out.pop("v")
    out.update(
        leaf_hash=entry.leaf_hash,
        sig_key_id=entry.sig_key_id,
        signature=entry.signature,
        payload=None if entry.payload is None else entry.payload.hex(),
    )
    return out


def write_bundle(bundle: Mapping[str, Any], path: str | Path) -> Path:
    """Write the bundle as JSON to ``path`` and return the path."""
    target = Path(path)
    target.write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return target


def load_bundle(path: str | Path) -> dict[str, Any]:
    """Return the parsed bundle file; BundleInvalid when it is not a JSON object."""
    target = Path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleInvalid(f"{target}: no such bundle file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleInvalid(f"{target}: not a JSON audit bundle ({exc})") from None
    if not isinstance(data, dict):
        raise BundleInvalid(f"{target}: the bundle must be a JSON object")
    return data


# -- parsing with exact error locations ----------------------------------------------------
def _need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise BundleInvalid(f"bundle field {where}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise BundleInvalid(
            f"bundle field {where}.{key} has the wrong type ({type(value).__name__})"
        )
    return value


def _hex(value: Any, where: str, size: int | None = 32) -> bytes:
    if not isinstance(value, str):
        raise BundleInvalid(f"bundle field {where} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BundleInvalid(f"bundle field {where} is not hex") from None
    if size is not None and len(raw) != size:
        raise BundleInvalid(f"bundle field {where} must be {size} bytes, is {len(raw)}")
    return raw


def _checkpoint(obj: Any, where: str) -> Checkpoint:
    if not isinstance(obj, Mapping):
        raise BundleInvalid(f"bundle field {where} must be an object")
    for key, kind in (
        ("origin", str),
        ("size", int),
        ("root", str),
        ("time", str),
        ("key_id", str),
        ("signature", str),
    ):
        _need(obj, key, kind, where)
    _hex(obj["root"], f"{where}.root")
    _hex(obj["signature"], f"{where}.signature", 64)
    if obj["size"] < 0:
        raise BundleInvalid(f"bundle field {where}.size is negative")
    return Checkpoint.from_json(obj)


def _entry(obj: Any, where: str) -> StoredEntry:
    if not isinstance(obj, Mapping):
        raise BundleInvalid(f"bundle field {where} must be an object")
    missing = [k for k in _ENTRY_KEYS if k not in obj]
    if missing:
        raise BundleInvalid(f"bundle field {where} lacks {missing}")
    _need(obj, "seq", int, where)
    for key in (
        "time",
        "type",
        "schema",
        "actor",
        "payload_hash",
        "public",
        "prev",
        "leaf_hash",
        "sig_key_id",
        "signature",
    ):
        _need(obj, key, str, where)
    for key in ("subject", "key_id", "payload"):
        if obj[key] is not None and not isinstance(obj[key], str):
            raise BundleInvalid(f"bundle field {where}.{key} must be a string or null")
    payload = None if obj["payload"] is None else _hex(obj["payload"], f"{where}.payload", None)
    return StoredEntry(
        seq=obj["seq"],
        time=obj["time"],
        type=obj["type"],
        schema=obj["schema"],
        actor=obj["actor"],
        subject=obj["subject"],
        key_id=obj["key_id"],
        payload_hash=obj["payload_hash"],
        payload=payload,
        public=obj["public"],
        prev_hash=obj["prev"],
        leaf_hash=obj["leaf_hash"],
        sig_key_id=obj["sig_key_id"],
        signature=obj["signature"],
    )


def verify_bundle(
    bundle: Mapping[str, Any], *, pinned_keys: Mapping[str, str] | None = None
) -> VerifyReport:
    """Return the verification report of an audit bundle, using nothing but the bundle.

    Raises BundleInvalid (naming the field) when the bundle is malformed;
    returns a report with problems when it is well-formed but does not verify.
    ``pinned_keys`` (key id -> hex) are keys the auditor obtained out of band;
    when given, the bundle's keys must match them.
    """
    fmt = _need(bundle, "format", str, "bundle")
    if fmt != BUNDLE_FORMAT:
        raise BundleInvalid(f"bundle field bundle.format is {fmt!r}, expected {BUNDLE_FORMAT!r}")
    origin = _need(bundle, "origin", str, "bundle")
    raw_keys = _need(bundle, "public_keys", dict, "bundle")
    keys: dict[str, Ed25519PublicKey] = {}
    for kid, value in raw_keys.items():
        keys[kid] = Ed25519PublicKey.from_public_bytes(_hex(value, f"public_keys.{kid}"))
    cp = _checkpoint(bundle.get("checkpoint"), "checkpoint")
    entries = _need(bundle, "entries", list, "bundle")
    proofs = _need(bundle, "inclusion_proofs", list, "bundle")
    if len(proofs) != len(entries):
        raise BundleInvalid(f"bundle has {len(entries)} entries but {len(proofs)} inclusion proofs")
    parsed = [_entry(e, f"entries[{i}]") for i, e in enumerate(entries)]
    paths = []
    for i, proof in enumerate(proofs):
        if not isinstance(proof, list):
            raise BundleInvalid(f"bundle field inclusion_proofs[{i}] must be a list")
        paths.append([_hex(h, f"inclusion_proofs[{i}][{j}]") for j, h in enumerate(proof)])
    previous = bundle.get("previous_checkpoint")
    prev_cp = None if previous is None else _checkpoint(previous, "previous_checkpoint")
    consistency = bundle.get("consistency_proof")
    if prev_cp is not None and not isinstance(consistency, list):
        raise BundleInvalid(
            "bundle field consistency_proof must be a list with previous_checkpoint"
        )
    cons_path = (
        []
        if consistency is None
        else [_hex(h, f"consistency_proof[{j}]") for j, h in enumerate(consistency)]
    )

    report = VerifyReport()
    problems = report.problems
    if pinned_keys is not None:
        for kid, value in raw_keys.items():
            if pinned_keys.get(kid) != value:
                problems.append(
                    Problem("key", None, f"bundle key {kid} is not one of the pinned public keys")
                )
    for name, one in (("checkpoint", cp), ("previous_checkpoint", prev_cp)):
        if one is None:
            continue
        bad = check_checkpoint_signature(one, origin=origin, keys=keys)
        if bad:
            problems.append(Problem("checkpoint", None, f"{name}: {bad}"))
        else:
            report.checkpoints += 1
    root = bytes.fromhex(cp.root)
    previous_leaf: bytes | None = None
    for i, (entry, path) in enumerate(zip(parsed, paths, strict=True)):
        body = body_bytes(entry.body_fields())
        recomputed = leaf_hash(
            leaf_bytes(body, sig_key_id=entry.sig_key_id, signature=entry.signature)
        )
        seq = entry.seq
        if i and seq != parsed[i - 1].seq + 1:
            problems.append(
                Problem(
                    "sequence", seq, f"entries[{i}]: seq {seq} does not follow {parsed[i - 1].seq}"
                )
            )
        if entry.leaf_hash != recomputed.hex():
            problems.append(Problem("leaf", seq, f"entry {seq}: leaf hash does not match"))
        if previous_leaf is not None and entry.prev_hash != previous_leaf.hex():
            problems.append(
                Problem("chain", seq, f"entry {seq}: prev does not match entry {seq - 1}")
            )
        if (
            entry.payload is not None
            and hashlib.sha256(entry.payload).hexdigest() != entry.payload_hash
        ):
            problems.append(Problem("payload", seq, f"entry {seq}: payload hash does not match"))
        if entry.signature:
            # A seal; an entry it sealed (empty signature) is authenticated by its
            # inclusion proof against the signed checkpoint below.
            bad = check_entry_signature(
                body_hash_hex=hashlib.sha256(body).hexdigest(),
                sig_key_id=entry.sig_key_id,
                signature=entry.signature,
                origin=origin,
                keys=keys,
            )
            report.signatures_checked += 1
            if bad:
                problems.append(Problem("signature", seq, f"entry {seq}: {bad}"))
        if not verify_inclusion(leaf=recomputed, index=seq, size=cp.size, proof=path, root=root):
            problems.append(
                Problem(
                    "inclusion", seq, f"entry {seq}: inclusion proof fails against the checkpoint"
                )
            )
        previous_leaf = recomputed
        report.entries += 1
    if prev_cp is not None and not verify_consistency(
        old_size=prev_cp.size,
        new_size=cp.size,
        proof=cons_path,
        old_root=bytes.fromhex(prev_cp.root),
        new_root=root,
    ):
        problems.append(
            Problem(
                "consistency",
                None,
                f"checkpoint {prev_cp.size} is not a prefix "
                f"of checkpoint {cp.size} (consistency proof fails)",
            )
        )
    report.root = cp.root
    return report
