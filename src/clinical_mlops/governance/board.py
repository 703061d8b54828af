"""Who may do what to the releases of one registry (R-L2, R-L3, R-A3).

:class:`Governance` holds the people and their roles, the gate results and the
approvals (its own tables, :mod:`clinical_mlops.governance.schema`), and makes every
governed act on a release: register, promote, suspend, resume, retire, roll back and
roll out. A release's status moves along the lifecycle::

    draft -> validated -> clinically_reviewed -> approved_limited -> approved -> retired
    approved_limited | approved -> suspended -> (back to the status it left)

and nowhere else. Each move names an actor, the role they act in (checked against
the roles recorded for them) and a reason; ``draft -> validated`` needs gates 1-3
passed, ``-> approved_limited`` and ``-> approved`` need gate 4 as well. Once its
checks pass, the act is written through the registry (:class:`~clinical_mlops.registry.
registry.Registry`), which records the ledger events (``status_change``,
``deployment``, ``rollout_change``); approvals, gate results and role grants are
recorded here (``approval``, ``gate_evaluated``, ``role_granted``), and so are the
acknowledgements of the risks a release carries out of validation
(``risk_acknowledged``; gate 3 needs one for each, :mod:`.risks`). Every refusal is
a ``governance_refused`` event, with no state change.

Every act on a release takes the :class:`~clinical_mlops.governance.identity.
VerifiedIdentity` of the person making it, checked to name the acting person and
stored with the act in its ledger entry (``identity``). Front ends build it only from
a proof they checked (a console or API session), or pass a statement signed with the
person's registered SSH key, which :meth:`Governance.verify_signed` turns into one
(:mod:`.proof`).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clinical_mlops.database import ensure_tables, open_metadata_engine
from clinical_mlops.errors import (
    AcknowledgementRefused,
    BundleSignatureInvalid,
    GateFailed,
    GovernanceError,
    IdentityRefused,
    ReleaseNotFound,
    TransitionNotAllowed,
)
from clinical_mlops.governance import proof as sshproof
from clinical_mlops.governance import schema as t
from clinical_mlops.governance.approvals import Approval, Decision, check_approval, require_role
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.governance.risks import ACKNOWLEDGING_ROLES, Acknowledgement, Risk, risks_of
from clinical_mlops.hashing import canonical_json
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.bundle import Bundle
from clinical_mlops.registry.registry import LIVE, MODES, STATUSES, Mode, Registry, Release, Status
from clinical_mlops.vocabulary import APPROVER_ROLES, Gate, Role

__all__ = ["MODES_BY_STATUS", "PROMOTION", "TRANSITIONS", "TRIAL_MODES", "Governance"]

#: (from, to) -> roles that may make the move
TRANSITIONS: dict[tuple[str, str], tuple[Role, ...]] = {
    ("draft", "validated"): (Role.ENGINEERING,),
    ("validated", "clinically_reviewed"): (Role.CLINICAL,),
    ("clinically_reviewed", "approved_limited"): (Role.COMPLIANCE, Role.ENGINEERING),
    ("approved_limited", "approved"): (Role.COMPLIANCE, Role.CLINICAL),
    **{(s, "retired"): (Role.COMPLIANCE, Role.ENGINEERING) for s in STATUSES if s != "retired"},
    **{(s, "suspended"): (Role.CLINICAL, Role.COMPLIANCE, Role.ENGINEERING) for s in LIVE},
}
#: status -> the next status a promotion moves to
PROMOTION: dict[str, Status] = {
    "draft": "validated",
    "validated": "clinically_reviewed",
    "clinically_reviewed": "approved_limited",
    "approved_limited": "approved",
}
#: status -> the rollout modes a release in it may run in
MODES_BY_STATUS: dict[str, tuple[Mode, ...]] = {
    "approved_limited": ("shadow", "silent", "pilot"),
    "approved": MODES,
}
#: the modes a candidate runs in beside the live release (a trial), never in its place
TRIAL_MODES: tuple[Mode, ...] = ("silent", "shadow")
#: the gates ``draft -> validated`` needs; a move to a live status needs every gate
_BEFORE_VALIDATED = (Gate.SCHEMA_CONTRACT, Gate.METRICS, Gate.EVIDENCE)


def _j(obj: Any) -> str:
    return canonical_json(obj).decode("utf-8")


class Governance:
    """The governance of one registry: people and roles, gates, approvals, lifecycle, rollout.

    Its tables live in the same metadata database as the registry's; ``url`` names
    that database when it is not the workspace's default. Ledger events go to
    ``ledger`` (default: the registry's), so a run of acts opens the ledger once.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        ledger: Ledger | None = None,
        url: str | None = None,
        engine: Engine | None = None,
    ):
        self.registry = registry
        self.workspace = registry.workspace
        self.clock = registry.clock
        # an engine passed in (one per workspace, from Services) stays its owner's
        self._owns_engine = engine is None
        if engine is None:
            engine = open_metadata_engine(
                url or registry.workspace.database_url("meta"), t.metadata
            )
        else:
            ensure_tables(engine, t.metadata)
        self.engine = engine
        self._ledger = ledger

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Governance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ledger(self) -> Ledger:
        """The ledger governance records to."""
        return self._ledger if self._ledger is not None else self.registry.ledger

    def now(self) -> str:
        return self.registry.now()

    # -- audit -----------------------------------------------------------------------------
    def record(self, *, type: str, actor: str, payload: dict[str, Any]) -> int:
        """Return the seq of one ledger entry recording a governance act."""
        return self.ledger.append(type=type, actor=actor, payload=payload).seq

    @contextmanager
    def governed(self, *, action: str, actor: str, version: str | None = None) -> Iterator[None]:
        """Run a governance action; record any refusal as a ``governance_refused`` event."""
        try:
            yield
        except (GovernanceError, ReleaseNotFound, BundleSignatureInvalid) as exc:
            self.record(
                type="governance_refused",
                actor=actor or "unknown",
                payload={
                    "action": action,
                    "release": version,
                    "rule": type(exc).__name__,
                    "message": str(exc),
                },
            )
            raise

    def bind(self, identity: VerifiedIdentity, actor: str, *, action: str) -> dict[str, Any]:
        """Return ``identity`` as the ledger records it, once it names ``actor``.

        ``IdentityRefused`` when the identity is missing or names someone else: an act
        is recorded for the person who proved it, never for a name typed beside it.
        """
        if not isinstance(identity, VerifiedIdentity):
            raise IdentityRefused(
                f"{action}: no verified identity for {actor!r} (rule: a governed act is "
                "recorded only with proof of who made it)"
            )
        if identity.person != actor:
            raise IdentityRefused(
                f"{action}: the verified identity is {identity.person!r}, not {actor!r} "
                "(rule: an act is recorded for the person who proved it)"
            )
        return identity.to_json()

    # -- keys that prove acts made on the command line -------------------------------------
    def keys(self, person: str | None = None) -> builtins.list[dict[str, str]]:
        """Return the registered public keys (of ``person``, or everyone's), oldest first."""
        k = t.person_keys
        query = sa.select(k).order_by(k.c.added, k.c.fingerprint)
        if person is not None:
            query = query.where(k.c.person == person)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "person": r.person,
                "fingerprint": r.fingerprint,
                "public_key": r.public_key,
                "added": r.added,
                "added_by": r.added_by,
            }
            for r in rows
        ]

    def add_key(
        self, person: str, *, public_key: str, actor: str, identity: VerifiedIdentity, why: str
    ) -> dict[str, str]:
        """Return the key registered to ``person`` from an OpenSSH Ed25519 public key line.

        A governed act of compliance. One key belongs to one person: the store's
        primary key on the fingerprint refuses registering it again, to anyone
        (``IdentityRefused``, nothing recorded but the refusal). ``person`` must hold a
        role.
        """
        with self.governed(action="add key", actor=actor):
            proof = self.bind(identity, actor, action=f"register a key for {person!r}")
            self.require(actor, allowed=(Role.COMPLIANCE,), action=f"register a key for {person!r}")
            if not self.roles_of(person):
                raise GovernanceError(
                    f"register a key for {person!r}: {person!r} holds no role; grant a role "
                    "first (rule: keys prove the acts of people the registry knows)"
                )
            key, line = sshproof.parse_public_key(public_key)
            fp = sshproof.fingerprint(key)
            now = self.now()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(t.person_keys).values(
                            fingerprint=fp,
                            person=person,
                            public_key=line,
                            added=now,
                            added_by=actor,
                        )
                    )
                    self.record(
                        type="key_registered",
                        actor=actor,
                        payload={
                            "person": person,
                            "fingerprint": fp,
                            "public_key": line,
                            "why": why,
                            "identity": proof,
                        },
                    )
            except sa.exc.IntegrityError:
                owner = next((k["person"] for k in self.keys() if k["fingerprint"] == fp), None)
                raise IdentityRefused(
                    f"public_key: key {fp} is already registered to {owner!r} (rule: one key "
                    "belongs to one person); nothing was recorded"
                ) from None
        return {"person": person, "fingerprint": fp, "public_key": line, "added": now}

    def verify_signed(
        self,
        signed: sshproof.SignedStatement,
        *,
        act: dict[str, Any],
        first_key: str | None = None,
    ) -> VerifiedIdentity:
        """Return the verified identity of whoever signed a statement of exactly ``act``.

        Checks, before anything is recorded, that the statement names ``act`` in this
        workspace and is recent, that the SSHSIG signature verifies and that its key is
        registered to the acting person (``act["person"]``); then spends the statement's
        nonce, so the signature is never accepted again (the store's primary key, not a
        prior read). Any failure is ``IdentityRefused``, recorded as a refusal.

        ``first_key`` (a public key line) is the one way in while no key is registered
        in the workspace: the person registering their own first key proves it by
        signing with it.
        """
        person = str(act["person"])
        with self.governed(action=str(act["action"]), actor=person, version=act.get("release")):
            now = self.clock.now()
            body = sshproof.read_statement(
                signed.statement, act=act, workspace=self.ledger.origin, now=now
            )
            key = sshproof.verify(signed.statement, signed.signature)
            fp = sshproof.fingerprint(key)
            with self.engine.connect() as conn:
                owner = conn.execute(
                    sa.select(t.person_keys.c.person).where(t.person_keys.c.fingerprint == fp)
                ).scalar()
            if owner is None and first_key is not None and not self.keys():
                first, _ = sshproof.parse_public_key(first_key)
                if sshproof.fingerprint(first) == fp:
                    owner = person
            if owner is None:
                raise IdentityRefused(
                    f"signature: key {fp} is not registered to anyone; register it with "
                    "`clinical-mlops registry person key add` (nothing was recorded)"
                )
            if owner != person:
                raise IdentityRefused(
                    f"signature: key {fp} is registered to {owner!r}, not {person!r}; one key "
                    "proves one person's acts (nothing was recorded)"
                )
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(t.signed_acts).values(
                            nonce=body["nonce"],
                            fingerprint=fp,
                            person=person,
                            action=str(act["action"]),
                            time=self.now(),
                        )
                    )
            except sa.exc.IntegrityError:
                raise IdentityRefused(
                    "statement: this signed statement was already presented once; sign a new "
                    "statement for each act (rule: a signature proves one act)"
                ) from None
        return VerifiedIdentity(person=person, method="ssh-signature", subject=fp)

    def require(
        self, actor: str, *, allowed: tuple[str, ...], action: str, role: str | None = None
    ) -> str:
        """Return the role ``actor`` acts in for ``action``; ``RoleRequired`` if none fits."""
        return require_role(
            person=actor, held=self.roles_of(actor), allowed=allowed, action=action, role=role
        )

    # -- people and roles ------------------------------------------------------------------
    def roles_of(self, person: str) -> set[str]:
        """Return the roles recorded for ``person`` (empty if unknown)."""
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(t.people.c.roles).where(t.people.c.name == person)
            ).scalar()
        return set(json.loads(raw)) if raw else set()

    def people(self) -> dict[str, list[str]]:
        """Return every person and their roles."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.people).order_by(t.people.c.name)).all()
        return {r.name: json.loads(r.roles) for r in rows}

    def grant_roles(self, person: str, *, roles: list[str], actor: str, why: str) -> list[str]:
        """Return ``person``'s roles after granting ``roles``.

        Only a person in the compliance role may grant roles, except for the very
        first grant in an empty registry (bootstrap), which must include compliance.
        """
        with self.governed(action="grant_roles", actor=actor):
            unknown = sorted(set(roles) - set(Role))
            if unknown or not roles:
                raise GovernanceError(
                    f"grant roles to {person!r}: unknown role(s) {unknown or roles} "
                    f"(rule: roles are {', '.join(Role)})"
                )
            if self.people():
                self.require(actor, allowed=(Role.COMPLIANCE,), action=f"grant roles to {person!r}")
            elif Role.COMPLIANCE not in roles:
                raise GovernanceError(
                    "the first person registered must hold the compliance role "
                    "(rule: role grants are made by compliance)"
                )
            merged = sorted(self.roles_of(person) | {str(r) for r in roles})
            with self.engine.begin() as conn:
                conn.execute(sa.delete(t.people).where(t.people.c.name == person))
                conn.execute(
                    sa.insert(t.people).values(
                        name=person, roles=_j(merged), added=self.now(), added_by=actor
                    )
                )
                self.record(
                    type="role_granted",
                    actor=actor,
                    payload={"person": person, "roles": merged, "why": why},
                )
        return merged

    # -- registration ----------------------------------------------------------------------
    def register(
        self,
        bundle: Bundle,
        *,
        actor: str,
        why: str,
        role: str | None = None,
        against: str | None = None,
    ) -> Release:
        """Return the draft release made from the verified ``bundle`` (engineering role).

        Its change is classified against the task's active release, or ``against``.
        """
        with self.governed(action="register", actor=actor):
            verified = self.registry.verify(bundle)
            acting = self.require(
                actor, allowed=(Role.ENGINEERING,), action="register a release", role=role
            )
            return self.registry.add(verified, actor=actor, role=acting, why=why, against=against)

    # -- gates and approvals ---------------------------------------------------------------
    def record_gate(self, version: str, result: Any, *, actor: str) -> None:
        """Store the latest result of one gate for ``version`` and record it in the ledger."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(t.gates).where(
                    t.gates.c.version == version, t.gates.c.gate == result.name
                )
            )
            conn.execute(
                sa.insert(t.gates).values(
                    version=version,
                    gate=result.name,
                    passed=result.passed,
                    evidence=_j({"evidence": result.evidence, "failures": result.failures}),
                    actor=actor,
                    time=self.now(),
                )
            )
            self.record(
                type="gate_evaluated",
                actor=actor,
                payload={
                    "release": version,
                    "gate": result.name,
                    "passed": result.passed,
                    "failures": result.failures,
                    "evidence": result.evidence,
                },
            )

    def gates(self, version: str) -> dict[str, dict[str, Any]]:
        """Return gate name -> {passed, evidence, failures, actor, time} for ``version``."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.gates).where(t.gates.c.version == version)).all()
        out = {}
        for r in rows:
            body = json.loads(r.evidence)
            out[r.gate] = {
                "passed": bool(r.passed),
                "evidence": body["evidence"],
                "failures": body["failures"],
                "actor": r.actor,
                "time": r.time,
            }
        return out

    def approvals(self, version: str) -> builtins.list[Approval]:
        """Return every approval decision recorded on ``version``, oldest first."""
        a, ids = t.approvals, t.approval_identities
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(a, ids.c.identity)
                .select_from(a.outerjoin(ids, ids.c.approval_id == a.c.id))
                .where(a.c.version == version)
                .order_by(a.c.id)
            ).all()
        return [
            Approval(
                person=r.person,
                role=r.role,
                decision=r.decision,
                why=r.why,
                time=r.time,
                identity=json.loads(r.identity) if r.identity else None,
            )
            for r in rows
        ]

    def decide(
        self,
        version: str,
        *,
        person: str,
        role: str,
        decision: Decision,
        why: str,
        identity: VerifiedIdentity,
    ) -> Approval:
        """Return the approval (or rejection) ``person`` recorded on ``version`` in ``role``.

        ``identity`` is the proof of who acted; it must name ``person`` and is stored
        with the act (table and ledger). An identity that already decided on the
        release under another name is refused: gate 4 counts verified people.
        """
        action = "approve" if decision == "approve" else "reject"
        with self.governed(action=action, actor=person, version=version):
            proof = self.bind(identity, person, action=f"{action} {version}")
            rel = self.registry.get(version)
            if rel.status not in ("validated", "clinically_reviewed"):
                raise TransitionNotAllowed(
                    f"{action} {version}: status is {rel.status}; approvals are recorded on "
                    "validated or clinically_reviewed releases (rule: gate 4 follows gates 1-3)"
                )
            if role not in APPROVER_ROLES:
                require_role(
                    person=person, held=(), allowed=APPROVER_ROLES, action=action, role=role
                )
            check_approval(
                person=person,
                role=role,
                held=self.roles_of(person),
                author=rel.author,
                existing=self.approvals(version),
                version=version,
                identity=proof,
            )
            now = self.now()
            with self.engine.begin() as conn:
                approval_id = conn.execute(
                    sa.insert(t.approvals)
                    .values(
                        version=version,
                        person=person,
                        role=role,
                        decision=decision,
                        why=why,
                        time=now,
                    )
                    .returning(t.approvals.c.id)
                ).scalar_one()
                conn.execute(
                    sa.insert(t.approval_identities).values(
                        approval_id=approval_id, identity=_j(proof)
                    )
                )
                self.record(
                    type="approval",
                    actor=person,
                    payload={
                        "release": version,
                        "role": role,
                        "decision": decision,
                        "why": why,
                        "identity": proof,
                    },
                )
        return Approval(
            person=person, role=role, decision=decision, why=why, time=now, identity=proof
        )

    # -- risks and their acknowledgements (gate 3) ----------------------------------------
    def risks(self, version: str) -> builtins.list[Risk]:
        """Return the risks ``version`` carries out of validation (from its verified bundle)."""
        bundle = self.registry.bundle(version)
        return risks_of(bundle.report(), bundle.spec())

    def risk_acknowledgements(self, version: str) -> builtins.list[Acknowledgement]:
        """Return every risk acknowledgement recorded on ``version``, oldest first."""
        t_ack = t.risk_acknowledgements
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t_ack).where(t_ack.c.version == version).order_by(t_ack.c.id)
            ).all()
        return [
            Acknowledgement(
                release=r.version,
                risk=r.risk,
                words=r.words,
                actor=r.person,
                role=r.role,
                reason=r.reason,
                at=r.time,
                seq=int(r.ledger_seq),
            )
            for r in rows
        ]

    def acknowledge_risk(
        self,
        version: str,
        *,
        risk: str,
        actor: str,
        reason: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Acknowledgement:
        """Return the acknowledgement ``actor`` recorded of ``risk`` on ``version``.

        Needs the clinical or compliance role (``RoleRequired`` naming ``role``) and a
        risk the release carries (``AcknowledgementRefused`` naming ``risk``). One per
        release and risk: the store's unique constraint refuses a second
        (``AcknowledgementRefused``, nothing recorded). The row and its
        ``risk_acknowledged`` ledger event are written in one metadata transaction.
        """
        with self.governed(action="acknowledge risk", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"acknowledge risk {risk!r} of {version}")
            rel = self.registry.get(version)
            acting = self.require(
                actor,
                allowed=ACKNOWLEDGING_ROLES,
                action=f"role: acknowledging risk {risk!r} of {rel.version}",
                role=role,
            )
            carried = {r.id: r for r in self.risks(rel.version)}
            found = carried.get(risk)
            if found is None:
                raise AcknowledgementRefused(
                    f"risk: {risk!r} is not a risk of {rel.version} (its risks: "
                    f"{', '.join(carried) or 'none'}); nothing was recorded"
                )
            now = self.now()
            t_ack = t.risk_acknowledgements
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(t_ack).values(
                            version=rel.version,
                            risk=risk,
                            words=found.words,
                            person=actor,
                            role=acting,
                            reason=reason,
                            time=now,
                        )
                    )
                    seq = self.record(
                        type="risk_acknowledged",
                        actor=actor,
                        payload={
                            "release": rel.version,
                            "risk": risk,
                            "role": acting,
                            "reason": reason,
                            "words": found.words,
                            "observed": found.observed,
                            "limit": found.limit,
                            "identity": proof,
                        },
                    )
                    conn.execute(
                        sa.update(t_ack)
                        .where(t_ack.c.version == rel.version, t_ack.c.risk == risk)
                        .values(ledger_seq=seq)
                    )
            except sa.exc.IntegrityError:
                earlier = next(
                    (a for a in self.risk_acknowledgements(rel.version) if a.risk == risk), None
                )
                by = f" by {earlier.actor} ({earlier.role}) at {earlier.at}" if earlier else ""
                raise AcknowledgementRefused(
                    f"risk: {risk!r} of {rel.version} was already acknowledged{by} (rule: one "
                    "acknowledgement per release and risk); nothing was recorded"
                ) from None
        return Acknowledgement(
            release=rel.version,
            risk=risk,
            words=found.words,
            actor=actor,
            role=acting,
            reason=reason,
            at=now,
            seq=seq,
        )

    def _require_gates(self, version: str, names: tuple[Gate, ...], *, actor: str) -> None:
        from clinical_mlops.governance.policy import gate_approvals

        rel = self.registry.get(version)
        if Gate.APPROVALS in names:
            self.record_gate(
                version,
                gate_approvals(author=rel.author, approvals=self.approvals(version)),
                actor=actor,
            )
        stored = self.gates(version)
        for name in names:
            g = stored.get(name)
            if g is None:
                raise GateFailed(
                    f"{version}: gate {name} has not been evaluated; run "
                    f"`clinical-mlops registry validate {version}` (rule: gated promotion)"
                )
            if not g["passed"]:
                raise GateFailed(
                    f"{version}: gate {name} failed: {'; '.join(g['failures'])} "
                    "(rule: gated promotion, R-L3)",
                    results=stored,
                )

    def _require_external_validation(self, version: str) -> None:
        """Refuse approval while the spec's ``acceptance.min_external_sites`` is not met."""
        from clinical_mlops.governance.policy import external_validation_problems
        from clinical_mlops.registry.external import external_validations

        problems = external_validation_problems(
            self.registry.bundle(version).spec(), external_validations(self.registry, version)
        )
        if problems:
            raise GateFailed(f"{version}: {'; '.join(problems)} (rule: gated approval, R-V1)")

    # -- status changes --------------------------------------------------------------------
    def transition(
        self,
        version: str,
        *,
        to: str,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Release:
        """Return ``version`` after moving it to status ``to`` (checked, audited, metadata only)."""
        with self.governed(action=f"transition to {to}", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"{version}: move to {to}")
            rel = self.registry.get(version)
            # Bundle integrity is re-checked before every status change.
            self.registry.bundle(version)
            if to not in STATUSES:
                raise TransitionNotAllowed(
                    f"{version}: unknown status {to!r} (statuses: {', '.join(STATUSES)})"
                )
            key = (rel.status, to)
            resuming = rel.status == "suspended" and to == rel.suspended_from
            if resuming:
                allowed: tuple[str, ...] = (Role.COMPLIANCE,)
            elif key in TRANSITIONS:
                allowed = TRANSITIONS[key]
            else:
                nexts = sorted(b for (a, b) in TRANSITIONS if a == rel.status)
                if rel.status == "suspended" and rel.suspended_from:
                    nexts.append(rel.suspended_from)
                raise TransitionNotAllowed(
                    f"{version}: {rel.status} -> {to} is not an allowed transition (rule: "
                    f"lifecycle R-L2; from {rel.status} the allowed moves are "
                    f"{', '.join(nexts) or 'none'})"
                )
            acting = self.require(
                actor, allowed=allowed, action=f"{version}: {rel.status} -> {to}", role=role
            )
            if to == "validated":
                self._require_gates(version, _BEFORE_VALIDATED, actor=actor)
            if to in LIVE and not resuming:
                self._require_gates(version, tuple(Gate), actor=actor)
            if to == "approved" and not resuming:
                self._require_external_validation(rel.version)
            return self.registry.set_status(
                version,
                to=to,  # checked against STATUSES above
                actor=actor,
                role=acting,
                why=why,
                identity=proof,
            )

    def promote(
        self,
        version: str,
        *,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Release:
        """Return ``version`` moved one step along the lifecycle (draft -> ... -> approved)."""
        with self.governed(action="promote", actor=actor, version=version):
            rel = self.registry.get(version)
            if rel.status not in PROMOTION:
                raise TransitionNotAllowed(
                    f"{version}: cannot promote from {rel.status} (rule: lifecycle R-L2; "
                    "promotion goes draft -> validated -> clinically_reviewed -> "
                    "approved_limited -> approved)"
                )
        return self.transition(
            version,
            to=PROMOTION[rel.status],
            actor=actor,
            why=why,
            identity=identity,
            role=role,
        )

    def suspend(
        self,
        version: str,
        *,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Release:
        """Return ``version`` suspended (from approved_limited or approved)."""
        return self.transition(
            version, to="suspended", actor=actor, why=why, identity=identity, role=role
        )

    def resume(self, version: str, *, actor: str, why: str, identity: VerifiedIdentity) -> Release:
        """Return a suspended ``version`` back in the status it was suspended from."""
        rel = self.registry.get(version)
        return self.transition(
            version, to=rel.suspended_from or "approved", actor=actor, why=why, identity=identity
        )

    def retire(
        self,
        version: str,
        *,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Release:
        """Return ``version`` retired (no longer served; kept for audit)."""
        return self.transition(
            version, to="retired", actor=actor, why=why, identity=identity, role=role
        )

    def rollback(
        self,
        version: str,
        *,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> Release:
        """Return ``version`` made the task's active release again, in one step.

        ``version`` must be an approved release (an earlier one); the release it
        replaces keeps its status but stops being served. Needs the clinical or
        engineering role.
        """
        with self.governed(action="rollback", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"rollback to {version}")
            rel = self.registry.get(version)
            self.registry.bundle(version)
            acting = self.require(
                actor,
                allowed=(Role.CLINICAL, Role.ENGINEERING),
                action=f"rollback to {version}",
                role=role,
            )
            if rel.status != "approved":
                raise TransitionNotAllowed(
                    f"rollback to {version}: its status is {rel.status}; only an approved "
                    "release can be rolled back to (rule: rollback to an earlier approved release)"
                )
            current = self.registry.active(rel.task)
            if current and current.version == version:
                raise TransitionNotAllowed(
                    f"rollback to {version}: it is already the active release (rule: rollback "
                    "targets an earlier approved release)"
                )
            return self.registry.activate(
                version,
                actor=actor,
                action="rollback",
                why=f"{why} (role {acting}; from {current.version if current else 'none'})",
                identity=proof,
            )

    # -- rollout -----------------------------------------------------------------------------
    def set_rollout(
        self,
        version: str,
        *,
        site: str,
        mode: str,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Return the task's deployment manifest after serving ``version`` at ``site`` in ``mode``.

        It changes what runs at the bedside, so it is made by a verified ``identity``
        naming ``actor``, stored with the ``rollout_change`` in the ledger.

        ``approved_limited`` releases may run in pilot mode at named sites; only
        ``approved`` releases may run in full mode. ``shadow`` and ``silent`` never
        replace the release live at a site: they start a trial beside it
        (:meth:`start_trial`), and the manifest lists it under ``trials``.
        """
        if mode in TRIAL_MODES:
            self.start_trial(
                version, site=site, mode=mode, actor=actor, why=why, role=role, identity=identity
            )
            return self.registry.deployment_manifest(self.registry.get(version).task)
        with self.governed(action="rollout", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"rollout of {version}")
            rel = self.registry.get(version)
            self.require(
                actor,
                allowed=(Role.ENGINEERING, Role.CLINICAL),
                action=f"rollout of {version}",
                role=role,
            )
            if mode not in MODES:
                raise TransitionNotAllowed(
                    f"rollout of {version}: unknown mode {mode!r} (modes: {', '.join(MODES)})"
                )
            self._refuse_out_of_scope(version, site, act="rollout")
            allowed = MODES_BY_STATUS.get(rel.status, ())
            if mode not in allowed:
                raise TransitionNotAllowed(
                    f"rollout of {version} in {mode} mode: status {rel.status} allows "
                    f"{', '.join(allowed) or 'no rollout'} (rule: limited rollout before approval)"
                )
            if not site or (site == "*" and mode != "full"):
                raise TransitionNotAllowed(
                    f"rollout of {version}: {mode} mode needs a named site (rule: pilots name sites)"
                )
            return self.registry.place(
                version,
                site=site,
                mode=mode,  # checked against MODES above
                actor=actor,
                why=why,
                identity=proof,
            )

    def _refuse_out_of_scope(self, version: str, site: str, *, act: str) -> None:
        """Refuse serving a release recalibrated for one site anywhere else (rule: site scope)."""
        scope = self.registry.site_scope(version)
        if scope is not None and site != scope:
            raise TransitionNotAllowed(
                f"{act} of {version} at site {site!r}: the release was recalibrated for site "
                f"{scope!r} (its probabilities and sets were fitted on that site's stays); "
                f"site: expected {scope!r} (rule: a locally recalibrated release serves its "
                "site only)"
            )

    # -- trials ------------------------------------------------------------------------------
    def start_trial(
        self,
        version: str,
        *,
        site: str,
        mode: str,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Return the trial of ``version`` started at ``site``: scored beside the live release.

        A trial runs in ``silent`` mode (its records are shown to the governance team in
        review: the console's release page) or ``shadow`` mode (an engineering comparison
        only, ``registry trial``); either way nothing of it reaches a clinician and the
        release live at the site is served exactly as before. The candidate must be
        ``approved_limited`` or ``approved`` and not the release served at that site; a
        task's first release may run silent before any release of the task is approved.
        Engineering or clinical role. One running trial per release and site, held by
        the store (``TrialAlreadyRunning``).
        """
        with self.governed(action="trial_start", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"trial of {version}")
            rel = self.registry.get(version)
            acting = self.require(
                actor,
                allowed=(Role.ENGINEERING, Role.CLINICAL),
                action=f"trial of {version}",
                role=role,
            )
            if mode not in TRIAL_MODES:
                raise TransitionNotAllowed(
                    f"trial of {version}: mode {mode!r} is not a trial mode (trial modes: "
                    f"{', '.join(TRIAL_MODES)}; pilot and full are rollouts)"
                )
            if rel.status not in LIVE:
                raise TransitionNotAllowed(
                    f"trial of {version} in {mode} mode: its status is {rel.status}; a trial "
                    "needs approved_limited or approved (rule: limited approval before a trial)"
                )
            if not site or site == "*":
                raise TransitionNotAllowed(
                    f"trial of {version}: name the site it runs at, not {site or 'none'!r} "
                    "(rule: trials name sites)"
                )
            self._refuse_out_of_scope(version, site, act="trial")
            entry = self.registry.deployment_manifest(rel.task)["sites"]
            live = entry.get(site) or entry.get("*")
            if live is not None and live["release"] == rel.version:
                raise TransitionNotAllowed(
                    f"trial of {version} at {site}: it is the release served there in "
                    f"{live['mode']} mode; a trial compares a candidate with the live release"
                )
            return self.registry.start_trial(
                rel.version,
                site=site,
                mode=mode,  # checked against TRIAL_MODES above
                actor=actor,
                role=acting,
                why=why,
                identity=proof,
            )

    def end_trial(
        self,
        version: str,
        *,
        site: str,
        actor: str,
        why: str,
        identity: VerifiedIdentity,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Return the trial of ``version`` at ``site`` ended (engineering or clinical role),
        by a verified ``identity`` naming ``actor``."""
        with self.governed(action="trial_end", actor=actor, version=version):
            proof = self.bind(identity, actor, action=f"end the trial of {version}")
            rel = self.registry.get(version)
            acting = self.require(
                actor,
                allowed=(Role.ENGINEERING, Role.CLINICAL),
                action=f"end the trial of {version}",
                role=role,
            )
            return self.registry.end_trial(
                rel.version, site=site, actor=actor, role=acting, why=why, identity=proof
            )

    # -- views -------------------------------------------------------------------------------
    def risk_register(self, version: str) -> builtins.list[dict[str, Any]]:
        """Return each risk of ``version`` with its acknowledgement (``None`` while open)."""
        acknowledged = {a.risk: a for a in self.risk_acknowledgements(version)}
        return [
            r.to_json()
            | {"acknowledgement": a.to_json() if (a := acknowledged.get(r.id)) else None}
            for r in self.risks(version)
        ]

    def show(self, version: str) -> dict[str, Any]:
        """Return everything about ``version``: status, sha256, lineage, gates, approvals, history."""
        from clinical_mlops.registry.external import external_validations

        reg = self.registry
        rel = reg.get(version)
        bundle = reg.bundle(rel.version)
        lineage = bundle.read_json("lineage.json")
        lineage.setdefault("environment", {}).pop("packages", None)
        active = reg.active(rel.task)
        return rel.to_json() | {
            "active": bool(active and active.version == rel.version),
            "signature": {
                k: bundle.signature[k]
                for k in ("key_id", "signed_at", "expires_at", "workspace_id")
            },
            "files": bundle.manifest["files"],
            "workload": bundle.report().workload_summary(),
            "lineage": lineage,
            "gates": {
                name: {"passed": g["passed"], "evidence": g["evidence"], "failures": g["failures"]}
                for name, g in self.gates(rel.version).items()
            },
            "approvals": [a.to_json() for a in self.approvals(rel.version)],
            "risks": self.risk_register(rel.version),
            "external_validations": [v.to_json() for v in external_validations(reg, rel.version)],
            "history": reg.history(rel.version),
            "change": rel.change,
        }
