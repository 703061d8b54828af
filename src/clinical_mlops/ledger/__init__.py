"""The audit ledger (R-A1, R-A3..R-A5): every inference and every governance act, kept
tamper-evident.

Entries are appended in one serial order, their payloads encrypted per subject,
their leaf hashes built into an RFC 6962 Merkle tree and each entry signed
(Ed25519). Signed checkpoints (tree size, root, time) are made periodically and
on demand and copied outside the database; inclusion and consistency proofs let
an auditor check one record or one interval with nothing but the public key.
``verify`` recomputes everything and names the first bad seq.

Typical use from pipeline code::

    from clinical_mlops import ledger
    ledger.record(workspace, type="snapshot_built", actor="pipeline",
                  payload={"snapshot_id": sid})
"""

from clinical_mlops.ledger.entries import SCHEMAS, Checkpoint, EntrySchema, StoredEntry
from clinical_mlops.ledger.ledger import EntryView, Ledger, NewEntry, Receipt, record
from clinical_mlops.ledger.verify import Problem, VerifyReport

__all__ = [
    "SCHEMAS",
    "Checkpoint",
    "EntrySchema",
    "EntryView",
    "Ledger",
    "NewEntry",
    "Problem",
    "Receipt",
    "StoredEntry",
    "VerifyReport",
    "record",
]
