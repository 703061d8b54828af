"""The model registry (R-L2, R-A3): releases, statuses, gates, approvals, rollouts.

A release is a registered, signed bundle with a version ``<task>@<n>``. Its status
moves along the lifecycle::

    draft -> validated -> clinically_reviewed -> approved_limited -> approved -> retired
    approved_limited | approved -> suspended -> (back to the status it left)

and nowhere else. Each move names an actor, the role they act in (checked against
the roles the registry records for them) and a reason; ``draft -> validated``
needs gates 1-3 passed, ``-> approved_limited`` and ``-> approved`` need gate 4 as
well. Promotion, suspension and rollback change metadata only: the bundle on disk
is never rebuilt. Every change is a ledger event (``status_change``, ``approval``,
``deployment``, ``rollout_change``, ``gate_evaluated``) and every refusal a
``governance_refused`` event, with no state change.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from clinical_mlops import ledger
from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.database import open_metadata_engine
from clinical_mlops.errors import (
    BundleSignatureInvalid,
    GateFailed,
    GovernanceError,
    ReleaseNotFound,
    TransitionNotAllowed,
)
from clinical_mlops.governance.approvals import (
    APPROVER_ROLES,
    ROLES,
    Approval,
    Decision,
    check_approval,
    require_role,
)
from clinical_mlops.hashing import canonical_json
from clinical_mlops.registry import schema as t
from clinical_mlops.registry.bundle import Bundle, load_bundle
from clinical_mlops.workspace import Workspace

__all__ = [
    "LIVE",
    "MODES",
    "STATUSES",
    "TRANSITIONS",
    "Registry",
    "Release",
    "Status",
]

Status = Literal[
    "draft",
    "validated",
    "clinically_reviewed",
    "approved_limited",
    "approved",
    "retired",
    "suspended",
]
STATUSES: tuple[Status, ...] = (
    "draft",
    "validated",
    "clinically_reviewed",
    "approved_limited",
    "approved",
    "retired",
    "suspended",
)
LIVE = ("approved_limited", "approved")
Mode = Literal["shadow", "silent", "pilot", "full"]
MODES: tuple[Mode, ...] = ("shadow", "silent", "pilot", "full")
#: (from, to) -> roles that may make the move
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("draft", "validated"): ("engineering",),
    ("validated", "clinically_reviewed"): ("clinical",),
    ("clinically_reviewed", "approved_limited"): ("compliance", "engineering"),
    ("approved_limited", "approved"): ("compliance", "clinical"),
    **{(s, "retired"): ("compliance", "engineering") for s in STATUSES if s != "retired"},
    **{(s, "suspended"): ("clinical", "compliance", "engineering") for s in LIVE},
}
_NEXT = {
    "draft": "validated",
    "validated": "clinically_reviewed",
    "clinically_reviewed": "approved_limited",
    "approved_limited": "approved",
}
_MODES_BY_STATUS = {"approved_limited": ("shadow", "silent", "pilot"), "approved": MODES}


@dataclass(frozen=True)
class Release:
    """One registered release as the registry records it."""

    version: str
    task: str
    number: int
    bundle_sha256: str
    model_version: str
    path: str
    author: str
    registered: str
    status: str
    suspended_from: str | None
    threshold: float
    change: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "task": self.task,
            "status": self.status,
            "sha256": self.bundle_sha256,
            "model_version": self.model_version,
            "author": self.author,
            "registered": self.registered,
            "threshold": self.threshold,
            "suspended_from": self.suspended_from,
            "change_class": self.change.get("change_class"),
            "path": self.path,
        }


def _release(row: Any, workspace: Workspace) -> Release:
    m = dict(row._mapping)
    m["change"] = json.loads(m["change"])
    # A bundle in this workspace's bundles folder (content-addressed name) is read from there,
    # so a workspace restored or moved to another folder does not depend on the old folder.
    local = workspace.path("artifacts") / "bundles" / m["path"].rstrip("/").rsplit("/", 1)[-1]
    if local.is_dir():
        m["path"] = str(local)
    return Release(**m)


def _j(obj: Any) -> str:
    return canonical_json(obj).decode("utf-8")


class Registry:
    """The registry of one workspace (metadata database + ledger + key provider)."""

    def __init__(self, workspace: Workspace, *, clock: Clock | None = None, url: str | None = None):
        self.workspace = workspace
        self.clock: Clock = clock or SystemClock()
        self.engine = open_metadata_engine(url or workspace.database_url("meta"), t.metadata)

    @classmethod
    def open(cls, workspace: Workspace, *, clock: Clock | None = None) -> Registry:
        """Return the registry of ``workspace`` (tables created on first use)."""
        return cls(workspace, clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> str:
        return utc_iso(self.clock.now())

    # -- audit -----------------------------------------------------------------------------
    def record(self, *, type: str, actor: str, payload: dict[str, Any]) -> int:
        """Return the seq of one ledger entry appended with the registry's clock."""
        return ledger.record(
            self.workspace, type=type, actor=actor, payload=payload, clock=self.clock
        ).seq

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
            unknown = sorted(set(roles) - set(ROLES))
            if unknown or not roles:
                raise GovernanceError(
                    f"grant roles to {person!r}: unknown role(s) {unknown or roles} "
                    f"(rule: roles are {', '.join(ROLES)})"
                )
            if self.people():
                require_role(
                    person=actor,
                    held=self.roles_of(actor),
                    allowed=("compliance",),
                    action=f"grant roles to {person!r}",
                )
            elif "compliance" not in roles:
                raise GovernanceError(
                    "the first person registered must hold the compliance role "
                    "(rule: role grants are made by compliance)"
                )
            merged = sorted(self.roles_of(person) | set(roles))
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

    # -- releases --------------------------------------------------------------------------
    def register(self, bundle: Bundle, *, actor: str, why: str, role: str | None = None) -> Release:
        """Return the draft release made from the verified ``bundle``.

        The change against the task's current approved release is classified and
        stored with release notes (R-L6).
        """
        from clinical_mlops.registry.changes import classify_change

        with self.governed(action="register", actor=actor):
            bundle = load_bundle(self.workspace, bundle.path, clock=self.clock)
            acting = require_role(
                person=actor,
                held=self.roles_of(actor),
                allowed=("engineering",),
                action="register a release",
                role=role,
            )
            with self.engine.connect() as conn:
                dup = conn.execute(
                    sa.select(t.releases.c.version).where(
                        t.releases.c.bundle_sha256 == bundle.sha256
                    )
                ).scalar()
            if dup:
                raise GovernanceError(
                    f"bundle {bundle.sha256[:12]} is already registered as {dup} "
                    "(rule: one release per bundle)"
                )
            current = self.active(bundle.task)
            change = (
                classify_change(self.bundle(current.version), bundle).to_json()
                if current
                else {"change_class": "initial", "against": None, "changes": [], "notes": []}
            )
            with self.engine.begin() as conn:
                number = 1 + int(
                    conn.execute(
                        sa.select(sa.func.coalesce(sa.func.max(t.releases.c.number), 0)).where(
                            t.releases.c.task == bundle.task
                        )
                    ).scalar_one()
                )
                version = f"{bundle.task}@{number}"
                now = self.now()
                conn.execute(
                    sa.insert(t.releases).values(
                        version=version,
                        task=bundle.task,
                        number=number,
                        bundle_sha256=bundle.sha256,
                        model_version=bundle.model_version,
                        path=str(bundle.path),
                        author=str(bundle.release["author"]),
                        registered=now,
                        status="draft",
                        suspended_from=None,
                        threshold=bundle.threshold,
                        change=_j(change),
                    )
                )
                seq = self.record(
                    type="release_registered",
                    actor=actor,
                    payload={
                        "release": version,
                        "bundle_sha256": bundle.sha256,
                        "model_version": bundle.model_version,
                        "role": acting,
                        "change_class": change["change_class"],
                        "why": why,
                    },
                )
                conn.execute(
                    sa.insert(t.transitions).values(
                        version=version,
                        from_status=None,
                        to_status="draft",
                        actor=actor,
                        role=acting,
                        why=why,
                        time=now,
                        ledger_seq=seq,
                    )
                )
        return self.get(version)

    def _lookup(self, conn: sa.Connection, version: str) -> Release:
        row = conn.execute(sa.select(t.releases).where(t.releases.c.version == version)).first()
        if row is None and len(version) >= 8:
            rows = conn.execute(
                sa.select(t.releases).where(t.releases.c.bundle_sha256.startswith(version.lower()))
            ).all()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            known = conn.execute(sa.select(t.releases.c.version)).scalars().all()
            raise ReleaseNotFound(
                f"release {version!r} is not registered (known: {', '.join(known) or 'none'}); "
                "register a bundle with `clinical-mlops registry register`"
            )
        return _release(row, self.workspace)

    def get(self, version: str) -> Release:
        """Return the release ``version`` (or a unique bundle-hash prefix); ``ReleaseNotFound``."""
        with self.engine.connect() as conn:
            return self._lookup(conn, version)

    def list(self, *, task: str | None = None) -> list[Release]:
        """Return every release, by task and number."""
        q = sa.select(t.releases).order_by(t.releases.c.task, t.releases.c.number)
        if task:
            q = q.where(t.releases.c.task == task)
        with self.engine.connect() as conn:
            return [_release(r, self.workspace) for r in conn.execute(q)]

    def bundle(self, version: str) -> Bundle:
        """Return the verified bundle of release ``version`` (refuses a tampered bundle)."""
        return load_bundle(self.workspace, self.get(version).path, clock=self.clock)

    def active(self, task: str) -> Release | None:
        """Return the task's active approved release (the one served by default), if any."""
        with self.engine.connect() as conn:
            v = conn.execute(sa.select(t.active.c.version).where(t.active.c.task == task)).scalar()
        return self.get(v) if v else None

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
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.approvals)
                .where(t.approvals.c.version == version)
                .order_by(t.approvals.c.id)
            ).all()
        return [
            Approval(person=r.person, role=r.role, decision=r.decision, why=r.why, time=r.time)
            for r in rows
        ]

    def decide(
        self, version: str, *, person: str, role: str, decision: Decision, why: str
    ) -> Approval:
        """Return the approval (or rejection) ``person`` recorded on ``version`` in ``role``."""
        action = "approve" if decision == "approve" else "reject"
        with self.governed(action=action, actor=person, version=version):
            rel = self.get(version)
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
            )
            now = self.now()
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t.approvals).values(
                        version=version,
                        person=person,
                        role=role,
                        decision=decision,
                        why=why,
                        time=now,
                    )
                )
                self.record(
                    type="approval",
                    actor=person,
                    payload={"release": version, "role": role, "decision": decision, "why": why},
                )
        return Approval(person=person, role=role, decision=decision, why=why, time=now)

    def _require_gates(self, version: str, names: tuple[str, ...], *, actor: str) -> None:
        from clinical_mlops.governance.policy import gate_approvals

        rel = self.get(version)
        if "approvals" in names:
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

    # -- status changes --------------------------------------------------------------------
    def transition(
        self, version: str, *, to: str, actor: str, why: str, role: str | None = None
    ) -> Release:
        """Return ``version`` after moving it to status ``to`` (checked, audited, metadata only)."""
        with self.governed(action=f"transition to {to}", actor=actor, version=version):
            rel = self.get(version)
            # Bundle integrity is re-checked before every status change.
            self.bundle(version)
            if to not in STATUSES:
                raise TransitionNotAllowed(
                    f"{version}: unknown status {to!r} (statuses: {', '.join(STATUSES)})"
                )
            key = (rel.status, to)
            resuming = rel.status == "suspended" and to == rel.suspended_from
            if resuming:
                allowed: tuple[str, ...] = ("compliance",)
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
            acting = require_role(
                person=actor,
                held=self.roles_of(actor),
                allowed=allowed,
                action=f"{version}: {rel.status} -> {to}",
                role=role,
            )
            if to == "validated":
                self._require_gates(
                    version, ("schema_contract", "metrics", "evidence"), actor=actor
                )
            if to in LIVE and not resuming:
                self._require_gates(
                    version, ("schema_contract", "metrics", "evidence", "approvals"), actor=actor
                )
            self._apply(rel, to=to, actor=actor, role=acting, why=why, resuming=resuming)
        return self.get(version)

    def _apply(
        self, rel: Release, *, to: str, actor: str, role: str, why: str, resuming: bool = False
    ) -> None:
        now = self.now()
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"status": to}
            if to == "suspended":
                values["suspended_from"] = rel.status
            elif resuming:
                values["suspended_from"] = None
            conn.execute(
                sa.update(t.releases).where(t.releases.c.version == rel.version).values(**values)
            )
            seq = self.record(
                type="status_change",
                actor=actor,
                payload={
                    "release": rel.version,
                    "from_status": rel.status,
                    "to_status": to,
                    "role": role,
                    "why": why,
                },
            )
            conn.execute(
                sa.insert(t.transitions).values(
                    version=rel.version,
                    from_status=rel.status,
                    to_status=to,
                    actor=actor,
                    role=role,
                    why=why,
                    time=now,
                    ledger_seq=seq,
                )
            )
            if to == "approved" and not resuming:
                self._activate(conn, rel, actor=actor, action="promote", why=why, now=now)
            if to == "retired":
                conn.execute(sa.delete(t.rollouts).where(t.rollouts.c.version == rel.version))
                conn.execute(sa.delete(t.active).where(t.active.c.version == rel.version))

    def _activate(
        self, conn: sa.Connection, rel: Release, *, actor: str, action: str, why: str, now: str
    ) -> None:
        previous = conn.execute(
            sa.select(t.active.c.version).where(t.active.c.task == rel.task)
        ).scalar()
        conn.execute(sa.delete(t.active).where(t.active.c.task == rel.task))
        conn.execute(sa.insert(t.active).values(task=rel.task, version=rel.version, since=now))
        if previous and previous != rel.version:
            conn.execute(sa.delete(t.rollouts).where(t.rollouts.c.version == previous))
        # The release now serves every site not piloting something else.
        conn.execute(
            sa.delete(t.rollouts).where(t.rollouts.c.task == rel.task, t.rollouts.c.site == "*")
        )
        conn.execute(
            sa.insert(t.rollouts).values(
                task=rel.task, site="*", version=rel.version, mode="full", since=now
            )
        )
        self.record(
            type="deployment",
            actor=actor,
            payload={
                "release": rel.version,
                "action": action,
                "previous": previous,
                "threshold": rel.threshold,
                "why": why,
            },
        )
        if previous and previous != rel.version:
            old = self._lookup(conn, previous)
            if old.threshold != rel.threshold:
                self.record(
                    type="threshold_change",
                    actor=actor,
                    payload={
                        "release": rel.version,
                        "old": old.threshold,
                        "new": rel.threshold,
                        "why": why,
                    },
                )

    def promote(self, version: str, *, actor: str, why: str, role: str | None = None) -> Release:
        """Return ``version`` moved one step along the lifecycle (draft -> ... -> approved)."""
        with self.governed(action="promote", actor=actor, version=version):
            rel = self.get(version)
            if rel.status not in _NEXT:
                raise TransitionNotAllowed(
                    f"{version}: cannot promote from {rel.status} (rule: lifecycle R-L2; "
                    "promotion goes draft -> validated -> clinically_reviewed -> "
                    "approved_limited -> approved)"
                )
        return self.transition(version, to=_NEXT[rel.status], actor=actor, why=why, role=role)

    def suspend(self, version: str, *, actor: str, why: str, role: str | None = None) -> Release:
        """Return ``version`` suspended (from approved_limited or approved)."""
        return self.transition(version, to="suspended", actor=actor, why=why, role=role)

    def resume(self, version: str, *, actor: str, why: str) -> Release:
        """Return a suspended ``version`` back in the status it was suspended from."""
        rel = self.get(version)
        return self.transition(version, to=rel.suspended_from or "approved", actor=actor, why=why)

    def retire(self, version: str, *, actor: str, why: str, role: str | None = None) -> Release:
        """Return ``version`` retired (no longer served; kept for audit)."""
        return self.transition(version, to="retired", actor=actor, why=why, role=role)

    def rollback(self, version: str, *, actor: str, why: str, role: str | None = None) -> Release:
        """Return ``version`` made the task's active release again, in one step.

        ``version`` must be an approved release (an earlier one); the release it
        replaces keeps its status but stops being served. Needs the clinical or
        engineering role.
        """
        with self.governed(action="rollback", actor=actor, version=version):
            rel = self.get(version)
            self.bundle(version)
            acting = require_role(
                person=actor,
                held=self.roles_of(actor),
                allowed=("clinical", "engineering"),
                action=f"rollback to {version}",
                role=role,
            )
            if rel.status != "approved":
                raise TransitionNotAllowed(
                    f"rollback to {version}: its status is {rel.status}; only an approved "
                    "release can be rolled back to (rule: rollback to an earlier approved release)"
                )
            current = self.active(rel.task)
            if current and current.version == version:
                raise TransitionNotAllowed(
                    f"rollback to {version}: it is already the active release (rule: rollback "
                    "targets an earlier approved release)"
                )
            with self.engine.begin() as conn:
                self._activate(
                    conn,
                    rel,
                    actor=actor,
                    action="rollback",
                    why=f"{why} (role {acting}; from {current.version if current else 'none'})",
                    now=self.now(),
                )
        return self.get(version)

    # -- rollout -----------------------------------------------------------------------------
    def set_rollout(
        self, version: str, *, site: str, mode: str, actor: str, why: str, role: str | None = None
    ) -> dict[str, Any]:
        """Return the task's deployment manifest after serving ``version`` at ``site`` in ``mode``.

        ``approved_limited`` releases may run in shadow, silent or pilot mode at named
        sites; only ``approved`` releases may run in full mode.
        """
        with self.governed(action="rollout", actor=actor, version=version):
            rel = self.get(version)
            require_role(
                person=actor,
                held=self.roles_of(actor),
                allowed=("engineering", "clinical"),
                action=f"rollout of {version}",
                role=role,
            )
            if mode not in MODES:
                raise TransitionNotAllowed(
                    f"rollout of {version}: unknown mode {mode!r} (modes: {', '.join(MODES)})"
                )
            allowed = _MODES_BY_STATUS.get(rel.status, ())
            if mode not in allowed:
                raise TransitionNotAllowed(
                    f"rollout of {version} in {mode} mode: status {rel.status} allows "
                    f"{', '.join(allowed) or 'no rollout'} (rule: limited rollout before approval)"
                )
            if not site or (site == "*" and mode != "full"):
                raise TransitionNotAllowed(
                    f"rollout of {version}: {mode} mode needs a named site (rule: pilots name sites)"
                )
            with self.engine.begin() as conn:
                conn.execute(
                    sa.delete(t.rollouts).where(
                        t.rollouts.c.task == rel.task, t.rollouts.c.site == site
                    )
                )
                conn.execute(
                    sa.insert(t.rollouts).values(
                        task=rel.task, site=site, version=version, mode=mode, since=self.now()
                    )
                )
                self.record(
                    type="rollout_change",
                    actor=actor,
                    payload={"release": version, "site": site, "mode": mode, "why": why},
                )
        return self.deployment_manifest(rel.task)

    def deployment_manifest(self, task: str) -> dict[str, Any]:
        """Return the live deployment manifest of ``task``: which release runs where, how."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.rollouts).where(t.rollouts.c.task == task).order_by(t.rollouts.c.site)
            ).all()
        sites = {}
        for r in rows:
            rel = self.get(r.version)
            sites[r.site] = {
                "release": r.version,
                "mode": r.mode,
                "status": rel.status,
                "threshold": rel.threshold,
                "bundle_sha256": rel.bundle_sha256,
                "since": r.since,
            }
        active = self.active(task)
        return {
            "format": "clinical-mlops/deployment-manifest/v1",
            "task": task,
            "active": active.version if active else None,
            "sites": sites,
        }

    # -- views -------------------------------------------------------------------------------
    def history(self, version: str) -> builtins.list[dict[str, Any]]:
        """Return the status changes of ``version``, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.transitions)
                .where(t.transitions.c.version == version)
                .order_by(t.transitions.c.id)
            ).all()
        return [
            {
                "from": r.from_status,
                "to": r.to_status,
                "actor": r.actor,
                "role": r.role,
                "why": r.why,
                "time": r.time,
                "ledger_seq": r.ledger_seq,
            }
            for r in rows
        ]

    def show(self, version: str) -> dict[str, Any]:
        """Return everything about ``version``: status, sha256, lineage, gates, approvals, history."""
        rel = self.get(version)
        bundle = self.bundle(rel.version)
        lineage = bundle.read_json("lineage.json")
        lineage.setdefault("environment", {}).pop("packages", None)
        active = self.active(rel.task)
        return rel.to_json() | {
            "active": bool(active and active.version == rel.version),
            "signature": {
                k: bundle.signature[k]
                for k in ("key_id", "signed_at", "expires_at", "workspace_id")
            },
            "files": bundle.manifest["files"],
            "lineage": lineage,
            "gates": {
                name: {"passed": g["passed"], "evidence": g["evidence"], "failures": g["failures"]}
                for name, g in self.gates(rel.version).items()
            },
            "approvals": [a.to_json() for a in self.approvals(rel.version)],
            "history": self.history(rel.version),
            "change": rel.change,
        }
