"""The predetermined change control plan (PCCP) of a release, in the FDA's structure.

FDA's final guidance on PCCPs for AI-enabled device software functions (December 2024)
asks for three parts: a **description of modifications** (each planned change, its
rationale, whether it is applied automatically or by people, globally or at a site);
a **modification protocol** (data management practices, re-training practices,
performance evaluation with acceptance criteria, update procedures including
communication, labeling and rollout); and an **impact assessment** (benefits and risks
of each change, and how they are mitigated).

The plan maps the registry's change classes (:data:`clinical_mlops.registry.changes.
CHANGE_CLASSES`, R-L6) onto that structure from what the product enforces: every
change to a release is a new signed bundle whose changes are classified against the
release it follows; in this version every release, whatever its class, passes all four
gates and three named approvals before it is served, and nothing is applied
automatically (no rule retrains or redeploys). Changes to the sealed task spec (inputs,
cohort, outcome, intended use) make another task version and are outside the plan.
Whether the plan needs, or is covered by, a marketing authorisation is for regulatory
affairs. Outputs: ``pccp.md`` and ``pccp.html``.
"""

from __future__ import annotations

from typing import Any

from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer
from clinical_mlops.evidence.layout import Page, Section, render_page
from clinical_mlops.vocabulary import GATE_LABELS, GATES

__all__ = ["MODIFICATIONS", "build_pccp", "change_of"]

_REFERENCE = (
    "FDA, Marketing Submission Recommendations for a Predetermined Change Control Plan for "
    "Artificial Intelligence-Enabled Device Software Functions (final guidance, December 2024)"
)
_CLASSIFIER = Pointer("spec", "clinical_mlops.registry.changes.classify_change (R-L6)")

#: change class -> (the modifications the classifier puts in it, where they stand in the plan)
MODIFICATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "administrative": (
        (
            "wording of an input's label or description",
            "wording of explanations (method unchanged)",
            "validation report or model card documentation",
        ),
        "within the plan: documentation only, no output changes; released through the same "
        "gates and approvals",
    ),
    "operational": (
        (
            "rebuilt from another data snapshot with identical model artifacts",
            "another code version with identical model artifacts",
            "another software environment with identical model artifacts",
        ),
        "within the plan: how it was built, not what it outputs; released through the same "
        "gates and approvals",
    ),
    "clinical-impacting": (
        (
            "model retrained or re-tuned on a newer snapshot under the same task spec",
            "calibration refitted",
            "conformal thresholds refitted",
            "local recalibration at one site (isotonic or logistic), rolled out at that site only",
            "operating threshold moved",
            "escalation policy changed (conditions, review budget, beyond-budget handling)",
            "explanation method changed",
            "handling of missing values or categories changed",
        ),
        "within the plan when the sealed task spec is unchanged: re-validated on the locked "
        "test set (or the site's held-out stays) by gates 1-3, then three named approvals; "
        "inputs added, removed or redefined and cohort changes alter the task spec and are "
        "outside the plan",
    ),
}


def change_of(facts: ReleaseFacts) -> dict[str, Any]:
    """Return the release's change against the one it follows: class, against, notes (as known).

    The registry stores the full classification; when the facts carry only its class,
    ``against`` and ``notes`` are left out rather than guessed.
    """
    change = facts.release.get("change")
    if isinstance(change, dict) and change.get("change_class"):
        return {
            "class": change["change_class"],
            "against": change.get("against") or "no earlier release of the task",
            "notes": change.get("notes") or "no change notes",
        }
    cls = facts.release.get("change_class")
    out: dict[str, Any] = {"class": cls}
    if cls == "initial":
        out["against"] = "no earlier release of the task"
    return out


def _description(facts: ReleaseFacts) -> list[Field]:
    out = [
        Field.known(
            f"modifications/{cls}",
            f"Change class: {cls}",
            {"modifications": list(mods), "in the plan": where},
            _CLASSIFIER,
            Pointer("spec", "docs/GOVERNANCE.md#change-classes-and-release-notes"),
        )
        for cls, (mods, where) in MODIFICATIONS.items()
    ]
    spec = facts.spec
    out.append(
        Field.known(
            "modifications/out-of-scope",
            "Outside the plan",
            [
                "inputs added, removed or redefined (the feature contract)",
                "cohort criteria, outcome or prediction time",
                f"intended use or population (now: {spec.intended_use.population})",
                "a new task",
            ],
            facts.spec_pointer("/features"),
            facts.spec_pointer("/cohort"),
            facts.spec_pointer("/intended_use"),
            facts.bundle("release.json", "/spec_sha256"),
        )
    )
    out.append(
        Field.known(
            "modifications/implementation",
            "Automatic or manual, global or local",
            {
                "applied": "by people only: no rule retrains, recalibrates or redeploys a model",
                "scope": "global for the task, except a local recalibration, which names its "
                "one site in its signed deployment.json",
            },
            facts.bundle("deployment.json"),
            Pointer("spec", "clinical_mlops.monitoring.rules (no rule retrains)"),
        )
    )
    out.append(
        Field.known(
            "modifications/this-release",
            "This release's change",
            change_of(facts),
            facts.registry("change classification at registration"),
            *(
                [facts.ledger(int(e["seq"]), "release registered")]
                if (e := facts.last_event("release_registered"))
                else []
            ),
        )
    )
    return out


def _protocol(facts: ReleaseFacts) -> list[Field]:
    spec, acc = facts.spec, facts.spec.acceptance
    cfg = (facts.lineage.get("training") or {}).get("config") or {}
    split = spec.split
    gates = []
    for g in GATES:
        got = facts.gates.get(g.value)
        state = "not run" if got is None else ("passed" if got.get("passed") else "failed")
        gates.append(f"{GATE_LABELS[g]}: {state} for this release")
    gate_pointers = [
        facts.ledger(int(v["seq"]), f"gate {k}")
        for k, v in sorted(facts.gates.items())
        if v.get("seq") is not None
    ]
    approvals = [
        facts.ledger(int(a["seq"]), f"approval {a.get('role')}")
        for a in facts.approvals
        if a.get("seq") is not None
    ]
    return [
        Field.known(
            "protocol/data-management",
            "Data management practices",
            {
                "snapshots": "content-addressed; raw-file hashes, cohort criteria and split "
                "membership sealed in each bundle",
                "contracts": "data contracts checked before training; a hard failure stops it",
                "sequestration": f"{split.kind} split: development {split.train_years[0]}–"
                f"{split.train_years[1]}, locked test {split.test_years[0]}–{split.test_years[1]}, "
                "touched once per release",
                "local recalibration": "the site's later years are held out; at least "
                f"{acc.min_recalibration_events} events and as many non-events per part",
            },
            facts.bundle("snapshot_manifest.json"),
            facts.spec_pointer("/split"),
            facts.spec_pointer("/acceptance/min_recalibration_events"),
        ),
        Field.known(
            "protocol/retraining",
            "Re-training practices",
            {
                "candidates": ", ".join(cfg.get("candidates") or []),
                "selection": (facts.lineage.get("selection") or {}).get("rule"),
                "tuning": f"{cfg.get('search_iterations')} random-search iterations, "
                f"{split.cv_folds}-fold cross-validation inside the development years",
                "calibration": (facts.report.get("calibration") or {}).get("method"),
                "conformal": f"Mondrian split conformal at alpha {spec.thresholds.conformal_alpha:g}",
                "recalibration methods": "isotonic or logistic (Platt), on a site's stays only",
                "reproducibility": "seed, code commit and environment in the lineage; any "
                "prediction replays bit for bit",
            },
            facts.bundle("lineage.json", "/training/config"),
            facts.bundle("lineage.json", "/selection/rule"),
            facts.spec_pointer("/thresholds/conformal_alpha"),
        ),
        Field.known(
            "protocol/performance-evaluation",
            "Performance evaluation and acceptance criteria",
            {
                "AUROC": f">= {acc.min_auroc:g} on the locked test set",
                "calibration": f"ECE <= {acc.max_ece:g}",
                "subgroups": f"AUROC >= {acc.min_subgroup_auroc:g} in every subgroup with enough "
                "stays",
                "baseline": "must beat the clinical baseline"
                if acc.must_beat_baseline
                else "compared with the clinical baseline",
                "review workload": f"<= {acc.max_reviews_per_100:g} reviews per 100"
                if acc.max_reviews_per_100 is not None
                else "reported, not gated",
                "coverage": f"a class more than {acc.max_coverage_shortfall:g} below its conformal "
                "target is a risk to acknowledge",
                "external sites": f"{acc.min_external_sites} external validation(s) before full "
                "approval",
                "gates": gates,
            },
            facts.spec_pointer("/acceptance"),
            *gate_pointers,
        ),
        Field.known(
            "protocol/update-procedures",
            "Update procedures: approval, rollout and communication",
            {
                "approval": "register (engineering) -> gates 1-3 -> validated -> clinically "
                "reviewed -> approvals by three distinct people (clinical, compliance, "
                "engineering), none the author -> approved for limited use -> approved",
                "rollout": "shadow or silent trial beside the live release, pilot at named sites, "
                "then full; a site-recalibrated release at its site only",
                "communication": "release notes in clinical words from the change classes; the "
                "model card and validation report are re-signed in the new bundle",
                "reversal": "suspension to the clinical-baseline fallback, or rollback to an "
                "earlier approved release",
            },
            facts.registry("status history and rollout"),
            *approvals,
        ),
        Field.to_complete(
            "protocol/labeling",
            "Labeling changes for users",
            "regulatory affairs",
            note="the model card is regenerated with every release; the device labeling it "
            "feeds is the organisation's",
        ),
    ]


def _impact(facts: ReleaseFacts) -> list[Field]:
    base = facts.report.get("baseline") or {}
    diff = base.get("auroc_difference") or {}
    test = facts.report.get("test") or {}
    benefits: dict[str, Any] = {
        "discrimination": f"AUROC {test.get('auroc', 0):.3f} on the locked test set"
        if isinstance(test.get("auroc"), float)
        else str(test.get("auroc")),
    }
    if isinstance(diff.get("value"), float):
        ci = diff.get("ci") or [None, None]
        benefits["against the clinical baseline"] = (
            f"{diff['value']:+.3f} AUROC vs {base.get('name')} (95 % CI "
            f"{ci[0]:+.3f} to {ci[1]:+.3f})"
            if all(isinstance(c, float) for c in ci)
            else f"{diff['value']:+.3f} AUROC vs {base.get('name')}"
        )
    risks = [
        f"{r['id']}: {r['words']}"
        + (
            f" Acknowledged by {r['acknowledgement'].get('actor')} ({r['acknowledgement'].get('role')})."
            if r.get("acknowledgement")
            else " Not yet acknowledged."
        )
        for r in facts.risks
    ]
    ack_pointers = [
        facts.ledger(int(r["acknowledgement"]["seq"]), f"risk acknowledged: {r['id']}")
        for r in facts.risks
        if r.get("acknowledgement") and r["acknowledgement"].get("seq") is not None
    ]
    suspending = sorted(r for r, m in facts.monitoring_rules.items() if m["action"] == "suspend")
    return [
        Field.known(
            "impact/benefits",
            "Benefits of the device as released",
            benefits,
            facts.bundle("report.json", "/test/auroc"),
            facts.bundle("report.json", "/baseline/auroc_difference"),
        ),
        Field.known(
            "impact/risks",
            "Risks carried out of validation (risk register)",
            risks
            or "No risk in the register: no fairness alert, coverage shortfall or failed "
            "masked-input check",
            facts.bundle("report.json"),
            facts.registry("risk register"),
            *ack_pointers,
        ),
        Field.known(
            "impact/modification-risks",
            "Risks of each kind of modification",
            {
                "threshold or escalation policy": "alerts and reviews per 100 patients change; "
                "release notes state both before and after",
                "retraining or recalibration": "individual risks, uncertainty sets and review "
                "routing change; re-validated against the same acceptance criteria",
                "local recalibration": "valid at its site only; rolling it out elsewhere is "
                "outside the plan",
                "documentation or build": "no output changes; a changed artifact is reclassified "
                "as clinical-impacting",
            },
            _CLASSIFIER,
        ),
        Field.known(
            "impact/mitigations",
            "Mitigations after a modification",
            {
                "monitoring": f"{len(facts.monitoring_rules)} rules on drift, calibration, "
                "discrimination, fairness and workload",
                "suspension": f"rules that suspend automatically: {', '.join(suspending)}"
                if suspending
                else "no rule suspends automatically; suspension is by people",
                "review": f"periodic review every {facts.review.get('interval_days')} days",
            },
            facts.spec_pointer("/monitoring"),
            facts.registry("review schedule"),
        ),
        Field.to_complete(
            "impact/benefit-risk",
            "Overall benefit-risk determination",
            "clinical safety officer",
            note="weighing the benefits against the risks for patients is a clinical safety "
            "judgement",
        ),
        Field.to_complete(
            "impact/authorisation",
            "Regulatory standing of the plan",
            "regulatory affairs",
            note="whether the device and this plan need, or are covered by, a marketing "
            "authorisation",
        ),
    ]


def build_pccp(facts: ReleaseFacts) -> Document:
    """Return the PCCP of the release: change classes mapped to the FDA's three parts (MD, HTML)."""
    parts = [
        ("description", "1. Description of modifications", _description(facts)),
        ("protocol", "2. Modification protocol", _protocol(facts)),
        ("impact", "3. Impact assessment", _impact(facts)),
    ]
    doc = Document(
        format="pccp",
        title=f"Predetermined change control plan — {facts.spec.title}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=[f for _, _, fs in parts for f in fs],
    )
    page = Page(
        framework=_REFERENCE,
        sections=tuple(Section(sid, title, tuple(f.key for f in fs)) for sid, title, fs in parts),
        preamble=(
            "Every change to a release is a new signed bundle whose differences are classified "
            "administrative, operational or clinical-impacting against the release it follows. "
            "In this version every release, whatever its class, passes all four gates and "
            "three named approvals before it is served.",
        ),
    )
    md, page_html = render_page(doc, page)
    doc.files = {"pccp.md": md, "pccp.html": page_html}
    return doc
