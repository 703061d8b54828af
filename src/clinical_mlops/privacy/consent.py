"""Consent and purpose (R-P4): what each subject agreed to, and for how long.

A consent record names the purposes it covers (e.g. ``"mortality_risk"``,
``"quality_audit"``) and a validity interval. A request is allowed only when a
record for the subject covers its stated purpose at the request time; the
serving layer logs refusals as ``consent_refused`` ledger entries.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from clinical_mlops.database import driver_execute, write_transaction
from clinical_mlops.errors import ConsentNotGranted, ValueInvalid
from clinical_mlops.privacy.identity import IdentityVault, chunks, consents

__all__ = [
    "ConsentRecord",
    "consent_covers",
    "consents_of",
    "end_consent",
    "record_consent",
    "require_consent",
    "subjects_with_consents",
]


@dataclass(frozen=True)
class ConsentRecord:
    """One consent: purposes covered and the interval [valid_from, valid_until)."""

    pseudonym: str
    purposes: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: str
    recorded_by: str

    def covers(self, purpose: str, at: datetime) -> bool:
        """Return True when this record covers ``purpose`` at time ``at``."""
        if purpose not in self.purposes or at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until

    def to_json(self) -> dict[str, object]:
        return {
            "pseudonym": self.pseudonym,
            "purposes": list(self.purposes),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": None if self.valid_until is None else self.valid_until.isoformat(),
            "recorded_at": self.recorded_at,
            "recorded_by": self.recorded_by,
        }


def _aware(when: datetime, name: str) -> datetime:
    if when.tzinfo is None:
        raise ValueInvalid(f"{name}: expected a timezone-aware time (UTC), got {when.isoformat()}")
    return when.astimezone(UTC)


def record_consent(
    vault: IdentityVault,
    *,
    pseudonym: str,
    purposes: list[str] | tuple[str, ...],
    valid_from: datetime,
    valid_until: datetime | None,
    recorded_by: str,
    before_commit: Callable[[ConsentRecord], object] | None = None,
) -> ConsentRecord:
    """Return the consent record stored for ``pseudonym`` (which must be in the vault).

    ``before_commit(record)`` runs inside the vault transaction, before the commit (the
    audit ledger records the consent there); if it raises, nothing is stored.
    """
    if not purposes or not all(isinstance(p, str) and p for p in purposes):
        raise ValueInvalid("purposes: consent needs at least one non-empty purpose")
    start = _aware(valid_from, "valid_from")
    end = None if valid_until is None else _aware(valid_until, "valid_until")
    if end is not None and end <= start:
        raise ValueInvalid(
            f"valid_until: expected a time after valid_from ({start.isoformat()}), "
            f"got {end.isoformat()}; consent valid_until must be after valid_from"
        )
    if not vault.has_pseudonym(pseudonym):
        from clinical_mlops.errors import SubjectNotFound

        raise SubjectNotFound(f"pseudonym {pseudonym} is not in the identity vault")
    record = ConsentRecord(
        pseudonym=pseudonym,
        purposes=tuple(sorted(set(purposes))),
        valid_from=start,
        valid_until=end,
        recorded_at=datetime.now(UTC).isoformat(),
        recorded_by=recorded_by,
    )
    with write_transaction(vault.engine, lock_name="clinical_mlops_identity") as conn:
        conn.execute(
            consents.insert().values(
                pseudonym=pseudonym,
                purposes=json.dumps(list(record.purposes)),
                valid_from=start.isoformat(),
                valid_until=None if end is None else end.isoformat(),
                recorded_at=record.recorded_at,
                recorded_by=recorded_by,
            )
        )
        if before_commit is not None:
            before_commit(record)
    return record


def end_consent(
    vault: IdentityVault,
    *,
    pseudonym: str,
    purposes: list[str] | tuple[str, ...] | None,
    at: datetime,
    recorded_by: str,
    before_commit: Callable[[tuple[str, ...]], object] | None = None,
) -> tuple[str, ...]:
    """Return the purposes withdrawn after ending ``pseudonym``'s consent to them at ``at``.

    ``purposes`` None withdraws every purpose. Each record still in force at ``at`` (or
    starting later) that covers a withdrawn purpose ends at ``at``; its other purposes
    carry on in a new record from ``at`` to the old end, so nothing else changes. Records
    are never deleted: what was agreed, and when it stopped, stays readable.
    ``before_commit(purposes)`` runs inside the vault transaction (the audit ledger records
    the withdrawal there); if it raises, nothing changes. Raises SubjectNotFound for a
    pseudonym the vault does not hold, and ValueError when no record in force covers any
    purpose named.
    """
    from clinical_mlops.errors import SubjectNotFound

    moment = _aware(at, "at")
    wanted = None if purposes is None else set(purposes)
    if wanted is not None and (not wanted or not all(isinstance(p, str) and p for p in wanted)):
        raise ValueInvalid("purposes: name at least one non-empty purpose, or none for all")
    if not vault.has_pseudonym(pseudonym):
        raise SubjectNotFound(f"pseudonym {pseudonym} is not in the identity vault")
    withdrawn: set[str] = set()
    with write_transaction(vault.engine, lock_name="clinical_mlops_identity") as conn:
        rows = conn.execute(
            sa.select(consents).where(consents.c.pseudonym == pseudonym).order_by(consents.c.id)
        ).all()
        for row in rows:
            record = _record(row, pseudonym)
            if record.valid_until is not None and record.valid_until <= moment:
                continue  # already over
            ending = set(record.purposes) if wanted is None else set(record.purposes) & wanted
            if not ending:
                continue
            withdrawn |= ending
            # A record not started yet ends where it starts: it never covers anything.
            end = max(moment, record.valid_from)
            conn.execute(
                consents.update().where(consents.c.id == row.id).values(valid_until=end.isoformat())
            )
            kept = sorted(set(record.purposes) - ending)
            if kept and (record.valid_until is None or record.valid_until > end):
                conn.execute(
                    consents.insert().values(
                        pseudonym=pseudonym,
                        purposes=json.dumps(kept),
                        valid_from=end.isoformat(),
                        valid_until=(
                            None if record.valid_until is None else record.valid_until.isoformat()
                        ),
                        recorded_at=datetime.now(UTC).isoformat(),
                        recorded_by=recorded_by,
                    )
                )
        if not withdrawn:
            named = "any purpose" if wanted is None else ", ".join(sorted(wanted))
            raise ValueInvalid(
                f"purposes: no consent of {pseudonym} in force at {moment.isoformat()} "
                f"covers {named}; nothing was withdrawn"
            )
        result = tuple(sorted(withdrawn))
        if before_commit is not None:
            before_commit(result)
    return result


def consents_of(vault: IdentityVault, *, pseudonym: str) -> list[ConsentRecord]:
    """Return every consent record of ``pseudonym``, oldest first."""
    with vault.engine.connect() as conn:
        rows = conn.execute(
            sa.select(consents).where(consents.c.pseudonym == pseudonym).order_by(consents.c.id)
        ).all()
    return [_record(r, pseudonym) for r in rows]


def subjects_with_consents(
    vault: IdentityVault, *, identifiers: Iterable[str]
) -> dict[str, tuple[str, list[ConsentRecord]]]:
    """Return identifier -> (pseudonym, its consent records oldest first) for known subjects.

    One outer-join query per 500 identifiers: the serving path resolves who a patient is and
    what they agreed to in a single round trip. Unknown (or erased) identifiers are absent.
    """
    wanted = [i for i in dict.fromkeys(identifiers) if isinstance(i, str) and i]
    out: dict[str, tuple[str, list[ConsentRecord]]] = {}
    with vault.engine.connect() as conn:
        for part in chunks(wanted):
            # On the driver: this runs once per prediction (see database.driver_execute).
            sql = _SUBJECTS_WITH_CONSENTS.format(marks=", ".join("?" * len(part)))
            for identifier, pseudonym, *consent in driver_execute(conn, sql, part).fetchall():
                _, records = out.setdefault(str(identifier), (str(pseudonym), []))
                if consent[0] is not None:
                    records.append(_from_columns(str(pseudonym), *consent[1:]))
    return out


_SUBJECTS_WITH_CONSENTS = (
    "SELECT s.identifier, s.pseudonym, c.id, c.purposes, c.valid_from, c.valid_until, "
    "c.recorded_at, c.recorded_by FROM subjects s "
    "LEFT OUTER JOIN consents c ON c.pseudonym = s.pseudonym "
    "WHERE s.identifier IN ({marks}) ORDER BY c.id"
)


def _record(r: sa.Row[Any], pseudonym: str) -> ConsentRecord:
    return _from_columns(
        pseudonym, r.purposes, r.valid_from, r.valid_until, r.recorded_at, r.recorded_by
    )


# Keyed by the stored values themselves, so a changed row (a withdrawal) is decoded afresh;
# the records are frozen, so sharing them is safe. Serving decodes each patient's records once.
@functools.lru_cache(maxsize=1 << 16)
def _from_columns(
    pseudonym: str,
    purposes: str,
    valid_from: str,
    valid_until: str | None,
    recorded_at: str,
    recorded_by: str,
) -> ConsentRecord:
    return ConsentRecord(
        pseudonym=pseudonym,
        purposes=tuple(json.loads(purposes)),
        valid_from=datetime.fromisoformat(valid_from),
        valid_until=None if valid_until is None else datetime.fromisoformat(valid_until),
        recorded_at=recorded_at,
        recorded_by=recorded_by,
    )


def consent_covers(vault: IdentityVault, *, pseudonym: str, purpose: str, at: datetime) -> bool:
    """Return True when any consent record of ``pseudonym`` covers ``purpose`` at ``at``."""
    moment = _aware(at, "at")
    return any(r.covers(purpose, moment) for r in consents_of(vault, pseudonym=pseudonym))


def require_consent(vault: IdentityVault, *, pseudonym: str, purpose: str, at: datetime) -> None:
    """Return None when consent covers the purpose; raise ConsentNotGranted otherwise."""
    if not consent_covers(vault, pseudonym=pseudonym, purpose=purpose, at=at):
        raise ConsentNotGranted(
            f"no consent of {pseudonym} covers purpose {purpose!r} at {at.isoformat()}; "
            "the request must be refused and the refusal logged"
        )
