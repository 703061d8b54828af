"""The technical documentation of a release, in the nine sections of EU AI Act Annex IV.

Annex IV of Regulation (EU) 2024/1689 lists what the technical documentation of a
high-risk AI system (Art. 11(1)) contains: 1 a general description; 2 a detailed
description of its elements and of its development; 3 its monitoring, functioning and
control; 4 the appropriateness of its performance metrics; 5 the risk management
system (Art. 9); 6 the changes made through its lifecycle; 7 the harmonised standards
applied, or the other solutions adopted; 8 a copy of the EU declaration of conformity;
9 the system evaluating its performance after placing on the market, with the
post-market monitoring plan (Art. 72).

Each section's fields are read from the release's bundle, registry, monitoring and
ledger, with pointers; what only the provider can state (its name, the hardware, the
standards, the declaration) is to be completed by the named role. Outputs:
``annex-iv.md`` and ``annex-iv.html``.
"""

from __future__ import annotations

from typing import Any

from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer
from clinical_mlops.evidence.layout import Page, Section, render_page
from clinical_mlops.evidence.pccp import change_of
from clinical_mlops.vocabulary import GATE_LABELS, GATES

__all__ = ["SECTIONS", "build_annex_iv"]

_REFERENCE = "Regulation (EU) 2024/1689 (AI Act), Art. 11(1) and Annex IV"

#: Annex IV point -> section title
SECTIONS: dict[int, str] = {
    1: "General description of the AI system",
    2: "Elements of the AI system and its development",
    3: "Monitoring, functioning and control",
    4: "Appropriateness of the performance metrics",
    5: "Risk management system (Art. 9)",
    6: "Changes through the lifecycle",
    7: "Harmonised standards and other solutions applied",
    8: "EU declaration of conformity",
    9: "Post-market performance evaluation and monitoring plan (Art. 72)",
}


def _f3(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _general(f: ReleaseFacts) -> list[Field]:
    use = f.spec.intended_use
    change = change_of(f)
    code = f.lineage.get("code") or {}
    env = f.lineage.get("environment") or {}
    card = f.model_card
    return [
        Field.known(
            "1/a/purpose",
            "(a) Intended purpose",
            {
                "intended use": use.statement,
                "users": ", ".join(use.users),
                "setting": use.setting,
                "population": use.population,
                "not intended for": list(f.spec.non_intended_uses),
            },
            f.bundle("deployment.json", "/intended_use"),
            f.bundle("deployment.json", "/non_intended_uses"),
        ),
        Field.to_complete(
            "1/a/provider",
            "(a) Name of the provider",
            "provider organisation",
            note="the model card names the developer only as a team",
        ),
        Field.known(
            "1/a/version",
            "(a) Version and relation to previous versions",
            {
                "release": f.version,
                "model": f.release.get("model_version"),
                "bundle": f"{f.bundle_name} (manifest sha256 {f.bundle_sha256})",
                "change": f"{change['class']}"
                + (f" against {change['against']}" if change.get("against") else ""),
            },
            f.registry("release record"),
            f.bundle("release.json"),
        ),
        Field.known(
            "1/b/interaction",
            "(b) Interaction with other hardware and software",
            (card.get("release_info") or {}).get("ehr_compatibility"),
            f.bundle("model_card.json", "/release_info/ehr_compatibility"),
        ),
        Field.to_complete(
            "1/b/other-ai",
            "(b) Interaction with other AI systems",
            "deployer (hospital)",
            note="which other AI systems act on the same patients is known to the hospital",
        ),
        Field.known(
            "1/c/software",
            "(c) Software versions and update requirements",
            {
                "clinical-mlops": f"{code.get('package_version')} at commit {code.get('commit')}",
                "python": f"{env.get('implementation')} {env.get('python')}",
                "packages": f"lock sha256 {env.get('packages_sha256')}",
                "updates": "every update is a new signed release through the gates (see section 6)",
            },
            f.bundle("lineage.json", "/code"),
            f.bundle("lineage.json", "/environment"),
        ),
        Field.known(
            "1/d/forms",
            "(d) Forms in which it is placed on the market or put into service",
            "A signed release bundle served by the clinical-mlops service: HTTP API, CDS Hooks "
            f"service and FHIR RiskAssessment; rollout modes "
            f"{', '.join(f.deployment.get('rollout_modes') or [])}",
            f.bundle("release.json", "/format"),
            f.bundle("deployment.json", "/rollout_modes"),
        ),
        Field.to_complete(
            "1/e/hardware",
            "(e) Hardware on which it is intended to run",
            "deployer (hospital)",
            note="the servers the service runs on are the hospital's",
        ),
        Field.to_complete(
            "1/f/product",
            "(f) Where a component of products: photographs or illustrations",
            "regulatory affairs",
            note="whether the system is a component of a product is a regulatory statement",
        ),
        Field.known(
            "1/g/interface",
            "(g) User interface provided to the deployer",
            (card.get("uses_and_directions") or {}).get("workflow"),
            f.bundle("model_card.json", "/uses_and_directions/workflow"),
        ),
        Field.known(
            "1/h/instructions",
            "(h) Instructions for use",
            "The model card (intended and non-intended use, inputs with justifications, "
            "validation summary, failure modes, escalation paths) and the validation report, "
            "signed in the bundle",
            f.bundle("model_card.html"),
            f.bundle("report.html"),
        ),
    ]


def _development(f: ReleaseFacts) -> list[Field]:
    sel = f.lineage.get("selection") or {}
    cfg = (f.lineage.get("training") or {}).get("config") or {}
    cohort = f.report.get("cohort") or {}
    source = (f.snapshot_manifest or {}).get("source") or {}
    card = f.model_card
    gates = []
    for g in GATES:
        got = f.gates.get(g.value)
        gates.append(
            f"{GATE_LABELS[g]}: "
            + ("not run" if got is None else ("passed" if got.get("passed") else "failed"))
            + (f" ({got.get('actor')}, {got.get('time')})" if got else "")
        )
    gate_pointers = [
        f.ledger(int(v["seq"]), f"gate {k}") for k, v in sorted(f.gates.items()) if v.get("seq")
    ]
    approval_pointers = [
        f.ledger(int(a["seq"]), f"approval {a.get('role')}") for a in f.approvals if a.get("seq")
    ]
    return [
        Field.known(
            "2/a/methods",
            "(a) Methods and steps of development",
            {
                "steps": "data contracts -> content-addressed snapshot -> cross-validated model "
                "selection -> calibration -> conformal sets -> locked temporal test -> signed "
                "bundle",
                "candidates": ", ".join(cfg.get("candidates") or []),
                "third-party tools": "open-source libraries pinned in the environment lock; no "
                "pre-trained model",
            },
            f.bundle("lineage.json", "/training/config"),
            f.bundle("lineage.json", "/environment"),
        ),
        Field.known(
            "2/b/design",
            "(b) Design specifications and key choices",
            {
                "model": sel.get("selected_model"),
                "selection rule": sel.get("rule"),
                "hyperparameters": sel.get("hyperparameters"),
                "output": (card.get("trust_ingredients") or {}).get("outputs"),
                "operating threshold": f.release.get("threshold"),
                "assumptions about the persons concerned": f.spec.intended_use.population,
            },
            f.bundle("lineage.json", "/selection"),
            f.bundle("model_card.json", "/trust_ingredients/outputs"),
            f.bundle("deployment.json", "/operating_threshold"),
        ),
        Field(
            "2/c/architecture",
            "(c) System architecture and computational resources",
            "Pre-processing, model, calibrator, conformal thresholds, explanation and escalation "
            "reference, each a hashed JSON artifact of the bundle, applied in that order",
            (f.bundle("release.json"), f.bundle("lineage.json", "/artifacts")),
            owner="engineering",
            note="the computational resources used to develop, train and test are not recorded",
        ),
        Field.known(
            "2/d/data",
            "(d) Data requirements and training data",
            {
                "source": f"{source.get('source')} ({source.get('source_version')})",
                "de-identification": source.get("deidentification"),
                "selection": f"{cohort.get('n_stays')} stays after the cohort criteria",
                "labelling": f.spec.label.description,
                "cleaning": "data contracts; out-of-range values treated as artefacts",
                "snapshot": f.lineage.get("snapshot", {}).get("id"),
            },
            f.bundle("snapshot_manifest.json"),
            f.bundle("report.json", "/cohort/cohort_flow"),
            f.spec_pointer("/label"),
        ),
        Field.known(
            "2/e/oversight",
            "(e) Human oversight measures (Art. 14)",
            [
                *(card.get("escalation_paths") or []),
                (f.deployment.get("escalation") or {}).get("statement"),
            ],
            f.bundle("model_card.json", "/escalation_paths"),
            f.bundle("deployment.json", "/escalation"),
        ),
        Field.known(
            "2/f/predetermined-changes",
            "(f) Pre-determined changes and continued compliance",
            "Change classes administrative / operational / clinical-impacting; every change is "
            "a new release through all gates and approvals (see the PCCP document)",
            Pointer("spec", "clinical_mlops.registry.changes.classify_change (R-L6)"),
            f.registry("change classification at registration"),
        ),
        Field.known(
            "2/g/validation",
            "(g) Validation and testing procedures and results",
            {
                "test data": f"locked {f.spec.split.kind} test years "
                f"{f.spec.split.test_years[0]}–{f.spec.split.test_years[1]}, "
                f"{(f.report.get('test') or {}).get('n')} stays",
                "gates": gates,
                "approvals": [
                    f"{a.get('decision')} by {a.get('person')} as {a.get('role')}, {a.get('time')}"
                    for a in f.approvals
                ]
                or f"No approval recorded up to {f.as_of_iso}",
            },
            f.bundle("report.json"),
            *gate_pointers,
            *approval_pointers,
        ),
        Field.known(
            "2/h/cybersecurity",
            "(h) Cybersecurity measures",
            (card.get("trust_ingredients") or {}).get("security"),
            f.bundle("model_card.json", "/trust_ingredients/security"),
            Pointer("spec", f"bundle signature key {f.signature.get('key_id')}"),
        ),
    ]


def _functioning(f: ReleaseFacts) -> list[Field]:
    t = f.report.get("test") or {}
    subgroups = f.report.get("subgroups") or {}
    warnings = f.model_card.get("warnings") or {}
    return [
        Field.known(
            "3/accuracy",
            "Capabilities, limits and accuracy, overall and for groups",
            {
                "overall": f"AUROC {_f3(t.get('auroc'))}, ECE {_f3(t.get('ece'))}, Brier "
                f"{_f3(t.get('brier'))} on {t.get('n')} test stays",
                "groups": [f"{k}: AUROC {_f3(v.get('auroc'))}" for k, v in subgroups.items()]
                or "no subgroups declared",
            },
            f.bundle("report.json", "/test"),
            f.bundle("report.json", "/subgroups"),
        ),
        Field.known(
            "3/risks",
            "Foreseeable unintended outcomes and sources of risk",
            [*(warnings.get("risks") or []), *(f.model_card.get("known_failure_modes") or [])],
            f.bundle("model_card.json", "/warnings/risks"),
            f.bundle("model_card.json", "/known_failure_modes"),
        ),
        Field.known(
            "3/oversight",
            "Human oversight measures and the interpretation of outputs",
            (f.model_card.get("uses_and_directions") or {}).get("workflow"),
            f.bundle("model_card.json", "/uses_and_directions/workflow"),
        ),
        Field.known(
            "3/input-data",
            "Specifications of the input data",
            [
                f"{x['label']} ({x['kind']}{', ' + x['unit'] if x.get('unit') else ''})"
                for x in f.feature_schema.get("features") or []
            ],
            f.bundle("feature_schema.json", "/features"),
        ),
    ]


def _metrics(f: ReleaseFacts) -> list[Field]:
    acc = f.spec.acceptance
    gate = f.gates.get("metrics")
    pointers = [f.spec_pointer("/acceptance"), f.bundle("report.json", "/methods")]
    if gate and gate.get("seq"):
        pointers.append(f.ledger(int(gate["seq"]), "gate metrics"))
    return [
        Field(
            "4/metrics",
            "Performance metrics and their acceptance criteria",
            {
                "discrimination": f"AUROC >= {acc.min_auroc:g}",
                "calibration": f"ECE <= {acc.max_ece:g}",
                "subgroups": f"AUROC >= {acc.min_subgroup_auroc:g}",
                "clinical baseline": "must be beaten" if acc.must_beat_baseline else "compared",
                "gate 2 for this release": "not run"
                if gate is None
                else ("passed" if gate.get("passed") else "failed"),
            },
            tuple(pointers),
            owner="clinical",
            note="why these metrics and limits suit this clinical use is the clinical team's to "
            "state",
        )
    ]


def _risk(f: ReleaseFacts) -> list[Field]:
    ack = [
        f.ledger(int(r["acknowledgement"]["seq"]), f"risk acknowledged: {r['id']}")
        for r in f.risks
        if r.get("acknowledgement") and r["acknowledgement"].get("seq") is not None
    ]
    return [
        Field(
            "5/register",
            "Risks identified, evaluated and accepted",
            [
                f"{r['id']}: observed {_f3(r.get('observed'))}, limit {_f3(r.get('limit'))}; "
                + (
                    f"accepted by {r['acknowledgement'].get('actor')}: "
                    f"{r['acknowledgement'].get('reason')}"
                    if r.get("acknowledgement")
                    else "not yet acknowledged"
                )
                for r in f.risks
            ]
            or "No risk in the release's register",
            (f.registry("risk register"), f.bundle("report.json"), *ack),
            owner="clinical safety officer",
            note="the release's risk register is one input; the Art. 9 risk management system "
            "is the organisation's",
        )
    ]


def _changes(f: ReleaseFacts) -> list[Field]:
    history = [
        f.ledger(int(h["ledger_seq"]), f"status {h['to']}")
        for h in f.history
        if h.get("ledger_seq") is not None
    ]
    return [
        Field.known(
            "6/history",
            "Status changes of this release",
            [
                f"{h['time']}: {h.get('from') or 'new'} -> {h['to']} by {h['actor']} "
                f"({h.get('role')}): {h.get('why')}"
                for h in f.history
            ]
            or "No status change recorded",
            f.registry("status history"),
            *history,
        ),
        Field.known(
            "6/change",
            "Change against the previous release",
            change_of(f),
            f.registry("change classification at registration"),
        ),
    ]


def _standards(f: ReleaseFacts) -> list[Field]:
    return [
        Field.to_complete(
            "7/standards",
            "Harmonised standards applied, or the solutions adopted instead",
            "regulatory affairs",
            note="docs/COMPLIANCE.md maps the software's features to the AI Act's requirements",
        )
    ]


def _declaration(f: ReleaseFacts) -> list[Field]:
    return [
        Field.to_complete(
            "8/declaration",
            "Copy of the EU declaration of conformity (Art. 47)",
            "provider organisation",
        )
    ]


def _post_market(f: ReleaseFacts) -> list[Field]:
    local = f.local
    return [
        Field.known(
            "9/system",
            "Post-market monitoring system and plan",
            {
                "plan": "the post-market monitoring plan of this release (pmm-plan document)",
                "rules": f"{len(f.monitoring_rules)} monitoring rules",
                "review": f"periodic review every {f.review.get('interval_days')} days",
                "local performance": "no monitored window with outcomes yet"
                if local is None
                else f"AUROC {_f3(local.auroc)} over {local.n_outcomes} outcomes to "
                f"{local.window_end}",
            },
            f.spec_pointer("/monitoring"),
            f.registry("review schedule"),
            f.monitoring(f"windows of {f.version} up to {f.as_of_iso}"),
        )
    ]


_BUILDERS = {
    1: _general,
    2: _development,
    3: _functioning,
    4: _metrics,
    5: _risk,
    6: _changes,
    7: _standards,
    8: _declaration,
    9: _post_market,
}


def build_annex_iv(facts: ReleaseFacts) -> Document:
    """Return the release's Annex IV technical documentation, sections 1-9, in MD and HTML."""
    parts = [(n, SECTIONS[n], _BUILDERS[n](facts)) for n in SECTIONS]
    doc = Document(
        format="annex-iv",
        title=f"Technical documentation (AI Act Annex IV) — {facts.spec.title}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=[f for _, _, fs in parts for f in fs],
    )
    page = Page(
        framework=_REFERENCE,
        sections=tuple(
            Section(f"section-{n}", f"{n}. {title}", tuple(f.key for f in fs))
            for n, title, fs in parts
        ),
        preamble=(
            "Read from the release's signed bundle, the registry, the monitoring store and the "
            "ledger. This is evidence for the technical documentation, not legal advice; what "
            "only the provider can state is to be completed by the named role.",
        ),
    )
    md, page_html = render_page(doc, page)
    doc.files = {"annex-iv.md": md, "annex-iv.html": page_html}
    return doc
