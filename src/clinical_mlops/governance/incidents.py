"""Incidents (R-H4): open -> contained -> resolved, with named roles and required steps.

An incident names an incident lead, a clinical lead and a communications lead.
Containment is carried out through the registry (``suspend`` the release, or
``rollback`` to an earlier approved one), so it is the same audited status change
as any other. Resolution needs containment, a communication step and a
patient-notification decision (notified, or not required with the reason).
Every step is an ``incident`` ledger event, made by a verified person: each function
takes the :class:`~clinical_mlops.governance.identity.VerifiedIdentity` of the actor and
stores it with the step.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.errors import GovernanceError, IncidentStepRefused
from clinical_mlops.hashing import canonical_json
from clinical_mlops.vocabulary import Role

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.governance import schema as t

__all__ = [
    "INCIDENT_ROLES",
    "add_step",
    "contain",
    "get_incident",
    "list_incidents",
    "open_incident",
    "resolve",
]

INCIDENT_ROLES = ("incident_lead", "clinical_lead", "communications_lead")
_ANY = (Role.CLINICAL, Role.COMPLIANCE, Role.ENGINEERING)


def _j(obj: Any) -> str:
    return canonical_json(obj).decode()


def get_incident(governance: Governance, incident_id: str) -> dict[str, Any]:
    """Return incident ``incident_id`` with its steps."""
    with governance.engine.connect() as conn:
        row = conn.execute(sa.select(t.incidents).where(t.incidents.c.id == incident_id)).first()
    if row is None:
        raise IncidentStepRefused(f"no incident {incident_id!r}")
    m = dict(row._mapping)
    m["roles"], m["steps"] = json.loads(m["roles"]), json.loads(m["steps"])
    return m


def list_incidents(governance: Governance, *, status: str | None = None) -> list[dict[str, Any]]:
    """Return every incident (optionally only those with ``status``)."""
    with governance.engine.connect() as conn:
        ids = (
            conn.execute(sa.select(t.incidents.c.id).order_by(t.incidents.c.opened)).scalars().all()
        )
    out = [get_incident(governance, i) for i in ids]
    return [i for i in out if status is None or i["status"] == status]


def _step(
    governance: Governance,
    inc: dict[str, Any],
    *,
    kind: str,
    actor: str,
    detail: str,
    proof: dict[str, Any],
    status: str | None = None,
) -> dict[str, Any]:
    now = governance.now()
    steps = [*inc["steps"], {"kind": kind, "actor": actor, "detail": detail, "time": now}]
    with governance.engine.begin() as conn:
        conn.execute(
            sa.update(t.incidents)
            .where(t.incidents.c.id == inc["id"])
            .values(steps=_j(steps), updated=now, status=status or inc["status"])
        )
        governance.record(
            type="incident",
            actor=actor,
            payload={
                "incident_id": inc["id"],
                "action": kind,
                "detail": detail,
                "release": inc["version"],
                "status": status or inc["status"],
                "identity": proof,
            },
        )
    return get_incident(governance, inc["id"])


def open_incident(
    governance: Governance,
    version: str,
    *,
    actor: str,
    summary: str,
    severity: str,
    roles: dict[str, str],
    identity: VerifiedIdentity,
) -> dict[str, Any]:
    """Return a new open incident on release ``version`` with its named roles."""
    with governance.governed(action="open incident", actor=actor, version=version):
        proof = governance.bind(identity, actor, action=f"open an incident on {version}")
        governance.registry.get(version)
        governance.require(actor, allowed=_ANY, action="open incident")
        missing = [r for r in INCIDENT_ROLES if not roles.get(r)]
        if missing:
            raise IncidentStepRefused(
                f"incident on {version}: name the {', '.join(missing)} "
                "(rule: incidents have named roles)"
            )
        if severity not in ("low", "moderate", "high", "critical"):
            raise GovernanceError("incident severity must be low, moderate, high or critical")
        inc_id = f"inc-{secrets.token_hex(4)}"
        now = governance.now()
        with governance.engine.begin() as conn:
            conn.execute(
                sa.insert(t.incidents).values(
                    id=inc_id,
                    version=version,
                    status="open",
                    severity=severity,
                    summary=summary,
                    roles=_j(roles),
                    steps="[]",
                    opened=now,
                    updated=now,
                )
            )
        return _step(
            governance,
            get_incident(governance, inc_id),
            kind="opened",
            actor=actor,
            detail=summary,
            proof=proof,
        )


def contain(
    governance: Governance,
    incident_id: str,
    *,
    actor: str,
    action: str,
    why: str,
    identity: VerifiedIdentity,
    rollback_to: str | None = None,
) -> dict[str, Any]:
    """Return the incident after containment: ``suspend`` its release or ``rollback``."""
    with governance.governed(action="contain incident", actor=actor):
        proof = governance.bind(identity, actor, action=f"contain incident {incident_id}")
        inc = get_incident(governance, incident_id)
        if inc["status"] != "open":
            raise IncidentStepRefused(f"incident {incident_id} is {inc['status']}, not open")
        if action == "suspend":
            governance.suspend(
                inc["version"], actor=actor, why=f"incident {incident_id}: {why}", identity=identity
            )
            detail = f"suspended {inc['version']}: {why}"
        elif action == "rollback":
            if not rollback_to:
                raise IncidentStepRefused("rollback containment needs the release to roll back to")
            governance.rollback(
                rollback_to, actor=actor, why=f"incident {incident_id}: {why}", identity=identity
            )
            detail = f"rolled back to {rollback_to}: {why}"
        else:
            raise IncidentStepRefused(
                f"containment action must be suspend or rollback, not {action!r}"
            )
        return _step(
            governance,
            inc,
            kind=f"contained:{action}",
            actor=actor,
            detail=detail,
            proof=proof,
            status="contained",
        )


def add_step(
    governance: Governance,
    incident_id: str,
    *,
    actor: str,
    kind: str,
    detail: str,
    identity: VerifiedIdentity,
) -> dict[str, Any]:
    """Return the incident after a ``communication`` or ``patient_notification`` step.

    ``patient_notification`` details say who was notified, or ``not required: <why>``.
    """
    with governance.governed(action=f"incident {kind}", actor=actor):
        proof = governance.bind(identity, actor, action=f"incident {incident_id} {kind}")
        governance.require(actor, allowed=_ANY, action=f"incident {kind}")
        if kind not in ("communication", "patient_notification", "note"):
            raise IncidentStepRefused(f"unknown incident step {kind!r}")
        inc = get_incident(governance, incident_id)
        if inc["status"] == "resolved":
            raise IncidentStepRefused(f"incident {incident_id} is resolved")
        return _step(governance, inc, kind=kind, actor=actor, detail=detail, proof=proof)


def resolve(
    governance: Governance,
    incident_id: str,
    *,
    actor: str,
    root_cause: str,
    identity: VerifiedIdentity,
) -> dict[str, Any]:
    """Return the resolved incident; needs containment, communication and a notification decision."""
    with governance.governed(action="resolve incident", actor=actor):
        proof = governance.bind(identity, actor, action=f"resolve incident {incident_id}")
        governance.require(
            actor, allowed=(Role.COMPLIANCE, Role.CLINICAL), action="resolve incident"
        )
        inc = get_incident(governance, incident_id)
        kinds = {s["kind"].split(":")[0] for s in inc["steps"]}
        missing = [
            k for k in ("contained", "communication", "patient_notification") if k not in kinds
        ]
        if inc["status"] != "contained" or missing:
            raise IncidentStepRefused(
                f"incident {incident_id} cannot be resolved: status {inc['status']}, missing steps "
                f"{missing or 'none'} (rule: open -> contained -> resolved with communication and a "
                "patient-notification decision)"
            )
        return _step(
            governance,
            inc,
            kind="resolved",
            actor=actor,
            detail=root_cause,
            proof=proof,
            status="resolved",
        )
