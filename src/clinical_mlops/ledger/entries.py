"""Ledger entries: the declared event types, their versioned payload schemas, and the
exact bytes that are hashed into the Merkle tree and signed.

An entry has public columns (seq, UTC time, type, schema, actor, subject
pseudonym, data-key id, payload hash, ``public`` metadata, previous leaf hash)
and one encrypted payload. The *body* is the canonical JSON of those columns
and is signed with the ledger key (Ed25519); the *leaf* is the body plus the
signing key id and the signature, so the Merkle tree covers every stored byte.
The payload enters the body only through ``payload_hash``, the SHA-256 of the
sealed (encrypted) payload. Hashing the ciphertext rather than the plaintext
means that after erasure or purge no hash remains from which a guessed clinical
payload could be confirmed, and the tree still verifies.

Each entry type has a schema ``<type>/v<version>``; new writes use the latest
version, old entries keep the schema id they were written with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clinical_mlops.errors import (
    EntryPayloadInvalid,
    SubjectNotPseudonymised,
    UnknownEntryType,
    ValueInvalid,
)
from clinical_mlops.hashing import (
    FinitePayload,
    canonical_json,
    canonical_json_scalars,
    payload_json,
)
from clinical_mlops.ledger.note import (
    ED25519_TYPE,
    NOTE_PREFIX,
    Note,
    NoteBody,
    Verifier,
    key_hash,
    raw_public,
)

__all__ = [
    "PSEUDONYM_PATTERN",
    "SCHEMAS",
    "Checkpoint",
    "EntrySchema",
    "StoredEntry",
    "body_bytes",
    "checkpoint_message",
    "entry_signing_message",
    "latest_schema",
    "leaf_bytes",
    "legacy_checkpoint_message",
    "schema_by_id",
    "validate_new_entry",
]

PSEUDONYM_PATTERN = re.compile(r"^psn_[0-9a-f]{32}$")
LEAF_VERSION = 1

_Type = type  # the schema has a field named ``type``
_NUM = (int, float)
_STR = (str,)
_OPT_STR = (str, type(None))


@dataclass(frozen=True)
class EntrySchema:
    """One version of one entry type: required payload fields and allowed public keys."""

    type: str
    version: int
    description: str
    required: Mapping[str, tuple[_Type, ...]] = field(default_factory=dict)
    public: frozenset[str] = frozenset()
    subject: Literal["required", "optional", "forbidden"] = "optional"

    @cached_property
    def id(self) -> str:
        return f"{self.type}/v{self.version}"


def _schema(
    type_: str,
    description: str,
    required: Mapping[str, tuple[type, ...]] | None = None,
    *,
    public: tuple[str, ...] = (),
    subject: Literal["required", "optional", "forbidden"] = "optional",
    version: int = 1,
) -> EntrySchema:
    return EntrySchema(
        type=type_,
        version=version,
        description=description,
        required=dict(required or {}),
        public=frozenset(public),
        subject=subject,
    )


_ALL = [
    _schema(
        "inference",
        "one prediction served (R-A1)",
        {
            "model_version": _STR,
            "dataset_sha256": _STR,
            "inputs": (dict,),
            "raw_score": _NUM,
            "probability": _NUM,
            "conformal_set": (list,),
            "explanation": (dict, list),
            "requester": _STR,
            "purpose": _STR,
        },
        subject="required",
    ),
    _schema(
        "inference_refused",
        "a prediction request refused: outside intended use, unknown subject, no release (R-P5)",
        {"code": _STR, "message": _STR, "requester": _STR, "purpose": _STR},
    ),
    _schema(
        "fallback_served",
        "a suspended model answered with the clinical baseline score instead (R-H2)",
        {
            "model_version": _STR,
            "baseline": _STR,
            "baseline_score": _NUM,
            "requester": _STR,
            "purpose": _STR,
        },
        subject="required",
    ),
    _schema(
        "override",
        "a clinician overrode a recommendation (R-H1)",
        {"prediction_seq": (int,), "model_version": _STR, "explanation_shown": (dict, list)},
    ),
    _schema(
        "outcome",
        "an observed outcome linked to a prediction (R-O1)",
        {"prediction_seq": (int,), "outcome": (int, float, bool, str)},
    ),
    _schema(
        "approval",
        "a named approval of a release (R-L3 gate 4)",
        {"release": _STR, "role": _STR, "decision": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "risk_acknowledged",
        "a named person accepted a validation risk of a release, with a reason (R-L3 gate 3)",
        {"release": _STR, "risk": _STR, "role": _STR, "reason": _STR},
        subject="forbidden",
    ),
    _schema(
        "external_validation_recorded",
        "a release validated on data outside its development, the report stored with it (R-V1)",
        {
            "release": _STR,
            "snapshot_id": _STR,
            "sites": (list,),
            "years": (list,),
            "n": (int,),
            "n_events": (int,),
            "report_sha256": _STR,
            "auroc": (int, float, str),
        },
        subject="forbidden",
    ),
    _schema(
        "status_change",
        "a registry status change (R-A3)",
        {"release": _STR, "from_status": _OPT_STR, "to_status": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "deployment",
        "a release deployed or rolled back (R-A3)",
        {"release": _STR, "action": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "threshold_change",
        "an operating threshold changed (R-A3)",
        {"release": _STR, "old": _NUM, "new": _NUM, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "alert",
        "a monitoring alert (drift, fairness, volume) (R-O2, R-O3)",
        {"kind": _STR, "message": _STR},
        subject="forbidden",
    ),
    _schema(
        "escalation",
        "automated use suspended and cases routed to review (R-H2)",
        {"reason": _STR, "model_version": _STR},
    ),
    _schema(
        "review",
        "a periodic or case review recorded against a model (R-H3)",
        {"model_version": _STR, "outcome": _STR},
    ),
    _schema("incident", "an incident record or step (R-H4)", {"incident_id": _STR, "action": _STR}),
    _schema(
        "consent_recorded",
        "consent scope recorded for a subject (R-P4)",
        {"purposes": (list,)},
        subject="required",
    ),
    _schema(
        "consent_withdrawn",
        "consent withdrawn for some or all purposes of a subject (R-P4)",
        {"purposes": (list,), "at": _STR},
        subject="required",
    ),
    _schema(
        "consent_refused",
        "a request refused because consent does not cover it (R-P4)",
        {"purpose": _STR, "requester": _STR},
        subject="required",
    ),
    _schema(
        "erasure",
        "a subject's identity mapping and data keys destroyed (R-A4)",
        public=("pseudonym",),
        subject="forbidden",
    ),
    _schema(
        "key_rotation",
        "a provider key rotated (R-P2)",
        public=("purpose", "old_key_id", "new_key_id"),
        subject="forbidden",
    ),
    _schema(
        "purge",
        "payloads past retention removed (R-A5)",
        public=("ranges", "cutoffs"),
        subject="forbidden",
    ),
    _schema(
        "snapshot_built",
        "a data snapshot was built (payload: snapshot_id, manifest hash)",
        subject="forbidden",
    ),
    _schema(
        "training_run",
        "a model training run (payload: run id, model version, hashes)",
        subject="forbidden",
    ),
    _schema(
        "report_written", "a validation report written (payload: path, sha256)", subject="forbidden"
    ),
    _schema(
        "evidence_written",
        "a signed set of standard evidence documents written for a release (R-I7)",
        {"release": _STR, "manifest_sha256": _STR, "formats": (list,), "as_of": _STR},
        subject="forbidden",
    ),
    # -- registry and governance (R-L1..R-L3, R-A3) --
    _schema(
        "release_registered",
        "a signed release bundle registered as a draft (R-L1)",
        {"release": _STR, "bundle_sha256": _STR, "model_version": _STR},
        subject="forbidden",
    ),
    _schema(
        "gate_evaluated",
        "a release gate evaluated, with its evidence (R-L3)",
        {"release": _STR, "gate": _STR, "passed": (bool,)},
        subject="forbidden",
    ),
    _schema(
        "role_granted",
        "a person given governance roles",
        {"person": _STR, "roles": (list,), "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "key_registered",
        "a person's SSH Ed25519 public key registered to prove their command-line acts",
        {"person": _STR, "fingerprint": _STR, "public_key": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "rollout_change",
        "a release's rollout mode at a site changed",
        {"release": _STR, "site": _STR, "mode": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "trial_started",
        "a candidate release started a silent or shadow trial beside the live one at a site",
        {"release": _STR, "site": _STR, "mode": _STR, "role": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "trial_ended",
        "a candidate release's silent or shadow trial at a site ended",
        {"release": _STR, "site": _STR, "mode": _STR, "role": _STR, "why": _STR},
        subject="forbidden",
    ),
    _schema(
        "trial_inference",
        "a trial candidate scored beside a served request, never shown (or why it could not be)",
        {
            "release": _STR,
            "mode": _STR,
            "shown_to_clinician": (bool,),
            "paired_request_id": _STR,
            "requester": _STR,
            "purpose": _STR,
        },
        subject="required",
    ),
    _schema(
        "governance_refused",
        "a governance action refused by a rule, with no state change",
        {"action": _STR, "rule": _STR, "message": _STR},
        subject="forbidden",
    ),
]

SCHEMAS: dict[str, dict[int, EntrySchema]] = {}
for _s in _ALL:
    SCHEMAS.setdefault(_s.type, {})[_s.version] = _s
_LATEST = {t: versions[max(versions)] for t, versions in SCHEMAS.items()}


def latest_schema(entry_type: str) -> EntrySchema:
    """Return the newest schema of ``entry_type``; raise UnknownEntryType if undeclared."""
    found = _LATEST.get(entry_type)
    if found is not None:
        return found
    versions = SCHEMAS.get(entry_type)
    if not versions:
        declared = ", ".join(sorted(SCHEMAS))
        raise UnknownEntryType(
            f"entry type {entry_type!r} is not declared; declared types: {declared}"
        )
    return versions[max(versions)]


def schema_by_id(schema_id: str) -> EntrySchema:
    """Return the schema named ``<type>/v<n>``; raise UnknownEntryType if undeclared."""
    type_, _, version = schema_id.rpartition("/v")
    try:
        return SCHEMAS[type_][int(version)]
    except (KeyError, ValueError):
        raise UnknownEntryType(f"entry schema {schema_id!r} is not declared") from None


def validate_new_entry(
    *,
    entry_type: str,
    actor: str,
    payload: Mapping[str, Any],
    subject: str | None,
    public: Mapping[str, Any] | None,
) -> tuple[EntrySchema, bytes]:
    """Return the schema a new entry is written with and its payload's JSON, after checking.

    The payload is encoded once, here (``hashing.payload_json``): encoding it is what proves
    it serialisable, and the bytes are what the ledger seals.
    """
    schema = latest_schema(entry_type)
    where = f"{schema.id} entry"
    if not isinstance(actor, str) or not actor.strip():
        raise EntryPayloadInvalid(f"{where}: actor must be a non-empty string (who did it)")
    # type() first: the payloads the services build are plain dicts (an ABC check is slow)
    if not (type(payload) is FinitePayload or type(payload) is dict) and not isinstance(
        payload, Mapping
    ):
        raise EntryPayloadInvalid(f"{where}: payload must be a JSON object, got {type(payload)}")
    if not schema.required.keys() <= payload.keys():
        missing = [k for k in schema.required if k not in payload]
        raise EntryPayloadInvalid(f"{where}: payload lacks required field(s) {missing}")
    for key, types in schema.required.items():
        value = payload[key]
        if type(value) not in types and (
            not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        ):
            names = "/".join(t.__name__ for t in types)
            raise EntryPayloadInvalid(
                f"{where}: payload field {key!r} must be {names}, got {type(value).__name__}"
            )
    try:
        encoded = payload_json(payload)
    except (TypeError, ValueError) as exc:
        raise EntryPayloadInvalid(f"{where}: payload is not JSON-serialisable ({exc})") from None
    extra = set(public) - schema.public if public else None
    if extra:
        raise EntryPayloadInvalid(f"{where}: public metadata may not carry {sorted(extra)}")
    if subject is None and schema.subject == "required":
        raise EntryPayloadInvalid(f"{where}: a subject pseudonym is required")
    if subject is not None:
        if schema.subject == "forbidden":
            raise EntryPayloadInvalid(f"{where}: this entry type carries no subject")
        if not isinstance(subject, str) or not PSEUDONYM_PATTERN.match(subject):
            raise SubjectNotPseudonymised(
                f"{where}: subject must be a pseudonym from the identity vault "
                "(psn_ + 32 hex digits); identifiers never enter the ledger"
            )
    return schema, encoded


@dataclass(frozen=True)
class StoredEntry:
    """One ledger row as stored: everything but the derived hashes is in the leaf."""

    seq: int
    time: str
    type: str
    schema: str
    actor: str
    subject: str | None
    key_id: str | None
    payload_hash: str
    payload: bytes | None
    public: str
    prev_hash: str
    leaf_hash: str
    sig_key_id: str
    signature: str

    def body_fields(self) -> dict[str, Any]:
        """Return the signed body: every column but the signature and the derived leaf hash."""
        return {
            "v": LEAF_VERSION,
            "seq": self.seq,
            "time": self.time,
            "type": self.type,
            "schema": self.schema,
            "actor": self.actor,
            "subject": self.subject,
            "key_id": self.key_id,
            "payload_hash": self.payload_hash,
            "public": self.public,
            "prev": self.prev_hash,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the row as a JSON object (payload as hex, or null when purged)."""
        out = {**self.body_fields(), "leaf_hash": self.leaf_hash}
        out.pop("v")
        out["sig_key_id"] = self.sig_key_id
        out["signature"] = self.signature
        out["payload"] = None if self.payload is None else self.payload.hex()
        return out


def body_bytes(fields: Mapping[str, Any]) -> bytes:
    """Return the canonical bytes of an entry body (what the entry signature covers)."""
    return canonical_json_scalars(fields if type(fields) is dict else dict(fields))


def leaf_bytes(body: bytes, *, sig_key_id: str, signature: str) -> bytes:
    """Return the exact bytes whose RFC 6962 leaf hash enters the tree.

    ``body || 0x0a || canonical JSON [sig_key_id, signature]``: canonical JSON
    never contains a raw newline, so the split is unambiguous, and the leaf
    covers every stored column (a checkpoint over the tree therefore
    authenticates signatures and all). Only the leaf hash itself is derived.
    """
    return body + b"\n" + canonical_json_scalars([sig_key_id, signature])


def entry_signing_message(*, origin: str, body_hash_hex: str) -> bytes:
    """Return the bytes the ledger key signs for one entry (bound to the ledger's origin)."""
    return canonical_json_scalars(
        {"kind": "clinical-mlops/entry/v1", "origin": origin, "body": body_hash_hex}
    )


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: the ledger's signature over (origin, size, root, time).

    Signed as a C2SP tlog-checkpoint note (:mod:`clinical_mlops.ledger.note`): the
    signature is over :meth:`message`, the note text. Checkpoints signed before notes
    were adopted signed :meth:`legacy_message` (canonical JSON) and still verify.
    """

    origin: str
    size: int
    root: str
    time: str
    key_id: str
    signature: str

    @property
    def note_origin(self) -> str:
        """Return the note's origin line (and the ledger key's signed-note name)."""
        return NOTE_PREFIX + self.origin

    def message(self) -> bytes:
        return checkpoint_message(
            origin=self.origin, size=self.size, root=self.root, time=self.time, key_id=self.key_id
        )

    def legacy_message(self) -> bytes:
        """Return the canonical JSON older checkpoints were signed over."""
        return legacy_checkpoint_message(
            origin=self.origin, size=self.size, root=self.root, time=self.time, key_id=self.key_id
        )

    def to_note(self, public: Ed25519PublicKey) -> str:
        """Return the checkpoint as a signed note, its signature line made with ``public``'s id."""
        name = self.note_origin
        sig = key_hash(name, ED25519_TYPE, raw_public(public)) + bytes.fromhex(self.signature)
        return Note(self.message().decode("utf-8"), ((name, sig),)).format()

    @classmethod
    def from_note(cls, note: Note, keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint:
        """Return the checkpoint in a signed note verified by one of ``keys`` (key id -> key).

        Raises ValueInvalid when it is not a ledger checkpoint or no key signed it.
        """
        body = NoteBody.parse(note.text)
        if not body.origin.startswith(NOTE_PREFIX):
            raise ValueInvalid(f"checkpoint origin {body.origin!r} is not a clinical-mlops ledger")
        times = [e[5:] for e in body.extensions if e.startswith("time ")]
        if len(times) != 1:
            raise ValueInvalid("checkpoint: expected one 'time' extension line")
        for key_id, key in keys.items():
            sig = note.verified_by(Verifier.of(body.origin, key))
            if sig is not None:
                cp = cls(
                    origin=body.origin[len(NOTE_PREFIX) :],
                    size=body.size,
                    root=body.root.hex(),
                    time=times[0],
                    key_id=key_id,
                    signature=sig.hex(),
                )
                if cp.message().decode("utf-8") != note.text:
                    raise ValueInvalid("checkpoint: note text is not in the ledger's form")
                return cp
        raise ValueInvalid(f"checkpoint of {body.origin}: signed by none of the ledger's keys")

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Checkpoint:
        """Return the checkpoint in ``obj``; raise KeyError/TypeError/ValueError when malformed."""
        cp = cls(
            origin=str(obj["origin"]),
            size=int(obj["size"]),
            root=str(obj["root"]),
            time=str(obj["time"]),
            key_id=str(obj["key_id"]),
            signature=str(obj["signature"]),
        )
        if cp.size < 0 or len(bytes.fromhex(cp.root)) != 32:
            raise ValueInvalid("checkpoint: expected size >= 0 and root 32 bytes of hex")
        return cp


def checkpoint_message(*, origin: str, size: int, root: str, time: str, key_id: str) -> bytes:
    """Return the bytes the ledger key signs for a checkpoint: its C2SP checkpoint note text.

    ``key_id`` is not part of the note (the signature line's key hash names the key).
    """
    del key_id
    body = NoteBody(NOTE_PREFIX + origin, size, bytes.fromhex(root), (f"time {time}",))
    return body.text().encode("utf-8")


def legacy_checkpoint_message(
    *, origin: str, size: int, root: str, time: str, key_id: str
) -> bytes:
    """Return the canonical JSON checkpoints were signed over before the note format."""
    return canonical_json(
        {
            "kind": "clinical-mlops/checkpoint/v1",
            "origin": origin,
            "size": size,
            "root": root,
            "time": time,
            "key_id": key_id,
        }
    )
