"""Roles and the four-eyes rules for approving a release (R-L3 gate 4).

Three roles approve a release: ``clinical``, ``compliance`` and ``engineering``.
Gate 4 passes when each role has approved by a *different* person, none of them
the bundle's author, and no standing rejection exists. A person approves in a
role only if the registry records that they hold it.

People are counted by their verified identities, not by the names typed: two approvals
proven by the same key fingerprint, or by the same (issuer, subject) of a sign-on, are
one person whatever names they carry, and an approval without a verified identity
does not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from clinical_mlops.errors import ApprovalRefused, RoleRequired
from clinical_mlops.vocabulary import APPROVER_ROLES

__all__ = [
    "Approval",
    "Decision",
    "approval_problems",
    "check_approval",
    "proven_by",
    "require_role",
]

Decision = Literal["approve", "reject"]


@dataclass(frozen=True)
class Approval:
    """One recorded decision on a release by a named person in a role."""

    person: str
    role: str
    decision: str
    why: str
    time: str
    #: the verified identity the decision was recorded with (``VerifiedIdentity.to_json``)
    identity: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "person": self.person,
            "role": self.role,
            "decision": self.decision,
            "why": self.why,
            "time": self.time,
        }
        if self.identity is not None:
            out["identity"] = dict(self.identity)
        return out


def proven_by(identity: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Return what makes two identities the same person: (issuer or method, subject).

    A key fingerprint (``ssh-signature``), a provider's subject under its issuer
    (``oidc``, ``api-bearer``), a console user name: whoever's name is attached.
    """
    if not identity:
        return None
    return (str(identity.get("issuer") or identity.get("method")), str(identity.get("subject")))


def require_role(
    *,
    person: str,
    held: Iterable[str],
    allowed: Iterable[str],
    action: str,
    role: str | None = None,
) -> str:
    """Return the role ``person`` acts in for ``action``; raise ``RoleRequired`` if none fits."""
    held_set, allowed_t = set(held), tuple(allowed)
    if role is not None:
        if role not in allowed_t:
            raise RoleRequired(
                f"{action}: role {role!r} may not do this (rule: allowed roles are "
                f"{', '.join(allowed_t)})"
            )
        if role not in held_set:
            raise RoleRequired(
                f"{action}: {person!r} does not hold the {role} role (rule: roles are "
                f"checked on every governance action; {person!r} holds "
                f"{', '.join(sorted(held_set)) or 'no role'})"
            )
        return str(role)
    fitting = [r for r in allowed_t if r in held_set]
    if not fitting:
        raise RoleRequired(
            f"{action}: needs a person in role {' or '.join(allowed_t)}; {person!r} holds "
            f"{', '.join(sorted(held_set)) or 'no role'} (rule: roles are checked on every "
            "governance action)"
        )
    return str(fitting[0])


def check_approval(
    *,
    person: str,
    role: str,
    held: Iterable[str],
    author: str,
    existing: Iterable[Approval],
    version: str,
    identity: Mapping[str, Any] | None = None,
) -> None:
    """Return None when ``person`` may decide on ``version`` in ``role``; raise otherwise.

    Refuses an unknown role, a role the person does not hold (``RoleRequired``), the
    bundle's author (self-approval), a person who already decided in another role
    (one person cannot fill two roles), a role already filled by someone else, and an
    ``identity`` that already proved a decision under another name (``ApprovalRefused``).
    """
    action = f"approval of {version}"
    require_role(person=person, held=held, allowed=APPROVER_ROLES, action=action, role=role)
    if person == author:
        raise ApprovalRefused(
            f"{action}: {person!r} is the author of the bundle and cannot approve it "
            "(rule: no self-approval)"
        )
    proof = proven_by(identity)
    for a in existing:
        if proof is not None and proven_by(a.identity) == proof and a.person != person:
            raise ApprovalRefused(
                f"{action}: the proof offered for {person!r} ({proof[0]} {proof[1]}) already "
                f"decided as {a.person!r} ({a.role}); one key or sign-on is one person (rule: "
                "distinct verified people for clinical, compliance and engineering)"
            )
        if a.person == person and a.role != role:
            raise ApprovalRefused(
                f"{action}: {person!r} already decided as {a.role}; one person cannot fill "
                f"two roles (rule: distinct people for clinical, compliance and engineering)"
            )
        if a.role == role and a.person != person and a.decision == "approve":
            raise ApprovalRefused(
                f"{action}: the {role} role was already approved by {a.person!r} "
                "(rule: one approval per role)"
            )
        if a.role == role and a.person == person:
            raise ApprovalRefused(
                f"{action}: {person!r} already recorded a decision as {role} (rule: one decision per person)"
            )


def approval_problems(
    *, approvals: Iterable[Approval], author: str, roles: Iterable[str] = APPROVER_ROLES
) -> tuple[list[str], Mapping[str, str]]:
    """Return (problems, role -> approving person) for gate 4 over ``approvals``."""
    listed = list(approvals)
    problems: list[str] = []
    by_role: dict[str, str] = {}
    proofs: dict[str, tuple[str, str]] = {}
    for a in listed:
        if a.decision == "reject":
            problems.append(f"{a.role} ({a.person}) rejected the release: {a.why}")
        elif a.decision == "approve":
            proof = proven_by(a.identity)
            if proof is None:
                problems.append(f"the {a.role} approval by {a.person} carries no verified identity")
            elif a.role not in by_role:
                by_role[a.role] = a.person
                proofs[a.role] = proof
    for role in roles:
        if role not in by_role:
            problems.append(f"missing approval in role {role}")
    people = list(by_role.values())
    if len(set(people)) != len(people):
        problems.append("one person fills two roles")
    if len(set(proofs.values())) != len(proofs):
        problems.append("one verified identity (one key or sign-on) approved in two roles")
    if author in people:
        problems.append(f"the author {author!r} approved their own bundle")
    return problems, by_role
