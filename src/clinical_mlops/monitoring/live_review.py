"""The live review pack (R-H3, R-V1): what a release did at each site since its last review.

A periodic review judges a release on what it did in service, not on its validation.
:func:`review_pack` reads the audit ledger over the *review period* — from the
release's last periodic review (or, before its first, its approval) to ``as_of`` —
and returns, per site where the release scored predictions (the inference record's
context ``site``; a record naming none, or the service's wildcard ``*``, is
``unspecified``) and for all sites pooled:

* discrimination on the predictions scored in the period whose outcomes were
  recorded by ``as_of`` (outcomes linked by prediction seq under the documented
  rules of :func:`~clinical_mlops.monitoring.records.link_outcomes`): AUROC with a
  percentile bootstrap 95 % CI (the release's validation resample count, fixed seed);
* calibration: observed and mean predicted risk, calibration-in-the-large
  (logistic intercept with ``logit(p)`` as offset), calibration slope, ECE over 10
  equal-width bins — the validation report's definitions;
* subgroup AUROC per protected attribute recorded at serving, the gap between
  the best and worst measured group, and how far each group fell behind the
  population since validation (the live fairness rule, Bonferroni lower bound);
  an attribute that is not a model input is not in the inference record, and the
  pack says so instead of estimating it;
* workload: alerts (risk at or above the operating threshold) and reviews (routed to
  human review as scored) per 100 scored, and the override rate (clinician overrides
  / predictions shown);
* beside each live figure, the validation figure: the site's row of the report's
  site x period matrix where the report has one, else the pooled locked test set.

For the release as a whole: incidents opened in the period and those not yet
resolved, monitoring alerts opened in the period, documentation completeness.

Insufficient-data rule (the live monitor's, so a review never states a figure the
monitor would have withheld): discrimination and calibration need at least
``monitoring.min_outcomes`` linked outcomes with ``monitoring.min_outcome_positives``
of each class; a subgroup's AUROC needs ``fairness_min_group_positives`` stays of each
class; a gap needs two measured groups; rates per 100 need
``monitoring.min_shown_for_override_rate`` predictions (scored, or shown for the
override rate). A figure below its rule is the string ``"insufficient data (...)"``
naming the counts, never a number.

Each checklist item is pre-assessed (:data:`CHECKLIST_RULES`); a breached item
cannot be answered with a bare "ok" (:func:`clinical_mlops.governance.reviews.
record_review`). The pack is canonical JSON; its SHA-256 is stored with the review
and named in the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from clinical_mlops.data.raw import UNSPECIFIED_SITE
from clinical_mlops.errors import GovernanceError
from clinical_mlops.evaluation.fairness import group_masks
from clinical_mlops.evaluation.metrics import (
    auroc_replicates,
    calibration_slope_intercept,
    percentile_ci,
    resample_counts,
)
from clinical_mlops.governance.incidents import list_incidents
from clinical_mlops.governance.reviews import CHECKLIST, review_period
from clinical_mlops.hashing import sha256_json
from clinical_mlops.monitoring.fairness import group_metrics, subgroup_findings
from clinical_mlops.monitoring.outcomes import ece, rank_auroc
from clinical_mlops.monitoring.records import epoch, iso, link_outcomes, read_ledger_records

if TYPE_CHECKING:
    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.monitoring.records import InferenceRecords, LinkedOutcomes
    from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "ALL_SITES",
    "CHECKLIST_RULES",
    "PACK_FORMAT",
    "documentation_status",
    "pack_sha256",
    "review_pack",
]

PACK_FORMAT = "clinical-mlops/review-pack/v1"
#: the row that pools every site
ALL_SITES = "all sites"
#: the seed of the bootstrap resamples, so the same ledger gives the same pack and hash
BOOTSTRAP_SEED = 20260302
#: item -> what breaches it (checked at every site and on all sites pooled)
CHECKLIST_RULES = {
    "calibration": (
        "live ECE above monitoring.max_ece, or live AUROC at least thresholds.auroc_degradation "
        "(relative) below the validated AUROC, at a site with sufficient outcomes"
    ),
    "fairness": (
        "a subgroup fell behind the population since validation by more than "
        "thresholds.subgroup_auroc_gap (Bonferroni lower bound at "
        "monitoring.fairness_confidence), or a fairness alert opened in the period"
    ),
    "incidents": (
        "an incident opened in the period or not yet resolved, a monitoring alert opened in "
        "the period and still active, or an override rate at or above "
        "monitoring.max_override_rate at a site"
    ),
    "documentation": "a bundle document missing or a gate not passed",
}
_DOCUMENTS = ("model_card.json", "report.json", "explanation.json", "lineage.json")


def _insufficient(what: str) -> str:
    return f"insufficient data ({what})"


def _num(value: Any) -> float | None:
    """Return a finite float, or None for a missing, textual or non-finite figure."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def _figure(value: Any) -> float | str | None:
    """Return a report figure as the pack holds it: a finite number, the report's words, or None."""
    if isinstance(value, str):
        return value
    return _num(value)


def _site_of(value: str | None) -> str:
    return UNSPECIFIED_SITE if value in (None, "", "*") else str(value)


def documentation_status(governance: Governance, version: str) -> dict[str, Any]:
    """Return which bundle documents exist, which gates passed, and whether both are complete."""
    bundle = governance.registry.bundle(version)
    documents = {name: (bundle.path / name).exists() for name in _DOCUMENTS}
    gates = governance.gates(version)
    return {
        "files": documents,
        "gates_passed": {name: bool(g["passed"]) for name, g in sorted(gates.items())},
        "complete": all(documents.values())
        and bool(gates)
        and all(g["passed"] for g in gates.values()),
    }


# -- validation figures ----------------------------------------------------------------------
def _validated_gaps(report: ValidationReport) -> dict[str, float | str]:
    """Return attribute -> best minus worst measured subgroup AUROC on the locked test set."""
    per: dict[str, list[float]] = {}
    for row in report.subgroups.values():
        value = _num(row.auroc)
        if row.attribute is not None and value is not None:
            per.setdefault(row.attribute, []).append(value)
    return {
        attr: (max(v) - min(v)) if len(v) >= 2 else _insufficient("fewer than two groups measured")
        for attr, v in per.items()
    }


def _validation(report: ValidationReport, matrix_row: dict[str, Any] | None) -> dict[str, Any]:
    """Return the validation figures a live row is compared with (the site's, where reported)."""
    workload = report.workload
    out: dict[str, Any] = {
        "scope": "locked test set, all sites",
        "n": report.test.n,
        "auroc": _figure(report.test.auroc),
        "auroc_ci": [_num(v) for v in report.test.auroc_ci]
        if isinstance(report.test.auroc_ci, list | tuple)
        else _figure(report.test.auroc_ci),
        "observed_risk": _figure(report.test.prevalence),
        "calibration_in_the_large": _figure(report.calibration.intercept),
        "calibration_slope": _figure(report.test.calibration_slope),
        "ece": _figure(report.calibration.ece),
        "alerts_per_100": _figure(workload.alerts_per_100),
        "reviews_per_100": _figure(workload.reviews_per_100),
        "override_rate": "not measured at validation",
        "subgroup_gaps": _validated_gaps(report),
    }
    if matrix_row:
        auroc = matrix_row.get("auroc")
        if isinstance(auroc, dict):
            out["auroc"], out["auroc_ci"] = _figure(auroc.get("value")), auroc.get("ci")
        elif auroc is not None:
            out["auroc"], out["auroc_ci"] = _figure(auroc), None
        for key, ours in (
            ("n", "n"),
            ("prevalence", "observed_risk"),
            ("calibration_intercept", "calibration_in_the_large"),
            ("calibration_slope", "calibration_slope"),
            ("ece", "ece"),
            ("alerts_per_100", "alerts_per_100"),
            ("reviews_per_100", "reviews_per_100"),
        ):
            if key in matrix_row:
                out[ours] = _figure(matrix_row[key])
        out["scope"] = f"locked test set, site {matrix_row.get('site')}"
    return out


def _matrix_rows(bundle_report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return site -> the report's all-period row of its site x period matrix (empty if none)."""
    matrix = bundle_report.get("matrix")
    rows = matrix.get("by_site") if isinstance(matrix, dict) else None
    if not isinstance(rows, list):
        return {}
    return {str(r["site"]): r for r in rows if isinstance(r, dict) and "site" in r}


# -- live figures ----------------------------------------------------------------------------
class _Context:
    """What every site row is computed against: the spec's rules and the validated figures."""

    def __init__(self, spec: TaskSpec, report: ValidationReport, threshold: float) -> None:
        self.spec = spec
        self.m = spec.monitoring
        self.th = spec.thresholds
        self.report = report
        self.threshold = threshold
        self.validated_auroc = _num(report.test.auroc)
        self.validated_groups = report.measured_subgroup_auroc()
        self.n_boot = int(report.methods.n_boot)

    def rules(self) -> dict[str, Any]:
        return {
            "min_outcomes": self.m.min_outcomes,
            "min_outcome_positives": self.m.min_outcome_positives,
            "fairness_min_group_positives": self.m.fairness_min_group_positives,
            "min_predictions_for_rates": self.m.min_shown_for_override_rate,
            "max_ece": self.m.max_ece,
            "auroc_degradation": self.th.auroc_degradation,
            "subgroup_auroc_gap": self.th.subgroup_auroc_gap,
            "fairness_confidence": self.m.fairness_confidence,
            "max_override_rate": self.m.max_override_rate,
            "operating_threshold": self.threshold,
            "bootstrap_resamples": self.n_boot,
            "checklist": dict(CHECKLIST_RULES),
        }


def _rate(count: int, n: int, *, per: float, minimum: int, what: str) -> float | str:
    if n < minimum:
        return _insufficient(f"{n} {what}; needs {minimum}")
    return per * count / n


def _outcome_figures(
    ctx: _Context, y: np.ndarray, p: np.ndarray
) -> tuple[dict[str, Any], float | None]:
    """Return the discrimination and calibration figures of one site, and its live AUROC."""
    n, n_pos = len(y), int(np.sum(y))
    n_neg = n - n_pos
    out: dict[str, Any] = {"n_outcomes": n, "n_positive": n_pos}
    need = ctx.m.min_outcome_positives
    if n < ctx.m.min_outcomes or n_pos < need or n_neg < need:
        words = _insufficient(
            f"{n} outcomes, {n_pos} with the outcome and {n_neg} without; needs "
            f"{ctx.m.min_outcomes} outcomes with {need} of each"
        )
        for key in (
            "auroc",
            "auroc_ci",
            "auroc_degradation",
            "observed_risk",
            "mean_predicted_risk",
            "calibration_in_the_large",
            "calibration_slope",
            "ece",
        ):
            out[key] = words
        return out, None
    area = rank_auroc(y, p)
    counts = resample_counts(n, n_boot=ctx.n_boot, seed=BOOTSTRAP_SEED)
    lo, hi = percentile_ci(auroc_replicates(y, p, counts))
    cal = calibration_slope_intercept(y, p)
    out |= {
        "auroc": area,
        "auroc_ci": [_num(lo), _num(hi)],
        "auroc_degradation": (ctx.validated_auroc - area) / ctx.validated_auroc
        if ctx.validated_auroc
        else None,
        "observed_risk": n_pos / n,
        "mean_predicted_risk": float(np.mean(p)),
        "calibration_in_the_large": _num(cal["intercept"]),
        "calibration_slope": _num(cal["slope"]),
        "ece": ece(y, p),
    }
    return out, area


def _subgroups(
    ctx: _Context,
    masks: dict[str, dict[str, np.ndarray]],
    rows: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    live_auroc: float | None,
) -> dict[str, Any]:
    """Return per attribute the group AUROCs, the gap and each group's widening since validation."""
    out: dict[str, Any] = {}
    need = ctx.m.fairness_min_group_positives
    for attr, by_group in masks.items():
        if live_auroc is None:
            out[attr] = {
                "gap": _insufficient("the site's outcomes are insufficient for any subgroup"),
                "groups": {},
                "findings": [],
            }
            continue
        groups: dict[str, dict[str, Any]] = {}
        for group, mask in by_group.items():
            sel = mask[rows]
            gm = group_metrics(y[sel], p[sel], threshold=ctx.threshold, min_per_class=need)
            groups[group] = {
                "n": gm["n"],
                "n_positive": gm["n_positive"],
                "auroc": gm["auroc"]
                if gm["auroc"] is not None
                else _insufficient(
                    f"{gm['n_positive']} with the outcome and {gm['n'] - gm['n_positive']} "
                    f"without; needs {need} of each"
                ),
                "auroc_se": gm["auroc_se"],
                "validated_auroc": ctx.validated_groups.get(f"{attr}={group}"),
            }
        measured = [g["auroc"] for g in groups.values() if isinstance(g["auroc"], float)]
        findings = subgroup_findings(
            {
                attr: {
                    g: {"auroc": v["auroc"], "auroc_se": v["auroc_se"]}
                    for g, v in groups.items()
                    if isinstance(v["auroc"], float)
                }
            },
            live_overall=live_auroc,
            validated_overall=ctx.validated_auroc or live_auroc,
            validated_groups=ctx.validated_groups,
            confidence=ctx.m.fairness_confidence,
        )
        out[attr] = {
            "gap": max(measured) - min(measured)
            if len(measured) >= 2
            else _insufficient(f"{len(measured)} group(s) measured; needs 2"),
            "groups": groups,
            "findings": [
                {
                    "group": f.group,
                    "widening": f.widening,
                    "lower_bound": f.lower_bound,
                    "breached": f.lower_bound > ctx.th.subgroup_auroc_gap,
                }
                for f in findings
            ],
        }
    return out


def _site_row(
    ctx: _Context,
    site: str,
    inf: InferenceRecords,
    rows: np.ndarray,
    linked: LinkedOutcomes,
    overridden: set[int],
    masks: dict[str, dict[str, np.ndarray]],
    validation: dict[str, Any],
) -> dict[str, Any]:
    """Return the live figures of the predictions ``rows`` (one site, or all) and the validation's."""
    in_rows = np.isin(linked.index, rows)
    idx = linked.index[in_rows]
    y = linked.y[in_rows].astype(np.int64)
    p = inf.probability[idx]
    n_scored = len(rows)
    shown = inf.shown[rows]
    n_shown = int(np.sum(shown))
    flagged = int(np.sum(inf.probability[rows] >= ctx.threshold))
    routed = int(np.sum(inf.escalated[rows])) if len(inf.escalated) else 0
    n_overrides = sum(1 for s in inf.seq[rows][shown].tolist() if int(s) in overridden)
    minimum = ctx.m.min_shown_for_override_rate
    outcome, live_auroc = _outcome_figures(ctx, y, p)
    return {
        "site": site,
        "n_scored": n_scored,
        "n_shown": n_shown,
        "n_alerts": flagged,
        "n_reviews": routed,
        "n_overrides": n_overrides,
        **outcome,
        "alerts_per_100": _rate(flagged, n_scored, per=100, minimum=minimum, what="scored"),
        "reviews_per_100": _rate(routed, n_scored, per=100, minimum=minimum, what="scored"),
        "override_rate": _rate(n_overrides, n_shown, per=1, minimum=minimum, what="shown"),
        "subgroups": _subgroups(ctx, masks, idx, y, p, live_auroc),
        "validation": validation,
    }


def _breaches(ctx: _Context, row: dict[str, Any]) -> dict[str, list[str]]:
    """Return checklist item -> what breached it in one site row."""
    where = row["site"]
    out: dict[str, list[str]] = {"calibration": [], "fairness": [], "incidents": []}
    value = row["ece"]
    if isinstance(value, float) and value > ctx.m.max_ece:
        out["calibration"].append(f"{where}: ECE {value:.3f} above {ctx.m.max_ece:g}")
    deg = row["auroc_degradation"]
    if isinstance(deg, float) and deg >= ctx.th.auroc_degradation:
        out["calibration"].append(
            f"{where}: AUROC {row['auroc']:.3f} is {100 * deg:.1f} % below the validated "
            f"{ctx.validated_auroc:.3f} (limit {100 * ctx.th.auroc_degradation:g} %)"
        )
    for attr, sub in row["subgroups"].items():
        for f in sub["findings"]:
            if f["breached"]:
                out["fairness"].append(
                    f"{where}: {attr}={f['group']} fell behind the population by "
                    f"{f['widening']:.3f} AUROC since validation (lower bound "
                    f"{f['lower_bound']:.3f} > {ctx.th.subgroup_auroc_gap:g})"
                )
    rate = row["override_rate"]
    if isinstance(rate, float) and rate >= ctx.m.max_override_rate:
        out["incidents"].append(
            f"{where}: override rate {100 * rate:.1f} % at or above "
            f"{100 * ctx.m.max_override_rate:g} %"
        )
    return out


# -- the pack --------------------------------------------------------------------------------
def review_pack(
    governance: Governance, version: str, *, as_of: datetime | None = None
) -> dict[str, Any]:
    """Return the live review pack of release ``version`` over its review period up to ``as_of``.

    ``as_of`` defaults to the governance clock's now. Refused (``GovernanceError``) for
    a release never approved (it has no period in service to review) and for an
    ``as_of`` before its approval. The pack is plain JSON (no NaN); see the module
    docstring for every figure and rule.
    """
    registry = governance.registry
    rel = registry.get(version)
    end = as_of or governance.clock.now()
    if end.tzinfo is None:
        raise GovernanceError("as_of: expected a timezone-aware time (UTC)")
    period = review_period(governance, rel.version, as_of=end)
    bundle = registry.bundle(rel.version)
    spec, report = bundle.spec(), bundle.report()
    ctx = _Context(spec, report, float(report.test.threshold))
    start = datetime.fromisoformat(period["since"].replace("Z", "+00:00"))
    records = read_ledger_records(governance.ledger, since=start, until=end)
    inf = records["inferences"].get(rel.version)
    limitations: list[str] = []
    if inf is None:
        limitations.append("no prediction of this release was scored in the period")
    available = [a for a in spec.protected_attributes if inf is not None and a.column in inf.inputs]
    for attr in spec.protected_attributes:
        if inf is not None and attr not in available:
            limitations.append(
                f"{attr.name}: column {attr.column!r} is not a model input, so the inference "
                "record does not hold it; its subgroups are not reviewed on live figures"
            )
    matrix = _matrix_rows(bundle.read_json("report.json"))
    sites: list[dict[str, Any]] = []
    if inf is not None:
        keep = np.flatnonzero(inf.time >= epoch(start))
        linked = link_outcomes(inf, records["outcomes"])
        ov = records["overrides"]
        overridden = {
            int(s) for s, a in zip(ov.seq.tolist(), ov.action, strict=True) if a == "override"
        }
        masks = (
            group_masks(
                spec.model_copy(update={"protected_attributes": tuple(available)}), inf.inputs
            )
            if available
            else {}
        )
        at = np.array(
            [_site_of(s) for s in inf.sites] if inf.sites else [UNSPECIFIED_SITE] * len(inf),
            dtype=object,
        )
        for site in sorted(set(at[keep].tolist())):
            rows = keep[at[keep] == site]
            sites.append(
                _site_row(
                    ctx,
                    site,
                    inf,
                    rows,
                    linked,
                    overridden,
                    masks,
                    _validation(report, matrix.get(site)),
                )
            )
        if len(sites) > 1:
            sites.append(
                _site_row(
                    ctx, ALL_SITES, inf, keep, linked, overridden, masks, _validation(report, None)
                )
            )
    lo, hi = epoch(start), epoch(end)
    incidents = [i for i in list_incidents(governance) if i["version"] == rel.version]
    opened = [i for i in incidents if lo <= epoch(i["opened"]) < hi]
    unresolved = [i for i in incidents if epoch(i["opened"]) < hi and i["status"] != "resolved"]
    alerts = _alerts(governance, rel.version, lo, hi)
    documentation = documentation_status(governance, rel.version)
    checklist = _checklist(ctx, sites, opened, unresolved, alerts, documentation)
    return {
        "format": PACK_FORMAT,
        "release": rel.version,
        "task": rel.task,
        "model_version": rel.model_version,
        "status": rel.status,
        "since": period["since"],
        "since_what": period["since_what"],
        "as_of": iso(hi),
        "rules": ctx.rules(),
        "sites": sites,
        "incidents": {
            "opened": [_incident(i) for i in opened],
            "unresolved": [_incident(i) for i in unresolved],
        },
        "alerts": alerts,
        "documentation": documentation,
        "checklist": checklist,
        "limitations": limitations,
        "unreadable_records": int(records["unreadable"]),
    }


def _incident(i: dict[str, Any]) -> dict[str, Any]:
    return {k: i[k] for k in ("id", "status", "severity", "summary", "opened")}


def _alerts(governance: Governance, version: str, lo: float, hi: float) -> dict[str, Any]:
    """Return the monitoring alerts on ``version`` opened in the period, by kind."""
    from clinical_mlops.monitoring.alerts import AlertStore

    with AlertStore(governance.registry.workspace, clock=governance.clock) as store:
        found = [a for a in store.list(release=version) if lo <= epoch(a.opened_at) < hi]
    found.sort(key=lambda a: (a.opened_at, a.id))
    by_kind: dict[str, int] = {}
    for a in found:
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    return {
        "opened": len(found),
        "by_kind": by_kind,
        "items": [
            {
                "id": a.id,
                "rule": a.rule,
                "kind": a.kind,
                "severity": a.severity,
                "status": a.status,
                "opened_at": a.opened_at,
                "summary": a.summary,
            }
            for a in found
        ],
    }


def _checklist(
    ctx: _Context,
    sites: list[dict[str, Any]],
    opened: list[dict[str, Any]],
    unresolved: list[dict[str, Any]],
    alerts: dict[str, Any],
    documentation: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Return item -> {"breached", "findings", "evidence"}: the pre-assessment a reviewer answers."""
    found: dict[str, list[str]] = {item: [] for item in CHECKLIST}
    for row in sites:
        for item, words in _breaches(ctx, row).items():
            found[item] += words
    for a in alerts["items"]:
        if a["kind"] == "fairness":
            found["fairness"].append(f"fairness alert {a['id']} ({a['status']}): {a['summary']}")
        elif a["status"] != "resolved":
            found["incidents"].append(f"monitoring alert {a['id']} ({a['status']}): {a['summary']}")
    for i in opened:
        found["incidents"].append(
            f"incident {i['id']} opened {i['opened']} ({i['status']}): {i['summary']}"
        )
    ids = {i["id"] for i in opened}
    for i in unresolved:
        if i["id"] not in ids:
            found["incidents"].append(
                f"incident {i['id']} opened before the period, still {i['status']}: {i['summary']}"
            )
    if not documentation["complete"]:
        missing = [f"{n} missing" for n, ok in documentation["files"].items() if not ok]
        missing += [
            f"gate {g} not passed" for g, ok in documentation["gates_passed"].items() if not ok
        ]
        found["documentation"].append("; ".join(missing) or "no gate evidence recorded")
    measured = [r["site"] for r in sites if isinstance(r["auroc"], float)]
    short = [r["site"] for r in sites if not isinstance(r["auroc"], float)]
    evidence = {
        "calibration": (
            f"outcome-linked figures at {', '.join(measured) or 'no site'}"
            + (f"; insufficient outcomes at {', '.join(short)}" if short else "")
        ),
        "fairness": (
            f"subgroup AUROC at {', '.join(measured) or 'no site'}; "
            f"{alerts['by_kind'].get('fairness', 0)} fairness alert(s) in the period"
        ),
        "incidents": (
            f"{len(opened)} incident(s) opened in the period, {len(unresolved)} not resolved; "
            f"{alerts['opened']} monitoring alert(s) opened in the period"
        ),
        "documentation": "complete" if documentation["complete"] else "incomplete",
    }
    return {
        item: {"breached": bool(found[item]), "findings": found[item], "evidence": evidence[item]}
        for item in CHECKLIST
    }


def pack_sha256(pack: dict[str, Any]) -> str:
    """Return the SHA-256 of the pack's canonical JSON (what the review and its ledger entry name)."""
    return sha256_json(pack)
