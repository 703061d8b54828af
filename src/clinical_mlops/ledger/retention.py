"""Retention (R-A5): per-type retention periods and an audited purge of expired payloads.

A purge removes the *payload* (the ciphertext) of entries older than their
type's retention period and keeps every other column, so the Merkle tree, the
chain and every signature still verify: the leaf commits to the payload only
through its hash. The purge is itself a ledger entry (type ``purge``) whose
public metadata lists the purged seq ranges and the cutoffs applied;
``verify`` accepts a missing payload only when such an entry covers it.

Entries that the ledger's own integrity argument rests on (``purge``,
``erasure``, ``key_rotation``) are never purged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.ledger.entries import SCHEMAS
from clinical_mlops.ledger.store import entries

if TYPE_CHECKING:
    from clinical_mlops.ledger.ledger import Ledger

__all__ = ["PROTECTED_TYPES", "PurgeResult", "RetentionPolicy", "purge_expired"]

PROTECTED_TYPES = frozenset({"purge", "erasure", "key_rotation"})


@dataclass(frozen=True)
class RetentionPolicy:
    """Retention period per entry type; types not listed are kept forever."""

    periods: Mapping[str, timedelta] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry_type, period in self.periods.items():
            if entry_type not in SCHEMAS:
                raise ValueInvalid(
                    f"retention: {entry_type!r} is not a declared entry type "
                    f"(expected one of {', '.join(sorted(SCHEMAS))})"
                )
            if entry_type in PROTECTED_TYPES:
                raise ValueInvalid(
                    f"retention: {entry_type!r} entries are never purged (ledger integrity)"
                )
            if period <= timedelta(0):
                raise ValueInvalid(
                    f"retention: {entry_type!r} expected a positive period, got {period}"
                )

    @classmethod
    def from_days(cls, days: Mapping[str, int | float]) -> RetentionPolicy:
        """Return a policy from ``{type: days}``."""
        return cls({k: timedelta(days=v) for k, v in days.items()})

    def cutoffs(self, now: datetime) -> dict[str, str]:
        """Return ``{type: ISO time}``: payloads written before it are expired."""
        return {t: utc_iso(now - p) for t, p in sorted(self.periods.items())}


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed; ``seq`` is the audit entry (None when nothing expired)."""

    purged: int
    ranges: list[tuple[int, int]]
    seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {"purged": self.purged, "ranges": [list(r) for r in self.ranges], "seq": self.seq}


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] == seq:
            out[-1] = (out[-1][0], seq + 1)
        else:
            out.append((seq, seq + 1))
    return out


def purge_expired(ledger: Ledger, *, policy: RetentionPolicy, actor: str) -> PurgeResult:
    """Return what was purged after removing every payload past its retention period.

    The purge entry is appended first and the payloads are cleared after it is
    durable; if the process dies in between, the next purge clears them.
    """
    now = ledger.clock.now()
    cutoffs = policy.cutoffs(now)
    if not cutoffs:
        return PurgeResult(purged=0, ranges=[], seq=None)
    with ledger.store.engine.connect() as conn:
        expired = [
            int(seq)
            for seq in conn.execute(
                sa.select(entries.c.seq).where(
                    entries.c.payload.is_not(None),
                    sa.or_(
                        *[
                            sa.and_(entries.c.type == t, entries.c.time < cut)
                            for t, cut in cutoffs.items()
                        ]
                    ),
                )
            ).scalars()
        ]
    if not expired:
        return PurgeResult(purged=0, ranges=[], seq=None)
    ranges = _ranges(expired)
    receipt = ledger.append(
        type="purge",
        actor=actor,
        payload={"policy_days": {t: p.total_seconds() / 86400 for t, p in policy.periods.items()}},
        public={"ranges": [list(r) for r in ranges], "cutoffs": cutoffs},
    )
    with ledger.store.writer() as conn:
        cleared = ledger.store.clear_payloads(conn, expired)
    if ledger.store.dialect == "sqlite":
        with ledger.store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    return PurgeResult(purged=cleared, ranges=ranges, seq=receipt.seq)
