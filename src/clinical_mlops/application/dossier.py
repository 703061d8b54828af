"""The dossier of a release: what a person must see before deciding on it, and a guard
that refuses a decision when the release changed since it was shown.

:func:`release_dossier` gathers, for one release, the validation summary (from the
signed ``report.json``), the model card, the changes and clinical release notes
against the task's current release (``registry.changes``), the gate results, the
approvals so far, the risks the release carries with their acknowledgements, the
status history and, for a release in a silent trial, the trial's go/no-go summary per
site (:mod:`clinical_mlops.application.trials`). Its :func:`release_fingerprint` is a SHA-256 over everything a
decision depends on — status, bundle, threshold, gate outcomes, approvals, risk
acknowledgements, the task's active release and rollout — so a form can carry it
and the act can check it: :func:`check_fingerprint` raises
:class:`~clinical_mlops.errors.ReleaseChanged` (recorded as a ``governance_refused``
event, nothing else written) when the fingerprint no longer matches; the governance
use cases (:mod:`clinical_mlops.application.governance`) call it before acting.

:func:`service_status` is the board of every task: the active release, the rollout
per site, each release's status and review due date.
"""

from __future__ import annotations

import hashlib
from typing import Any

from clinical_mlops.errors import GovernanceError, ReleaseChanged
from clinical_mlops.evaluation.validation_report import BaselineComparison, ValidationReport
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.reviews import review_status
from clinical_mlops.hashing import canonical_json
from clinical_mlops.registry.external import external_validations
from clinical_mlops.registry.registry import LIVE, Release

__all__ = [
    "PENDING_DECISION",
    "check_fingerprint",
    "open_alert_review",
    "release_dossier",
    "release_fingerprint",
    "review_evidence",
    "service_status",
    "validation_summary",
]

#: statuses in which approvals (gate 4) are recorded
PENDING_DECISION = ("validated", "clinically_reviewed")


def release_fingerprint(governance: Governance, version: str) -> str:
    """Return the SHA-256 of the state a decision on ``version`` depends on."""
    registry = governance.registry
    rel = registry.get(version)
    gates = {
        name: {"passed": g["passed"], "failures": g["failures"]}
        for name, g in sorted(governance.gates(rel.version).items())
    }
    manifest = registry.deployment_manifest(rel.task)
    state = {
        "version": rel.version,
        "status": rel.status,
        "suspended_from": rel.suspended_from,
        "bundle_sha256": rel.bundle_sha256,
        "threshold": rel.threshold,
        "gates": gates,
        "approvals": [a.to_json() for a in governance.approvals(rel.version)],
        "risks_acknowledged": [a.risk for a in governance.risk_acknowledgements(rel.version)],
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
        **(
            {
                "baseline_name": baseline.name,
                "baseline_auroc": baseline.auroc,
                "auroc_gain": baseline.auroc_difference.value,
                "auroc_gain_ci": baseline.auroc_difference.ci,
            }
            if isinstance(baseline, BaselineComparison)
            else {
                "baseline_name": None,
                "baseline_auroc": None,
                "auroc_gain": None,
                "auroc_gain_ci": None,
                "no_baseline": baseline.statement,
            }
        ),
        "subgroup_auroc": {key: row.auroc for key, row in sorted(report.subgroups.items())},
        "fairness_alerts": [a.message for a in report.fairness_alerts],
        "limitations": list(report.limitations),
    }


def _changes(governance: Governance, rel: Release) -> dict[str, Any]:
    """Return the change report against the task's active release (as it is now)."""
    from clinical_mlops.registry.changes import classify_change

    registry = governance.registry
    active = registry.active(rel.task)
    if active is None:
        return {"change_class": "initial", "against": None, "changes": [], "notes": []}
    if active.version == rel.version:
        return rel.change
    report = classify_change(registry.bundle(active.version), registry.bundle(rel.version))
    return report.to_json() | {"against": active.version}


def release_dossier(governance: Governance, version: str) -> dict[str, Any]:
    """Return everything a reviewer needs to decide on ``version``, with its fingerprint.

    The bundle is verified (hashes and signature) on the way: a tampered bundle
    raises ``BundleSignatureInvalid`` instead of being shown.
    """
    from clinical_mlops.application.trials import release_trial_summary

    registry = governance.registry
    rel = registry.get(version)
    bundle = registry.bundle(rel.version)
    report = bundle.report()
    active = registry.active(rel.task)
    return {
        "release": rel.to_json() | {"path": None},
        "active": active.version if active else None,
        "is_active": bool(active and active.version == rel.version),
        "pending_decision": rel.status in PENDING_DECISION,
        "validation": validation_summary(report),
        "workload": report.workload_summary(),
        "words": bundle.spec().words().model_dump(mode="json"),
        "model_card": bundle.read_json("model_card.json"),
        "changes": _changes(governance, rel),
        "gates": governance.gates(rel.version),
        "approvals": [a.to_json() for a in governance.approvals(rel.version)],
        "risks": governance.risk_register(rel.version),
        "external_validations": [v.to_json() for v in external_validations(registry, rel.version)],
        "history": registry.history(rel.version),
        "trial": release_trial_summary(governance, rel.version),
        "fingerprint": release_fingerprint(governance, rel.version),
    }


def check_fingerprint(
    governance: Governance, version: str, *, fingerprint: str, action: str, actor: str
) -> None:
    """Return None when ``version`` is still as ``fingerprint`` says; ``ReleaseChanged`` if not.

    The refusal is recorded as a ``governance_refused`` event; nothing else is written.
    """
    with governance.governed(action=action, actor=actor, version=version):
        now = release_fingerprint(governance, version)
        if now != fingerprint:
            rel = governance.registry.get(version)
            raise ReleaseChanged(
                f"{action} {version}: the release changed since the page was loaded (it is now "
                f"{rel.status}, with {len(governance.approvals(version))} decision(s) recorded); "
                "nothing was recorded — reload the page, review the change and decide again"
            )


def service_status(governance: Governance) -> list[dict[str, Any]]:
    """Return, per task: the active release, rollout per site and every release's status."""
    registry = governance.registry
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
                review_status(governance, rel.version)
                if rel.status in (*LIVE, "suspended")
                else None
            )
            entry["fingerprint"] = release_fingerprint(governance, rel.version)
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


def review_evidence(governance: Governance, version: str) -> dict[str, Any]:
    """Return what a periodic review (R-H3) of ``version`` looks at, per checklist item.

    The live review pack of the period since the last review (per-site outcome-linked
    figures beside the validation figures, incidents and alerts of the period, the
    pre-assessed checklist: :mod:`clinical_mlops.monitoring.live_review`); calibration
    and fairness from the signed validation report, incidents on the release from the
    incident register, documentation completeness from the bundle and the gates; with
    the review schedule (due date, overdue), the last review and the reviews
    monitoring alerts requested that are still pending.
    """
    from clinical_mlops.governance.incidents import list_incidents
    from clinical_mlops.monitoring.escalation import review_items
    from clinical_mlops.monitoring.live_review import documentation_status, review_pack

    registry = governance.registry
    rel = registry.get(version)
    bundle = registry.bundle(rel.version)
    report = bundle.report()
    calibration = report.calibration
    incidents = [i for i in list_incidents(governance) if i["version"] == rel.version]
    try:
        pack, no_pack = review_pack(governance, rel.version), None
    except GovernanceError as exc:  # never approved: no period in service to show
        pack, no_pack = None, str(exc)
    return {
        "release": rel.to_json() | {"path": None},
        "schedule": review_status(governance, rel.version),
        "requested": review_items(registry.workspace, release=rel.version, pending_only=True),
        "pack": pack,
        "no_pack": no_pack,
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
        "documentation": documentation_status(governance, rel.version),
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
