"""Verified identities: who performed a governed act, and how that was proven.

A governed act (approve, reject, promote, suspend, resume, rollback, acknowledge a risk,
close an incident) is recorded against a :class:`VerifiedIdentity`, never against a
name someone typed. Front ends build one only after checking a proof: a console or API
session (local password or the hospital's OpenID Connect provider) or, on the command
line, a signature by the person's own registered key. The identity is stored with the
act in the audit ledger, so an auditor can see how each person was authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["METHODS", "Method", "VerifiedIdentity", "service_identity"]

#: how an identity was proven
Method = Literal["console-password", "oidc", "api-bearer", "ssh-signature", "service"]
METHODS: tuple[str, ...] = ("console-password", "oidc", "api-bearer", "ssh-signature", "service")


@dataclass(frozen=True)
class VerifiedIdentity:
    """A person (the registry's name for them) and the proof that they are acting.

    ``subject`` is what the proof names: the identity provider's ``sub`` claim, the
    console user name, or the SHA-256 fingerprint of the signing key. ``issuer`` is the
    OpenID provider (or None for local proofs).
    """

    person: str
    method: Method
    subject: str
    issuer: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"identity method {self.method!r} is not one of {', '.join(METHODS)}")
        if not self.person or not self.subject:
            raise ValueError("a verified identity names a person and a subject")

    def to_json(self) -> dict[str, Any]:
        """Return the identity as the ledger records it beside the act."""
        out: dict[str, Any] = {
            "person": self.person,
            "method": self.method,
            "subject": self.subject,
        }
        if self.issuer is not None:
            out["issuer"] = self.issuer
        return out


def service_identity(process: str) -> VerifiedIdentity:
    """Return the identity of this process acting on its own account (method ``service``).

    Only for acts the software itself makes — the monitor suspending a release on a
    critical alert — never for a person: a person's act needs their own proof. The
    process must hold its role in the registry like anyone else.
    """
    return VerifiedIdentity(person=process, method="service", subject=process)
