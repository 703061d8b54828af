"""Erasure (R-A4, GDPR art. 17): make one subject's records unlinkable and unreadable.

Erasing a subject deletes, in the identity vault, the identifier-to-pseudonym
mapping, the subject's consent records and every data key of the subject. The
ledger is not touched: its entries keep only the pseudonym and ciphertext, so
the tree and every signature still verify, while the payloads can no longer be
decrypted by anyone (crypto-shredding) and read as ``"erased"``.

The erasure itself is a ledger entry (type ``erasure``) that names the
pseudonym, never the identifier. The vault deletion commits only after that
entry is durable, so an erasure is never done without its audit record; if the
vault commit then fails, running the erasure again finishes it.

Processes already running (a service, a console) hold data keys in memory; they learn
of the erasure from the vault within their ``erasure_ttl`` (2 s by default) and then
refuse the subject with :class:`~clinical_mlops.errors.SubjectErased` — see
:mod:`clinical_mlops.privacy.identity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clinical_mlops.privacy.identity import SYSTEM_OWNER

if TYPE_CHECKING:
    from clinical_mlops.ledger import Ledger

__all__ = ["ErasureReceipt", "erase_subject"]


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


def erase_subject(ledger: Ledger, *, identifier: str, actor: str, reason: str) -> ErasureReceipt:
    """Return the receipt after erasing the subject ``identifier`` (SubjectNotFound if unknown).

    Nothing is written when the subject is unknown.
    """
    vault = ledger.vault
    # Resolve the system data key first: the erasure entry is sealed with it, and
    # creating it later would need the vault's write lock that the erasure holds.
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
