"""The model registry (R-L2): what exists — releases, their status, where they run.

A release is a registered, signed bundle with a version ``<task>@<n>``. The registry
stores each release (bundle hash, model version, threshold, the change against the
release it follows), its current status and the history of status changes, the
task's active release and the rollout per site, and answers queries on them. Every
write is a ledger event (``release_registered``, ``status_change``, ``deployment``,
``threshold_change``, ``rollout_change``).

The registry checks no roles and no lifecycle rules: who may register, promote,
suspend, roll back or roll out is governance's (:mod:`clinical_mlops.governance.board`),
which calls the writes here only after its checks pass. Status changes and rollouts
change metadata only: the bundle on disk is never rebuilt.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.database import ensure_tables, open_metadata_engine
from clinical_mlops.errors import GovernanceError, ReleaseNotFound, TrialAlreadyRunning
from clinical_mlops.hashing import canonical_json
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry import schema as t
from clinical_mlops.registry.bundle import Bundle, load_bundle
from clinical_mlops.workspace import Workspace

__all__ = [
    "LIVE",
    "MODES",
    "STATUSES",
    "Mode",
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
#: the statuses in which a release may be served
LIVE: tuple[Status, ...] = ("approved_limited", "approved")
Mode = Literal["shadow", "silent", "pilot", "full"]
MODES: tuple[Mode, ...] = ("shadow", "silent", "pilot", "full")


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


def _proven(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the ledger payload's ``identity`` field, when the act was proven."""
    return {"identity": dict(identity)} if identity is not None else {}


def _trial(row: Any) -> dict[str, Any]:
    return {
        "release": row.version,
        "task": row.task,
        "site": row.site,
        "mode": row.mode,
        "started": row.started,
        "started_by": row.started_by,
        "why": row.why,
        "ended": row.ended,
        "ended_by": row.ended_by,
        "end_why": row.end_why,
    }


def _j(obj: Any) -> str:
    return canonical_json(obj).decode("utf-8")


class Registry:
    """The registry of one workspace (its metadata database), recording to its ledger."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        clock: Clock | None = None,
        url: str | None = None,
        ledger: Ledger | None = None,
        ledger_source: Callable[[], Ledger] | None = None,
        engine: Engine | None = None,
    ):
        self.workspace = workspace
        self.clock: Clock = clock or SystemClock()
        # an engine passed in (one per workspace, from Services) stays its owner's
        self._owns_engine = engine is None
        if engine is None:
            engine = open_metadata_engine(url or workspace.database_url("meta"), t.metadata)
        else:
            ensure_tables(engine, t.metadata)
        self.engine = engine
        self._ledger = ledger
        # where to get the ledger on first use when someone else owns it (a Services object)
        self._ledger_source = ledger_source
        self._owns_ledger = False

    @classmethod
    def open(
        cls, workspace: Workspace, *, clock: Clock | None = None, ledger: Ledger | None = None
    ) -> Registry:
        """Return the registry of ``workspace`` (tables created on first use).

        Pass the caller's open ``ledger`` to record into it; otherwise the registry opens
        the workspace's ledger on its first event and closes it with itself.
        """
        return cls(workspace, clock=clock, ledger=ledger)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
        if self._owns_ledger and self._ledger is not None:
            self._ledger.close()
            self._ledger, self._owns_ledger = None, False

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> str:
        return utc_iso(self.clock.now())

    # -- audit -----------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        """The ledger this registry records to (the caller's, or opened on first use)."""
        if self._ledger is None:
            if self._ledger_source is not None:
                self._ledger = self._ledger_source()
            else:
                self._ledger = Ledger.open(self.workspace, clock=self.clock)
                self._owns_ledger = True
        return self._ledger

    def record(self, *, type: str, actor: str, payload: dict[str, Any]) -> int:
        """Return the seq of one ledger entry appended to the registry's ledger."""
        return self.ledger.append(type=type, actor=actor, payload=payload).seq

    # -- releases --------------------------------------------------------------------------
    def verify(self, bundle: Bundle | str) -> Bundle:
        """Return the bundle at ``bundle`` (or its path) verified: hashes and signature."""
        path = bundle.path if isinstance(bundle, Bundle) else bundle
        return load_bundle(self.workspace, path, clock=self.clock)

    def add(
        self, bundle: Bundle, *, actor: str, role: str, why: str, against: str | None = None
    ) -> Release:
        """Return the draft release made from ``bundle`` (verified by :meth:`verify`).

        The change against the task's active release — or against release ``against``
        when named (a local recalibration names its parent) — is classified and stored
        with release notes (R-L6). Refuses a bundle already registered (one release per
        bundle). Checks no role: governance registers (``Governance.register``) after its
        checks.
        """
        from clinical_mlops.registry.changes import classify_change

        with self.engine.connect() as conn:
            dup = conn.execute(
                sa.select(t.releases.c.version).where(t.releases.c.bundle_sha256 == bundle.sha256)
            ).scalar()
        if dup:
            raise GovernanceError(
                f"bundle {bundle.sha256[:12]} is already registered as {dup} "
                "(rule: one release per bundle)"
            )
        current = self.get(against) if against else self.active(bundle.task)
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
                    "role": role,
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
                    role=role,
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

    def site_scope(self, version: str) -> str | None:
        """Return the one site release ``version`` may serve (a local recalibration), or None.

        Read from the signed ``deployment.json``: a release recalibrated at a site carries
        that site, and is rolled out, trialled and served there only.
        """
        scope = self.bundle(version).read_json("deployment.json").get("site")
        return str(scope) if scope else None

    def active(self, task: str) -> Release | None:
        """Return the task's active approved release (the one served by default), if any."""
        with self.engine.connect() as conn:
            v = conn.execute(sa.select(t.active.c.version).where(t.active.c.task == task)).scalar()
        return self.get(v) if v else None

    # -- status and deployment (written by governance after its checks) ---------------------
    def set_status(
        self,
        version: str,
        *,
        to: Status,
        actor: str,
        role: str,
        why: str,
        identity: Mapping[str, Any] | None = None,
    ) -> Release:
        """Return ``version`` with status ``to``, recorded with its history and ledger event.

        Moving to ``suspended`` remembers the status left; moving a suspended release
        back to that status clears it. Reaching ``approved`` (not by resuming) makes the
        release the task's active one; retiring removes it from every rollout. Checks
        no rule: governance decides which moves are allowed and who may make them, and
        passes the verified ``identity`` of who did, recorded in the ledger entries.
        """
        rel = self.get(version)
        resuming = rel.status == "suspended" and to == rel.suspended_from
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
                    **({"identity": dict(identity)} if identity is not None else {}),
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
                self._activate(
                    conn, rel, actor=actor, action="promote", why=why, now=now, identity=identity
                )
            if to == "retired":
                conn.execute(sa.delete(t.rollouts).where(t.rollouts.c.version == rel.version))
                running = conn.execute(
                    sa.select(t.trials).where(
                        t.trials.c.version == rel.version, t.trials.c.ended.is_(None)
                    )
                ).all()
                for tr in running:
                    conn.execute(
                        sa.update(t.trials)
                        .where(t.trials.c.id == tr.id)
                        .values(ended=now, ended_by=actor, end_why=f"release retired: {why}")
                    )
                    self.record(
                        type="trial_ended",
                        actor=actor,
                        payload={
                            "release": rel.version,
                            "site": tr.site,
                            "mode": tr.mode,
                            "role": role,
                            "why": f"release retired: {why}",
                        },
                    )
                conn.execute(sa.delete(t.active).where(t.active.c.version == rel.version))
        return self.get(version)

    def activate(
        self,
        version: str,
        *,
        actor: str,
        action: str,
        why: str,
        identity: Mapping[str, Any] | None = None,
    ) -> Release:
        """Return ``version`` made the task's active release, served in full mode at ``*``.

        A release recalibrated for one site (:meth:`site_scope`) is instead served in full
        mode at that site only; the task's active release is left as it was.

        The release it replaces stops being served (its rollouts end); its status is
        unchanged. Records a ``deployment`` event (and a ``threshold_change`` when the
        operating threshold differs). Checks no rule (see ``Governance.rollback``).
        """
        rel = self.get(version)
        with self.engine.begin() as conn:
            self._activate(
                conn, rel, actor=actor, action=action, why=why, now=self.now(), identity=identity
            )
        return self.get(version)

    def _activate(
        self,
        conn: sa.Connection,
        rel: Release,
        *,
        actor: str,
        action: str,
        why: str,
        now: str,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        # A release recalibrated for one site serves that site only, in full; the task's
        # active release (serving every other site) then stays as it is.
        scope = self.site_scope(rel.version)
        previous = None
        if scope is None:
            previous = conn.execute(
                sa.select(t.active.c.version).where(t.active.c.task == rel.task)
            ).scalar()
            conn.execute(sa.delete(t.active).where(t.active.c.task == rel.task))
            conn.execute(sa.insert(t.active).values(task=rel.task, version=rel.version, since=now))
            if previous and previous != rel.version:
                conn.execute(sa.delete(t.rollouts).where(t.rollouts.c.version == previous))
        # The release now serves its site, or every site not piloting something else.
        site = scope or "*"
        conn.execute(
            sa.delete(t.rollouts).where(t.rollouts.c.task == rel.task, t.rollouts.c.site == site)
        )
        conn.execute(
            sa.insert(t.rollouts).values(
                task=rel.task, site=site, version=rel.version, mode="full", since=now
            )
        )
        self.record(
            type="deployment",
            actor=actor,
            payload={
                "release": rel.version,
                "action": action,
                **({"site": scope} if scope else {"previous": previous}),
                "threshold": rel.threshold,
                "why": why,
                **({"identity": dict(identity)} if identity is not None else {}),
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

    def place(
        self,
        version: str,
        *,
        site: str,
        mode: Mode,
        actor: str,
        why: str,
        identity: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the task's deployment manifest after serving ``version`` at ``site`` in ``mode``.

        Replaces whatever ran at ``site``; records a ``rollout_change`` event (with the
        ``identity`` that proved it). Checks no rule (see ``Governance.set_rollout``).
        """
        rel = self.get(version)
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
                payload={"release": version, "site": site, "mode": mode, "why": why}
                | _proven(identity),
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
            "trials": [
                tr | {"status": self.get(tr["release"]).status} for tr in self.trials(task=task)
            ],
        }

    # -- trials (written by governance after its checks) -----------------------------------
    def start_trial(
        self,
        version: str,
        *,
        site: str,
        mode: Mode,
        actor: str,
        role: str,
        why: str,
        identity: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the trial of ``version`` started at ``site`` in ``mode`` beside the live release.

        Records a ``trial_started`` event. The store holds one running trial per (task,
        site, release): a second one raises ``TrialAlreadyRunning`` and writes nothing.
        Checks no rule (see ``Governance.start_trial``).
        """
        rel = self.get(version)
        now = self.now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t.trials).values(
                        task=rel.task,
                        site=site,
                        version=rel.version,
                        mode=mode,
                        started=now,
                        started_by=actor,
                        why=why,
                    )
                )
                self.record(
                    type="trial_started",
                    actor=actor,
                    payload={
                        "release": rel.version,
                        "site": site,
                        "mode": mode,
                        "role": role,
                        "why": why,
                    }
                    | _proven(identity),
                )
        except sa.exc.IntegrityError:
            raise TrialAlreadyRunning(
                f"trial of {rel.version} at {site}: one is already running there (rule: one "
                "trial per release and site); end it first to start another"
            ) from None
        return next(
            tr
            for tr in self.trials(task=rel.task)
            if tr["site"] == site and tr["release"] == rel.version
        )

    def end_trial(
        self,
        version: str,
        *,
        site: str,
        actor: str,
        role: str,
        why: str,
        identity: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the trial of ``version`` at ``site`` ended now, with a ``trial_ended`` event.

        Raises ``GovernanceError`` when no trial of it runs there (nothing written).
        """
        rel = self.get(version)
        now = self.now()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(t.trials).where(
                    t.trials.c.version == rel.version,
                    t.trials.c.site == site,
                    t.trials.c.ended.is_(None),
                )
            ).first()
            if row is None:
                raise GovernanceError(
                    f"end trial of {rel.version} at {site}: no trial of it is running there "
                    f"(running: {', '.join(tr['site'] for tr in self.trials(version=rel.version)) or 'none'})"
                )
            conn.execute(
                sa.update(t.trials)
                .where(t.trials.c.id == row.id)
                .values(ended=now, ended_by=actor, end_why=why)
            )
            self.record(
                type="trial_ended",
                actor=actor,
                payload={
                    "release": rel.version,
                    "site": site,
                    "mode": row.mode,
                    "role": role,
                    "why": why,
                }
                | _proven(identity),
            )
        return _trial(row) | {"ended": now, "ended_by": actor, "end_why": why}

    def trials(
        self, *, task: str | None = None, version: str | None = None, running: bool = True
    ) -> builtins.list[dict[str, Any]]:
        """Return the trials of ``task`` or of release ``version`` (running only, by default).

        Oldest first; each names the release, site, mode, who started it and why, and
        when it ended (``None`` while running).
        """
        q = sa.select(t.trials).order_by(t.trials.c.id)
        if task is not None:
            q = q.where(t.trials.c.task == task)
        if version is not None:
            q = q.where(t.trials.c.version == version)
        if running:
            q = q.where(t.trials.c.ended.is_(None))
        with self.engine.connect() as conn:
            return [_trial(r) for r in conn.execute(q)]

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
