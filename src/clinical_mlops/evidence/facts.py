"""Everything the evidence documents of one release say, read once, with where each part lives.

:func:`gather_facts` reads the release from the registry, its verified bundle (a
tampered bundle raises ``BundleSignatureInvalid`` and nothing is written), the
governance record (approvals, status history, gates, risk acknowledgements, review
schedule, incidents, trials, external validations, site recalibrations), the
monitoring rules, the workspace's alert routing and the monitored windows — all as
of one time. The documents (:mod:`clinical_mlops.evidence`) only read a
:class:`ReleaseFacts` and point into it with :meth:`ReleaseFacts.bundle`,
:meth:`ReleaseFacts.ledger`, :meth:`ReleaseFacts.registry`,
:meth:`ReleaseFacts.monitoring`, :meth:`ReleaseFacts.spec_pointer` and
:meth:`ReleaseFacts.workspace_pointer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clinical_mlops.clock import SystemClock, utc_iso
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evidence.fields import Pointer
from clinical_mlops.hashing import sha256_bytes

if TYPE_CHECKING:
    from clinical_mlops.tasks.spec import TaskSpec
    from clinical_mlops.workspace import Workspace

__all__ = ["GOVERNANCE_EVENTS", "LocalPerformance", "ReleaseFacts", "gather_facts", "parse_time"]

#: the ledger entry types that record what happened to a release
GOVERNANCE_EVENTS = (
    "release_registered",
    "gate_evaluated",
    "risk_acknowledged",
    "approval",
    "status_change",
    "deployment",
    "rollout_change",
    "threshold_change",
    "trial_started",
    "trial_ended",
    "external_validation_recorded",
    "review",
    "escalation",
    "evidence_written",
)


def parse_time(value: str) -> datetime:
    """Return the aware time of an ISO-8601 text (``Z`` or an offset; UTC when none)."""
    from datetime import UTC

    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LocalPerformance:
    """Validity and fairness of the release on this site's own patients, from monitoring.

    Read from the newest monitored window at or before ``as_of`` that had enough
    linked outcomes to measure discrimination (``window_end``). ``subgroup_auroc``
    maps ``attribute=group`` to its AUROC (None where too few outcomes), ``gaps`` the
    largest AUROC gap per attribute; ``n_windows`` counts the monitored windows up to
    ``as_of``, ``first_window`` is the earliest one.
    """

    window_end: str
    first_window: str
    n_windows: int
    n_outcomes: int
    n_outcome_positives: int | None
    auroc: float | None
    auroc_se: float | None
    auroc_degradation: float | None
    ece: float | None
    brier: float | None
    calibration_slope: float | None
    calibration_intercept: float | None
    prevalence: float | None
    subgroup_auroc: dict[str, float | None]
    gaps: dict[str, float | None]
    quantities: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "quantities"}
        return out


@dataclass(frozen=True)
class ReleaseFacts:
    """The facts of one release as of ``as_of``; documents point into them.

    Attributes:
        version, task, as_of (aware datetime), as_of_iso (``...Z``)
        release: the registry record (``Release.to_json()``: status, threshold,
            registered, author, change, bundle_sha256 ...) with ``status`` as of ``as_of``
        bundle_name, bundle_sha256 (the manifest hash: the release's identity),
        signature (key_id, signed_at, expires_at, workspace_id), files (bundle file ->
        SHA-256 from the signed manifest)
        report, model_card, lineage, deployment, release_json, task_spec_json,
        feature_schema, snapshot_manifest: the bundle's JSON documents as signed
        spec: the sealed task spec (``TaskSpec``) of the bundle
        history: status changes up to ``as_of`` (from, to, actor, role, why, time, ledger_seq)
        gates: gate -> {passed, evidence, failures, actor, time, seq}
        approvals: [{person, role, decision, why, time, seq}] up to ``as_of``
        risks: the risk register ({id, kind, words, observed, limit, criterion}), each
            with its acknowledgement ({actor, role, reason, at, seq}) or None
        review: the periodic review status (interval_days, last_review, due, overdue)
        incidents: incidents naming this release or its model, opened up to ``as_of``
        external_validations: recorded external validations (sites, years, n, auroc, seq ...)
        site_recalibrations: releases of the task recalibrated at a site
            ({release, site, status, bundle_sha256})
        trials: silent/shadow trials of this release (running and ended)
        rollout: site -> {mode, since} where this release runs now
        active: the task's active release (None when none)
        monitoring_rules: rule -> {severity, owner_role, action, kind}
        workload: {review_budget, max_open_cases, max_review_latency_hours}
        alerting: the routing of the workspace's alerting.yaml ({default, rules,
            auto_suspend}: who owns each rule's alerts; None when it declares none),
            alerting_sha256 the file's hash
        alerts: the monitoring alerts of this release opened up to ``as_of``
        local: :class:`LocalPerformance` (None when no monitored window with outcomes
            exists at or before ``as_of``)
        events: ledger entries about this release up to ``as_of``
            ({seq, type, time, actor, leaf_hash, payload})
        ledger_origin, ledger_size (as read)
    """

    version: str
    task: str
    as_of: datetime
    as_of_iso: str
    release: dict[str, Any]
    bundle_name: str
    bundle_sha256: str
    signature: dict[str, Any]
    files: dict[str, str]
    report: dict[str, Any]
    model_card: dict[str, Any]
    lineage: dict[str, Any]
    deployment: dict[str, Any]
    release_json: dict[str, Any]
    task_spec_json: dict[str, Any]
    feature_schema: dict[str, Any]
    snapshot_manifest: dict[str, Any]
    spec: TaskSpec
    history: list[dict[str, Any]]
    gates: dict[str, dict[str, Any]]
    approvals: list[dict[str, Any]]
    risks: list[dict[str, Any]]
    review: dict[str, Any]
    incidents: list[dict[str, Any]]
    external_validations: list[dict[str, Any]]
    site_recalibrations: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    rollout: dict[str, dict[str, Any]]
    active: str | None
    monitoring_rules: dict[str, dict[str, Any]]
    workload: dict[str, Any]
    alerting: dict[str, Any] | None
    alerting_sha256: str | None
    alerts: list[dict[str, Any]]
    local: LocalPerformance | None
    events: list[dict[str, Any]]
    ledger_origin: str
    ledger_size: int
    _leaf: dict[int, str] = field(default_factory=dict, repr=False)

    # -- pointers ---------------------------------------------------------------------------
    def bundle(self, file: str, path: str = "") -> Pointer:
        """Return a pointer to ``file`` of the signed bundle (``path`` a JSON pointer in it).

        ``KeyError`` when the bundle has no such file: a document must not point at
        evidence the release does not carry.
        """
        digest = self.files[file]
        return Pointer("bundle", f"{file}#{path}" if path else file, digest)

    def ledger(self, seq: int, what: str) -> Pointer:
        """Return a pointer to ledger entry ``seq`` (``what`` says what it records)."""
        return Pointer("ledger", f"seq {seq} ({what})", self._leaf.get(seq))

    def registry(self, what: str) -> Pointer:
        """Return a pointer to the registry's record of this release (``what``: which part)."""
        return Pointer("registry", f"{self.version} {what}")

    def monitoring(self, what: str) -> Pointer:
        """Return a pointer to the monitoring store (``what``: window, rule or alert)."""
        return Pointer("monitoring", what)

    def spec_pointer(self, path: str) -> Pointer:
        """Return a pointer into the signed ``task_spec.json`` (a JSON pointer ``path``)."""
        return self.bundle("task_spec.json", path)

    def workspace_pointer(self, what: str, sha256: str | None = None) -> Pointer:
        """Return a pointer to a workspace file or setting (``alerting.yaml#/rules``...)."""
        return Pointer("workspace", what, sha256)

    # -- look-ups ---------------------------------------------------------------------------
    def events_of(self, *types: str) -> list[dict[str, Any]]:
        """Return this release's ledger events of ``types``, oldest first."""
        return [e for e in self.events if e["type"] in types]

    def last_event(self, *types: str) -> dict[str, Any] | None:
        """Return the newest ledger event of ``types`` about this release, else None."""
        found = self.events_of(*types)
        return found[-1] if found else None

    def feature_index(self, name: str) -> int:
        """Return the position of feature ``name`` in ``task_spec.json#/features``."""
        for i, f in enumerate(self.task_spec_json["features"]):
            if f["name"] == name:
                return i
        raise KeyError(f"task {self.task}: no feature {name!r}")


def _time_ok(value: Any, limit: str) -> bool:
    return isinstance(value, str) and parse_time(value) <= parse_time(limit)


def _local(workspace: Workspace, version: str, as_of: datetime) -> LocalPerformance | None:
    """Return the local validity of ``version`` from its monitored windows up to ``as_of``."""
    from clinical_mlops.monitoring.runs import stored_windows

    windows = stored_windows(workspace, version, until=as_of)
    measured = [w for w in windows if not w.idle and w.quantities.get("auroc") is not None]
    if not measured:
        return None
    last = measured[-1]
    q = last.quantities

    def num(key: str) -> float | None:
        v = q.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return LocalPerformance(
        window_end=last.at_iso,
        first_window=windows[0].at_iso,
        n_windows=len(windows),
        n_outcomes=int(q.get("n_outcomes") or 0),
        n_outcome_positives=(
            int(q["n_outcome_positives"]) if q.get("n_outcome_positives") is not None else None
        ),
        auroc=num("auroc"),
        auroc_se=num("auroc_se"),
        auroc_degradation=num("auroc_degradation"),
        ece=num("ece"),
        brier=num("brier"),
        calibration_slope=num("calibration_slope"),
        calibration_intercept=num("calibration_intercept"),
        prevalence=num("prevalence"),
        subgroup_auroc={k.split(":", 1)[1]: num(k) for k in sorted(q) if k.startswith("auroc:")},
        gaps={k.split(":", 1)[1]: num(k) for k in sorted(q) if k.startswith("gap:")},
        quantities=dict(q),
    )


def _release_events(
    ledger: Any, version: str, model_version: str, limit: str
) -> list[dict[str, Any]]:
    """Return the ledger events about ``version`` (or its model) written up to ``limit``."""
    out = []
    for view in ledger.read_from(0, types=GOVERNANCE_EVENTS):
        entry, payload = view.entry, view.payload or {}
        if not _time_ok(entry.time, limit):
            break
        about = payload.get("release") or payload.get("model_version")
        if about not in (version, model_version):
            continue
        out.append(
            {
                "seq": entry.seq,
                "type": entry.type,
                "time": entry.time,
                "actor": entry.actor,
                "leaf_hash": entry.leaf_hash,
                "payload": payload,
            }
        )
    return out


def gather_facts(
    workspace: Workspace, version: str, *, as_of: datetime | None = None
) -> ReleaseFacts:
    """Return the facts of release ``version`` as of ``as_of`` (default: now).

    Raises ``ReleaseNotFound`` for an unknown release, ``BundleSignatureInvalid`` for a
    bundle that no longer verifies, and ``ValueInvalid`` for a time in the future or
    before the release was registered (no evidence can be stated as of then).
    """
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.governance.incidents import list_incidents
    from clinical_mlops.governance.reviews import review_status
    from clinical_mlops.monitoring.alerts import list_alerts
    from clinical_mlops.monitoring.routing import load_alerting
    from clinical_mlops.monitoring.rules import RULE_KINDS, rule_table, workload_limits
    from clinical_mlops.registry.external import external_validations
    from clinical_mlops.registry.registry import Registry

    with Registry.open(workspace) as reg, Governance(reg) as gov:
        rel = reg.get(version)
        now = reg.clock.now()
        at = now if as_of is None else as_of
        if at.tzinfo is None:
            raise ValueInvalid("as_of: needs a time zone (e.g. 2026-03-02T09:00:00Z)")
        if at > now:
            raise ValueInvalid(
                f"as_of: {utc_iso(at)} is in the future (now {utc_iso(now)}); evidence can only "
                "state what is known"
            )
        if at < parse_time(rel.registered):
            raise ValueInvalid(
                f"as_of: {utc_iso(at)} is before release {rel.version} was registered "
                f"({rel.registered}); choose a time at or after registration"
            )
        limit = utc_iso(at)
        bundle = reg.bundle(rel.version)
        spec = bundle.spec()
        deployment = bundle.read_json("deployment.json")
        history = [h for h in reg.history(rel.version) if _time_ok(h["time"], limit)]
        status = history[-1]["to"] if history else rel.status
        led = reg.ledger
        events = _release_events(led, rel.version, rel.model_version, limit)
        leaf = {e["seq"]: e["leaf_hash"] for e in events}

        def seq_of(kind: str, **match: Any) -> int | None:
            for e in reversed(events):
                if e["type"] == kind and all(e["payload"].get(k) == v for k, v in match.items()):
                    return int(e["seq"])
            return None

        gates = {
            name: g | {"seq": seq_of("gate_evaluated", gate=name)}
            for name, g in gov.gates(rel.version).items()
            if _time_ok(g["time"], limit)
        }
        approvals = [
            a.to_json() | {"seq": seq_of("approval", role=a.role, decision=a.decision)}
            for a in gov.approvals(rel.version)
            if _time_ok(a.time, limit)
        ]
        risks = []
        for r in gov.risk_register(rel.version):
            ack = r.get("acknowledgement")
            if ack is not None and not _time_ok(ack.get("at"), limit):
                ack = None
            risks.append(r | {"acknowledgement": ack})
        review = review_status(gov, rel.version)
        incidents = [
            i
            for i in list_incidents(gov)
            if _time_ok(i.get("opened"), limit) and rel.version in json.dumps(i, default=str)
        ]
        externals = [
            v.to_json() | {"path": None}
            for v in external_validations(reg, rel.version)
            if _time_ok(v.at, limit)
        ]
        recalibrations = []
        for other in reg.list(task=rel.task):
            if other.version == rel.version or not _time_ok(other.registered, limit):
                continue
            site = reg.site_scope(other.version)
            if site:
                recalibrations.append(
                    {
                        "release": other.version,
                        "site": site,
                        "status": other.status,
                        "bundle_sha256": other.bundle_sha256,
                    }
                )
        trials = [
            tr
            for tr in reg.trials(version=rel.version, running=False)
            if _time_ok(tr.get("started"), limit)
        ]
        manifest = reg.deployment_manifest(rel.task)
        rollout = {
            site: {"mode": e["mode"], "since": e["since"]}
            for site, e in manifest["sites"].items()
            if e["release"] == rel.version
        }
        origin, size = led.origin, led.size()
    rules = {
        name: rule.model_dump(mode="json") | {"kind": RULE_KINDS.get(name)}
        for name, rule in sorted(rule_table(spec).items())
    }
    limits = workload_limits(spec, deployment)
    alerting = load_alerting(workspace)
    alerting_path = workspace.path("alerting")
    alerts = [
        a.to_json()
        for a in list_alerts(workspace)
        if a.release == rel.version and _time_ok(a.opened_at, limit)
    ]
    return ReleaseFacts(
        version=rel.version,
        task=rel.task,
        as_of=at,
        as_of_iso=limit,
        release=rel.to_json() | {"path": None, "status": status, "change": rel.change},
        bundle_name=bundle.path.name,
        bundle_sha256=bundle.sha256,
        signature={
            k: bundle.signature[k] for k in ("key_id", "signed_at", "expires_at", "workspace_id")
        },
        files=dict(bundle.manifest["files"]),
        report=bundle.read_json("report.json"),
        model_card=bundle.read_json("model_card.json"),
        lineage=bundle.read_json("lineage.json"),
        deployment=deployment,
        release_json=bundle.read_json("release.json"),
        task_spec_json=bundle.read_json("task_spec.json"),
        feature_schema=bundle.read_json("feature_schema.json"),
        snapshot_manifest=bundle.read_json("snapshot_manifest.json"),
        spec=spec,
        history=history,
        gates=gates,
        approvals=approvals,
        risks=risks,
        review=review,
        incidents=incidents,
        external_validations=externals,
        site_recalibrations=recalibrations,
        trials=trials,
        rollout=rollout,
        active=manifest["active"],
        monitoring_rules=rules,
        workload={
            "review_budget": limits.review_budget,
            "max_open_cases": limits.max_open_cases,
            "max_review_latency_hours": limits.max_review_latency_hours,
        },
        alerting=(
            None
            if alerting is None
            else alerting.model_dump(mode="json", include={"default", "rules", "auto_suspend"})
        ),
        alerting_sha256=(
            sha256_bytes(alerting_path.read_bytes()) if alerting is not None else None
        ),
        alerts=alerts,
        local=_local(workspace, rel.version, at),
        events=events,
        ledger_origin=origin,
        ledger_size=size,
        _leaf=leaf,
    )


def now_utc() -> datetime:
    """Return the current time (the system clock), for callers without a clock of their own."""
    return SystemClock().now()
