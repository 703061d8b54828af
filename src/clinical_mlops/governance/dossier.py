"""The dossier of a release: what a person must see before deciding on it, and a guard
that refuses a decision when the release changed since it was shown.

:func:`release_dossier` gathers, for one release, the validation summary (from the
signed ``report.json``), the model card, the changes and clinical release notes
against the task's current release (``registry.changes``), the gate results, the
approvals so far and the status history. Its :func:`release_fingerprint` is a
SHA-256 over everything a decision depends on — status, bundle, threshold, gate
outcomes, approvals, the task's active release and rollout — so a form can carry it
and the act can check it: :func:`decide_release`, :func:`suspend_release`,
:func:`rollback_release` and :func:`resume_release` raise
:class:`~clinical_mlops.errors.ReleaseChanged` (recorded as a ``governance_refused``
event, nothing else written) when the fingerprint no longer matches.

:func:`service_status` is the board of every task: the active release, the rollout
per site, each release's status and review due date.
"""

from __future__ import annotations

import hashlib
from typing import Any

from clinical_mlops.errors import GovernanceError, ReleaseChanged
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.governance.approvals import Decision
from clinical_mlops.governance.reviews import review_status
from clinical_mlops.hashing import canonical_json
from clinical_mlops.registry.registry import LIVE, Registry, Release

__all__ = [
    "PENDING_DECISION",
    "decide_release",
    "open_alert_review",
    "release_dossier",
    "release_fingerprint",
    "resume_release",
    "review_evidence",
    "rollback_release",
    "service_status",
    "suspend_release",
    "validation_summary",
]

#: statuses in which approvals (gate 4) are recorded
PENDING_DECISION = ("validated", "clinically_reviewed")


def release_fingerprint(registry: Registry, version: str) -> str:
    """Return the SHA-256 of the state a decision on ``version`` depends on."""
    rel = registry.get(version)
    gates = {
        name: {"passed": g["passed"], "failures": g["failures"]}
        for name, g in sorted(registry.gates(rel.version).items())
    }
    manifest = registry.deployment_manifest(rel.task)
    state = {
        "version": rel.version,
        "status": rel.status,
        "suspended_from": rel.suspended_from,
        "bundle_sha256": rel.bundle_sha256,
        "threshold": rel.threshold,
        "gates": gates,
        "approvals": [a.to_json() for a in registry.approvals(rel.version)],
        "active": manifest["active"],
        "rollout": {
            s: [e["release"], e["mode"], e["status"]] for s, e in manifest["sites"].items()
        },
    }
    return hashlib.sha256(canonical_json(state)).hexdigest()


def validation_summary(report: ValidationReport) -> dict[str, Any]:
    """Return the headline evidence of a validation report, as a reviewer reads it first."""
    test, baseline = report.test, report.baseline
    return {
        "title": report.task.title,
        "n_test": test.n,
        "n_positive": test.n_positive,
        "test_years": report.cohort.test_set.years,
        "auroc": test.auroc,
        "auroc_ci": test.auroc_ci,
        "ece": test.ece,
        "brier": test.brier,
        "threshold": test.threshold,
        "sensitivity": test.sensitivity,
        "specificity": test.specificity,
        "ppv": test.ppv,
        "conformal_coverage": test.conformal_coverage,
        "conformal_target": report.conformal.target_coverage,
        "alerts_per_100": report.workload.alerts_per_100,
        "baseline_name": baseline.name,
        "baseline_auroc": baseline.auroc,
        "auroc_gain": baseline.auroc_difference.value,
        "auroc_gain_ci": baseline.auroc_difference.ci,
        "subgroup_auroc": {key: row.auroc for key, row in sorted(report.subgroups.items())},
        "fairness_alerts": [a.message for a in report.fairness_alerts],
        "limitations": list(report.limitations),
    }


def _changes(registry: Registry, rel: Release) -> dict[str, Any]:
    """Return the change report against the task's active release (as it is now)."""
    from clinical_mlops.registry.changes import classify_change

    active = registry.active(rel.task)
    if active is None:
        return {"change_class": "initial", "against": None, "changes": [], "notes": []}
    if active.version == rel.version:
        return rel.change
    report = classify_change(registry.bundle(active.version), registry.bundle(rel.version))
    return report.to_json() | {"against": active.version}


def release_dossier(registry: Registry, version: str) -> dict[str, Any]:
    """Return everything a reviewer needs to decide on ``version``, with its fingerprint.

    The bundle is verified (hashes and signature) on the way: a tampered bundle
    raises ``BundleSignatureInvalid`` instead of being shown.
    """
    rel = registry.get(version)
    bundle = registry.bundle(rel.version)
    active = registry.active(rel.task)
    return {
        "release": rel.to_json() | {"path": None},
        "active": active.version if active else None,
        "is_active": bool(active and active.version == rel.version),
        "pending_decision": rel.status in PENDING_DECISION,
        "validation": validation_summary(bundle.report()),
        "model_card": bundle.read_json("model_card.json"),
        "changes": _changes(registry, rel),
        "gates": registry.gates(rel.version),
        "approvals": [a.to_json() for a in registry.approvals(rel.version)],
        "history": registry.history(rel.version),
        "fingerprint": release_fingerprint(registry, rel.version),
    }


def _check(registry: Registry, version: str, *, fingerprint: str, action: str, actor: str) -> None:
    with registry.governed(action=action, actor=actor, version=version):
        now = release_fingerprint(registry, version)
        if now != fingerprint:
            rel = registry.get(version)
            raise ReleaseChanged(
                f"{action} {version}: the release changed since the page was loaded (it is now "
                f"{rel.status}, with {len(registry.approvals(version))} decision(s) recorded); "
                "nothing was recorded — reload the page, review the change and decide again"
            )


def decide_release(
    registry: Registry,
    version: str,
    *,
    fingerprint: str,
    person: str,
    role: str,
    decision: Decision,
    why: str,
) -> dict[str, Any]:
    """Return the approval (gate 4) recorded on ``version`` if it is as ``fingerprint`` says."""
    action = "approve" if decision == "approve" else "reject"
    if not why.strip():
        with registry.governed(action=action, actor=person, version=version):
            raise GovernanceError(
                f"{action} {version}: a comment saying why is required (rule: every decision "
                "records its reason); nothing was recorded"
            )
    _check(registry, version, fingerprint=fingerprint, action=action, actor=person)
    return registry.decide(version, person=person, role=role, decision=decision, why=why).to_json()


def suspend_release(
    registry: Registry, version: str, *, fingerprint: str, actor: str, why: str
) -> Release:
    """Return ``version`` suspended, if it is still as ``fingerprint`` says."""
    _check(registry, version, fingerprint=fingerprint, action="suspend", actor=actor)
    return registry.suspend(version, actor=actor, why=why)


def resume_release(
    registry: Registry, version: str, *, fingerprint: str, actor: str, why: str
) -> Release:
    """Return a suspended ``version`` back in service, if it is still as ``fingerprint`` says."""
    _check(registry, version, fingerprint=fingerprint, action="resume", actor=actor)
    return registry.resume(version, actor=actor, why=why)


def rollback_release(
    registry: Registry, version: str, *, fingerprint: str, actor: str, why: str
) -> Release:
    """Return ``version`` made active again, if it is still as ``fingerprint`` says."""
    _check(registry, version, fingerprint=fingerprint, action="rollback", actor=actor)
    return registry.rollback(version, actor=actor, why=why)


def service_status(registry: Registry) -> list[dict[str, Any]]:
    """Return, per task: the active release, rollout per site and every release's status."""
    tasks = sorted({r.task for r in registry.list()})
    out = []
    for task in tasks:
        manifest = registry.deployment_manifest(task)
        releases = []
        for rel in registry.list(task=task):
            entry = rel.to_json() | {"path": None}
            entry["sites"] = {
                s: e["mode"] for s, e in manifest["sites"].items() if e["release"] == rel.version
            }
            entry["review"] = (
                review_status(registry, rel.version) if rel.status in (*LIVE, "suspended") else None
            )
            entry["fingerprint"] = release_fingerprint(registry, rel.version)
            releases.append(entry)
        out.append(
            {
                "task": task,
                "active": manifest["active"],
                "sites": manifest["sites"],
                "releases": list(reversed(releases)),
            }
        )
    return out


def review_evidence(registry: Registry, version: str) -> dict[str, Any]:
    """Return what a periodic review (R-H3) of ``version`` looks at, per checklist item.

    Calibration and fairness from the signed validation report, incidents on the
    release from the incident register, documentation completeness from the bundle
    and the gates; with the review schedule (due date, overdue), the last review and
    the reviews monitoring alerts requested that are still pending.
    """
    from clinical_mlops.governance.incidents import list_incidents

    rel = registry.get(version)
    bundle = registry.bundle(rel.version)
    report = bundle.report()
    calibration = report.calibration
    from clinical_mlops.monitoring.escalation import review_items

    incidents = [i for i in list_incidents(registry) if i["version"] == rel.version]
    gates = registry.gates(rel.version)
    documents = {
        name: (bundle.path / name).exists()
        for name in ("model_card.json", "report.json", "explanation.json", "lineage.json")
    }
    return {
        "release": rel.to_json() | {"path": None},
        "schedule": review_status(registry, rel.version),
        "requested": review_items(registry.workspace, release=rel.version, pending_only=True),
        "calibration": {
            "ece": calibration.ece,
            "slope": report.test.calibration_slope,
            "intercept": calibration.intercept,
            "method": calibration.method,
        },
        "fairness": {
            "alerts": [a.message for a in report.fairness_alerts],
        },
        "incidents": {
            "total": len(incidents),
            "open": [i["id"] for i in incidents if i["status"] != "resolved"],
        },
        "documentation": {
            "files": documents,
            "gates_passed": {name: bool(g["passed"]) for name, g in sorted(gates.items())},
            "complete": all(documents.values())
            and bool(gates)
            and all(g["passed"] for g in gates.values()),
        },
    }


def open_alert_review(
    workspace: Any, alert_id: str, *, actor: str, clock: Any = None
) -> dict[str, Any]:
    """Return the review item ``actor`` opened for alert ``alert_id``'s release.

    Through ``monitoring.escalation.open_review_item``: a ``review_requested`` alert
    event in the ledger, a pending item for the release until a review of it is
    recorded, and a ``review_opened`` note on the alert.
    """
    from clinical_mlops.monitoring.alerts import AlertStore
    from clinical_mlops.monitoring.escalation import open_review_item

    with AlertStore(workspace, clock=clock) as store:
        alert = store.get(alert_id)
        result = open_review_item(store, alert, actor=actor)
    return result.to_json() | {"release": alert.release}
