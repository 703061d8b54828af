"""Witness use cases: set one up, answer add-checkpoint, and check a ledger against witnesses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.ledger.entries import Checkpoint
from clinical_mlops.ledger.note import NOTE_PREFIX, parse_vkey
from clinical_mlops.ledger.witness import (
    Accepted,
    Witness,
    WitnessClient,
    cosigned_by,
    init_witness,
)

if TYPE_CHECKING:
    from clinical_mlops.ledger import Ledger, VerifyReport

__all__ = [
    "add_checkpoint",
    "init_witness",
    "latest_checkpoint",
    "ledger_vkey",
    "open_witness",
    "verify_with_witnesses",
]


def open_witness(state: Path, key: Path | None = None) -> Witness:
    """Return the witness kept in ``state`` (its key from ``key`` when given)."""
    return Witness(state, key=key)


def add_checkpoint(witness: Witness, body: bytes) -> Accepted:
    """Return the witness's cosignature of an add-checkpoint request (WitnessRefused if not)."""
    return witness.add_checkpoint(body)


def latest_checkpoint(witness: Witness, digest: str) -> str | None:
    """Return the latest cosigned checkpoint of the origin hashing to ``digest``."""
    return witness.latest_by_hash(digest)


def ledger_vkey(ledger: Ledger) -> str:
    """Return the vkey of the ledger's active checkpoint-signing key (what a witness pins)."""
    from clinical_mlops.ledger.note import vkey

    key_id = ledger.provider.active_key_id("sign")
    return vkey(NOTE_PREFIX + ledger.origin, ledger.provider.public_keys()[key_id])


def verify_with_witnesses(
    ledger: Ledger,
    *,
    witnesses: Sequence[str],
    witness_keys: Sequence[str],
    trusted: Sequence[Checkpoint] = (),
    thorough: bool = False,
) -> VerifyReport:
    """Return the ledger's verification report with each witness's latest checkpoint checked.

    Each witness (URL, state directory or a file holding a cosigned checkpoint) must carry
    a valid cosignature by one of ``witness_keys`` (vkeys pinned out of band) and the
    ledger's own signature. A witness that cannot be read, holds nothing for this ledger
    or whose cosignature does not verify is a ``witness`` problem: the check fails closed.
    """
    from clinical_mlops.ledger.verify import Problem

    pins = [parse_vkey(k) for k in witness_keys]
    if witnesses and not pins:
        raise ValueInvalid(
            "--witness-key: pin at least one witness key (a vkey) to check witnesses"
        )
    origin = NOTE_PREFIX + ledger.origin
    keys = ledger.provider.public_keys()
    witnessed: list[tuple[str, Checkpoint]] = []
    problems: list[Problem] = []
    for target in witnesses:
        try:
            text = WitnessClient(target).latest(origin)
            if text is None:
                raise ValueInvalid(f"it holds no checkpoint of {origin}")
            note = None
            why = "cosigned by none of the pinned witness keys"
            for pin in pins:
                try:
                    note, _ = cosigned_by(text, pin)
                    break
                except ValueInvalid as exc:
                    why = str(exc)
            if note is None:
                raise ValueInvalid(why)
            witnessed.append((target, Checkpoint.from_note(note, keys)))
        except (OSError, ValueInvalid) as exc:
            problems.append(Problem("witness", None, f"witness {target}: {exc}"))
    report = ledger.verify(trusted=trusted, witnessed=witnessed, thorough=thorough)
    report.problems[:0] = problems
    return report
