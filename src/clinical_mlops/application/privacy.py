"""Consent and erasure of subjects (R-P4, R-A4), each recorded in the audit ledger.

Every front end (command line, console, demo) grants, withdraws and erases through
these functions, so every change to what a patient agreed to has its ledger entry
(``consent_recorded``, ``consent_withdrawn``, ``erasure``). The ledger entry is written
inside the identity vault's transaction, before it commits: a consent is never in force,
nor a subject erased, without its audit record. If the vault commit then fails, the
entry stands for an attempt that did not take effect, and running the same call again
completes it.

Erasure deletes, in the identity vault, the identifier-to-pseudonym mapping, the
subject's consent records and every data key of the subject. The ledger is not touched:
its entries keep only the pseudonym and ciphertext, so the tree and every signature still
verify, while the payloads can no longer be decrypted by anyone (crypto-shredding) and
read as ``"erased"``. Processes already running (a service, a console) learn of the
erasure from the vault within their ``erasure_ttl`` (2 s by default) and then refuse the
subject with :class:`~clinical_mlops.errors.SubjectErased`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from clinical_mlops.application.services import Services
from clinical_mlops.errors import SubjectNotFound
from clinical_mlops.privacy.consent import (
    ConsentRecord,
    consents_of,
    end_consent,
    record_consent,
)
from clinical_mlops.privacy.identity import SYSTEM_OWNER

__all__ = [
    "ConsentGranted",
    "ConsentWithdrawn",
    "ErasureReceipt",
    "consent_in_force",
    "erase_subject",
    "grant_consent",
    "withdraw_consent",
]


@dataclass(frozen=True)
class ConsentGranted:
    """A consent recorded: the record (by pseudonym) and its ledger entry."""

    record: ConsentRecord
    seq: int

    def to_json(self) -> dict[str, object]:
        return {**self.record.to_json(), "seq": self.seq}


@dataclass(frozen=True)
class ConsentWithdrawn:
    """A withdrawal: the pseudonym, the purposes that ended, when, and the ledger entry."""

    pseudonym: str
    purposes: tuple[str, ...]
    at: datetime
    seq: int

    def to_json(self) -> dict[str, object]:
        return {
            "pseudonym": self.pseudonym,
            "purposes": list(self.purposes),
            "at": self.at.isoformat(),
            "seq": self.seq,
        }


@dataclass(frozen=True)
class ErasureReceipt:
    """What an erasure did: the pseudonym (not the identifier) and the ledger entry."""

    pseudonym: str
    seq: int
    data_keys: int
    consents: int

    def to_json(self) -> dict[str, object]:
        return {
            "pseudonym": self.pseudonym,
            "seq": self.seq,
            "data_keys_destroyed": self.data_keys,
            "consents_deleted": self.consents,
        }


def grant_consent(
    services: Services,
    *,
    subject: str,
    purposes: Sequence[str],
    actor: str,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> ConsentGranted:
    """Return the consent recorded for ``subject`` (an identifier) and its ledger entry.

    A subject not yet in the identity vault gets a random pseudonym. ``valid_from``
    defaults to now (the services' clock); ``valid_until`` to no end. Bad purposes or an
    empty interval raise ValueError naming the field, with nothing recorded.
    """
    ledger = services.ledger
    vault = ledger.vault
    pseudonym = vault.pseudonym_for(subject)
    # Resolved before the vault's write lock is taken: the entry is sealed with this key,
    # and creating it inside the transaction would wait on that same lock.
    vault.data_key_for(pseudonym, provider=ledger.provider)
    seqs: list[int] = []
    record = record_consent(
        vault,
        pseudonym=pseudonym,
        purposes=list(purposes),
        valid_from=valid_from or services.clock.now(),
        valid_until=valid_until,
        recorded_by=actor,
        before_commit=lambda made: seqs.append(
            ledger.append(
                type="consent_recorded", actor=actor, subject=pseudonym, payload=made.to_json()
            ).seq
        ),
    )
    return ConsentGranted(record=record, seq=seqs[0])


def withdraw_consent(
    services: Services,
    *,
    subject: str,
    actor: str,
    purposes: Sequence[str] | None = None,
    at: datetime | None = None,
) -> ConsentWithdrawn:
    """Return the withdrawal of ``subject``'s consent to ``purposes`` (all when None) from ``at``.

    ``at`` defaults to now; requests after it for those purposes are refused. Raises
    SubjectNotFound for an identifier the vault does not hold, ValueError when no consent
    in force covers a purpose named; nothing is recorded then.
    """
    ledger = services.ledger
    vault = ledger.vault
    pseudonym = vault.pseudonym_for(subject, create=False)
    vault.data_key_for(pseudonym, provider=ledger.provider)
    moment = (at or services.clock.now()).astimezone(UTC)
    seqs: list[int] = []
    ended = end_consent(
        vault,
        pseudonym=pseudonym,
        purposes=None if purposes is None else list(purposes),
        at=moment,
        recorded_by=actor,
        before_commit=lambda withdrawn: seqs.append(
            ledger.append(
                type="consent_withdrawn",
                actor=actor,
                subject=pseudonym,
                payload={"purposes": list(withdrawn), "at": moment.isoformat()},
            ).seq
        ),
    )
    return ConsentWithdrawn(pseudonym=pseudonym, purposes=ended, at=moment, seq=seqs[0])


def consent_in_force(
    services: Services, *, subject: str, purpose: str, at: datetime | None = None
) -> bool:
    """Return True when ``subject`` (an identifier) has consent for ``purpose`` at ``at`` (now)."""
    vault = services.vault
    try:
        pseudonym = vault.pseudonym_for(subject, create=False)
    except SubjectNotFound:
        return False
    moment = (at or services.clock.now()).astimezone(UTC)
    return any(r.covers(purpose, moment) for r in consents_of(vault, pseudonym=pseudonym))


def erase_subject(
    services: Services, *, identifier: str, actor: str, reason: str
) -> ErasureReceipt:
    """Return the receipt after erasing the subject ``identifier`` (SubjectNotFound if unknown).

    Nothing is written when the subject is unknown. The ``erasure`` ledger entry names the
    pseudonym, never the identifier.
    """
    ledger = services.ledger
    vault = ledger.vault
    # The erasure entry is sealed with the system data key: resolved before the erasure
    # takes the vault's write lock.
    vault.data_key_for(SYSTEM_OWNER, provider=ledger.provider)
    result = vault.erase(
        identifier,
        before_commit=lambda pseudonym, n_keys, n_consents: (
            ledger.append(
                type="erasure",
                actor=actor,
                payload={
                    "reason": reason,
                    "data_keys_destroyed": n_keys,
                    "consents_deleted": n_consents,
                },
                public={"pseudonym": pseudonym},
            ).seq
        ),
    )
    return ErasureReceipt(
        pseudonym=result.pseudonym,
        seq=int(result.audit_seq or -1),
        data_keys=result.data_keys,
        consents=result.consents,
    )
