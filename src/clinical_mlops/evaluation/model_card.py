"""The model card (R-L5): CHAI Applied Model Card sections plus the TRIPOD+AI items that apply.

:func:`model_card` builds the card as data from the validation report and the
task spec; :func:`write_model_card` writes it as ``model_card.json`` (canonical),
``model_card.md`` and ``model_card.html``. Every number on the card is copied
from the report, so the card cannot disagree with the evidence it summarises.

The card is written for people: intended use, key metrics, workload and
limitations come first (:data:`CARD_SECTIONS`); identification, training
details, lineage and the environment's package list sit in an appendix at the
end (:data:`CARD_APPENDIX`). The signed card states no release status, since a
status goes stale the day after signing; it points to the registry instead.
:func:`render_card` renders a card, and with ``as_of`` adds the status,
approvals and acknowledged risks read from the registry at rendering time,
dated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.phrases import risk_percent
from clinical_mlops.evaluation.render import fmt_ci, fmt_num, fmt_pct, render
from clinical_mlops.evaluation.report import canonical_json, json_ready
from clinical_mlops.evaluation.validation_report import BaselineComparison, ValidationReport

__all__ = [
    "CARD_APPENDIX",
    "CARD_FORMATS",
    "CARD_SCHEMA",
    "CARD_SECTIONS",
    "model_card",
    "registry_pointer",
    "render_card",
    "write_model_card",
]

CARD_SCHEMA = "clinical-mlops/model-card/v2"
CARD_FORMATS = ("md", "html")
# Sections a reader meets first, in display order, with their headings.
CARD_SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("uses_and_directions", "Intended use"),
    ("key_results", "Key metrics"),
    ("workload", "Workload"),
    ("warnings", "Limitations and warnings"),
    ("known_failure_modes", "Known failure modes"),
    ("escalation_paths", "Escalation paths"),
    ("key_metrics", "Detailed metrics"),
    ("features", "Features and their clinical justification"),
)
# Reference material, after the heading "Appendix", in display order.
CARD_APPENDIX: tuple[tuple[str, str], ...] = (
    ("basic_info", "Identification"),
    ("release_info", "Release information"),
    ("trust_ingredients", "Training details"),
    ("lineage", "Lineage"),
    ("environment", "Environment packages"),
    ("tripod_ai", "TRIPOD+AI items"),
    ("resources", "Resources"),
)
_METRIC_GROUPS = (
    ("usefulness_usability_efficacy", "Usefulness, usability and efficacy"),
    ("fairness_equity", "Fairness and equity"),
    ("safety_reliability", "Safety and reliability"),
)


def _metric(name: str, goal: str, result: str, interpretation: str, test_type: str, data: str):
    return {
        "name": name,
        "goal": goal,
        "result": result,
        "interpretation": interpretation,
        "test_type": test_type,
        "test_data": data,
    }


def _key_metrics(report: ValidationReport, inp: EvaluationInput) -> dict[str, list[dict[str, str]]]:
    t, b, cal, conf = report.test, report.baseline, report.calibration, report.conformal
    th = t.threshold
    w = inp.spec.words()
    years = "–".join(str(y) for y in inp.spec.split.test_years)
    test_data = f"locked temporal test set, {t.n:,} {w.units} ({years}), touched once"
    boot = f"{report.methods.n_boot} bootstrap resamples"
    usefulness = [
        _metric(
            "AUROC",
            f"rank {w.events} above {w.non_events}",
            f"{fmt_num(t.auroc)} (95 % CI {fmt_ci(t.auroc_ci)})",
            f"probability that a random {w.event} is ranked above a random {w.non_event}",
            f"discrimination, {boot}",
            test_data,
        ),
        _metric(
            f"Sensitivity / specificity / PPV at {th}",
            f"flag most {w.events} without flooding clinicians with alerts",
            f"{fmt_num(t.sensitivity)} / {fmt_num(t.specificity)} / {fmt_num(t.ppv)}",
            f"{report.workload.alerts_per_100:.1f} alerts per 100 patients; "
            f"{fmt_num(report.workload.number_needed_to_evaluate, 1)} patients reviewed "
            f"per {w.event} found",
            "classification at the operating threshold",
            test_data,
        ),
        _metric(
            f"AUROC gain over {b.name}",
            "beat an established bedside severity score",
            f"{fmt_num(b.auroc_difference.value)} "
            f"(95 % CI {fmt_ci(b.auroc_difference.ci)}); baseline AUROC "
            f"{fmt_num(b.auroc)}",
            f"a CI above 0 means the model ranks risk better than the score on the same {w.units}",
            "paired bootstrap comparison",
            test_data,
        )
        if isinstance(b, BaselineComparison)
        else _metric(
            "Clinical baseline",
            "compare with the score clinicians already use",
            "none: no clinical baseline is declared for this task",
            b.statement,
            "no comparison",
            test_data,
        ),
        _metric(
            "Net benefit",
            "more benefit than alerting everyone or no one at plausible thresholds",
            "see the decision curve in the validation report",
            "net benefit = true alerts per patient minus weighted false alerts",
            "decision-curve analysis",
            test_data,
        ),
    ]
    fair = report.fairness
    fairness = [
        _metric(
            name.replace("_", " "),
            "similar error and alert rates across sex, age group and ethnicity",
            f"{fmt_num(m.value)} (95 % CI {fmt_ci(m.ci)}), largest for {m.attribute}",
            "0 = no difference between the best and worst subgroup",
            f"group fairness at threshold {th}, {boot}",
            test_data,
        )
        for name, m in fair.items()
    ]
    gap_alerts = report.fairness_alerts
    fairness.append(
        _metric(
            "Subgroup AUROC gap",
            f"no gap above {inp.spec.thresholds.subgroup_auroc_gap} between subgroups",
            "; ".join(a.message for a in gap_alerts) if gap_alerts else "no gap above tolerance",
            "an alert requires review by the governance board before release",
            "subgroup discrimination",
            test_data,
        )
    )
    safety = [
        _metric(
            "Calibration (ECE, slope, intercept)",
            f"predicted risks match the observed rate of {w.events}",
            f"ECE {fmt_num(cal.ece)} ({cal.ece_binning}); slope {fmt_num(cal.slope)}; "
            f"intercept {fmt_num(cal.intercept)}; Brier {fmt_num(cal.brier)}",
            "slope 1 and intercept 0 are ideal",
            f"{cal.method} calibration, reliability diagram",
            test_data,
        ),
        _metric(
            "Conformal coverage",
            "prediction sets contain the true outcome in at least "
            f"{fmt_pct(conf.target_coverage, 0)} "
            f"of {w.units} in each class",
            f"{fmt_pct(conf.coverage)} overall; {w.non_events} "
            f"{fmt_pct(conf.coverage_by_class['0'])}, {w.events} "
            f"{fmt_pct(conf.coverage_by_class['1'])}",
            "ambiguous {no,yes} and empty sets are flagged to the clinician as low confidence",
            str(conf.method),
            test_data,
        ),
        _metric(
            "Robustness to a missing input",
            "performance degrades gracefully when an input is not measured",
            "; ".join(
                f"{lab} {fmt_num(r['auroc_change'])}" for lab, r in report.robustness.masked.items()
            ),
            f"AUROC change when the input is missing for all {w.units} (imputed with the "
            "training median)",
            "masking experiment",
            test_data,
        ),
    ]
    return {
        "usefulness_usability_efficacy": usefulness,
        "fairness_equity": fairness,
        "safety_reliability": safety,
    }


def _row(measure: str, result: str, meaning: str) -> dict[str, str]:
    return {"measure": measure, "result": result, "meaning": meaning}


def _with_ci(value: Any, ci: Any, digits: int = 1) -> str:
    """``9.3 (95 % CI 8.6–10.1)``; without the interval when the report has none."""
    shown = fmt_num(value, digits)
    return f"{shown} (95 % CI {fmt_ci(ci, digits)})" if ci is not None else shown


def _escalation(report: ValidationReport) -> dict[str, Any]:
    """The report's resolved escalation policy as a dict (empty when the report has none)."""
    esc = report.escalation
    if esc is None:
        return {}
    return dict(esc.to_json() if hasattr(esc, "to_json") else esc)


def _key_results(report: ValidationReport, inp: EvaluationInput) -> list[dict[str, str]]:
    """The figures a reader needs first: discrimination, calibration, workload, coverage."""
    t, b, cal, conf, wl = (
        report.test,
        report.baseline,
        report.calibration,
        report.conformal,
        report.workload,
    )
    w = inp.spec.words()
    rows = [
        _row(
            "Discrimination (AUROC)",
            f"{fmt_num(t.auroc)} (95 % CI {fmt_ci(t.auroc_ci)})",
            f"probability that a random {w.event} is ranked above a random {w.non_event}",
        ),
        _row(
            f"Sensitivity / specificity / PPV at threshold {t.threshold}",
            f"{fmt_num(t.sensitivity)} / {fmt_num(t.specificity)} / {fmt_num(t.ppv)}",
            f"share of {w.events} flagged / of {w.non_events} not flagged / of flags that are "
            f"{w.events}",
        ),
        _row(
            "Calibration",
            f"ECE {fmt_num(cal.ece)}; slope {fmt_num(cal.slope)}; intercept "
            f"{fmt_num(cal.intercept)}",
            "how closely predicted risks match observed rates (slope 1 and intercept 0 are ideal)",
        ),
        _row(
            "Alerts per 100 patients",
            _with_ci(wl.alerts_per_100, wl.alerts_per_100_ci),
            f"flags at threshold {t.threshold} the care team must act on",
        ),
    ]
    reviews = wl.reviews_per_100
    if reviews is not None:
        rows.append(
            _row(
                "Reviews per 100 patients",
                _with_ci(reviews, wl.reviews_per_100_ci),
                "cases routed to clinician review under the release's escalation policy",
            )
        )
    rows.append(
        _row(
            "Conformal coverage",
            f"{fmt_pct(conf.coverage)} overall (target at least "
            f"{fmt_pct(conf.target_coverage, 0)} in each class)",
            "share of patients whose prediction set contains their true outcome",
        )
    )
    if isinstance(b, BaselineComparison):
        rows.append(
            _row(
                f"AUROC gain over {b.name}",
                f"{fmt_num(b.auroc_difference.value)} (95 % CI {fmt_ci(b.auroc_difference.ci)})",
                "a CI above 0 means the model ranks risk better than the bedside score",
            )
        )
    return rows


def _workload(report: ValidationReport, inp: EvaluationInput) -> dict[str, Any]:
    """What the release asks of the care team at its threshold and escalation policy."""
    wl, th = report.workload, report.test.threshold
    w = inp.spec.words()
    rows = [
        _row(
            "Alerts per 100 patients",
            _with_ci(wl.alerts_per_100, wl.alerts_per_100_ci),
            f"{fmt_num(wl.true_alerts_per_100, 1)} true and "
            f"{fmt_num(wl.false_alerts_per_100, 1)} false alerts per 100 at threshold {th}",
        ),
        _row(
            f"Patients flagged per {w.event} found",
            fmt_num(wl.number_needed_to_evaluate, 1),
            "number needed to evaluate at the operating threshold",
        ),
    ]
    reviews = wl.reviews_per_100
    if reviews is not None:
        rows.append(
            _row(
                "Reviews per 100 patients",
                _with_ci(reviews, wl.reviews_per_100_ci),
                "cases queued for clinician review",
            )
        )
    deferred = wl.deferred_per_100
    if deferred is not None:
        rows.append(
            _row(
                "Flagged beyond the review budget, per 100",
                fmt_num(deferred, 1),
                "met a review condition beyond the budget: flagged, not queued",
            )
        )
    by_reason = wl.reviews_by_reason or {}
    for reason, per_100 in dict(by_reason).items():
        rows.append(
            _row(
                f"Reviews per 100: {str(reason).replace('_', ' ')}",
                fmt_num(per_100, 1),
                "cases this condition routes to review",
            )
        )
    return {"figures": rows, "escalation_policy": _escalation(report).get("statement")}


def _coverage_guarantee(report: ValidationReport, spec: Any) -> str:
    """The prediction sets' coverage guarantee, its condition and what was observed."""
    conf, w = report.conformal, spec.words()
    return (
        f"Prediction sets ({(conf.method or 'split conformal').replace('_', ' ')}) contain the true outcome for at "
        f"least {fmt_pct(conf.target_coverage, 0)} of {w.units} in each class, guaranteed "
        f"when new {w.units} are exchangeable with the calibration {w.units}; on the locked "
        f"test set coverage was {fmt_pct(conf.coverage)} overall ({w.non_events} "
        f"{fmt_pct(conf.coverage_by_class.get('0'))}, {w.events} "
        f"{fmt_pct(conf.coverage_by_class.get('1'))})."
    )


def registry_pointer(release: str = "RELEASE") -> str:
    """Return where a card's status and approvals are read, since the signed card holds none."""
    return (
        "Not part of this signed card: a release's status and approvals change after signing. "
        f"See the registry: `clinical-mlops registry card {release}` renders this card with its "
        f"status, approvals and acknowledged risks as of now (`clinical-mlops registry show "
        f"{release}` lists them), as does the release's page in the console."
    )


def _failure_modes(report: ValidationReport, spec: Any) -> list[str]:
    out = []
    w = spec.words()
    masked = report.robustness.masked
    if masked:
        worst = min(masked, key=lambda k: masked[k]["auroc_change"] or 0.0)
        out.append(
            f"Missing {worst}: AUROC changes by {fmt_num(masked[worst]['auroc_change'])} when it "
            "is "
            "not measured; predictions with missing inputs are flagged."
        )
    numeric = [
        (row.auroc, key) for key, row in report.subgroups.items() if isinstance(row.auroc, float)
    ]
    if numeric:
        lo, key = min(numeric)
        out.append(f"Lowest subgroup discrimination: {key} (AUROC {fmt_num(lo)}).")
    missed = report.error_examples.false_negatives
    if missed and isinstance(missed[0].get("risk"), int | float):
        out.append(
            f"The most confidently missed {w.event} on the locked test set had an estimated risk "
            f"of {risk_percent(float(missed[0]['risk']))}: a low estimate does not rule the "
            "outcome out."
        )
    out.append(
        f"Missed {w.events} (false negatives) at the operating threshold tend to have "
        f"near-normal values in {_inputs(spec)}; what happens after the prediction time "
        f"({_moment(spec).lower()}) cannot be foreseen."
    )
    out.append(
        "Out-of-range or implausible inputs, patients outside the intended population, and "
        "ambiguous or empty conformal sets are flagged, never silently scored."
    )
    out.append(
        "Shifts in practice (e.g. ventilation or vasopressor policy) change the meaning of the "
        "support flags and degrade performance; drift monitoring must catch this."
    )
    return out


def _tripod(report: ValidationReport, inp: EvaluationInput) -> list[dict[str, str]]:
    spec, cohort, t = inp.spec, report.cohort, report.test
    items = [
        (
            "5a",
            "Data sources",
            f"{cohort.source} raw EHR events; snapshot {cohort.snapshot_id}",
        ),
        (
            "6a",
            "Participants and setting",
            f"{spec.intended_use.population}; admissions "
            f"{spec.cohort.years[0]}–{spec.cohort.years[1]}",
        ),
        ("8a", "Outcome definition", " ".join(spec.label.description.split())),
        (
            "9b",
            "Predictors",
            f"{len(spec.features)} features from {_inputs(spec)}, each with unit, valid range, "
            "aggregation and clinical justification (see Features)",
        ),
        (
            "10",
            "Sample size",
            f"{cohort.n_stays} {spec.words().units} (train {cohort.n_train}, test "
            f"{cohort.n_test}); "
            f"test set {t.n} {spec.words().units} with {t.n_positive} {spec.words().events}",
        ),
        (
            "11",
            "Missing data",
            "median imputation fitted on the training years only and frozen in the release; "
            "robustness to missing inputs is reported",
        ),
        (
            "12c",
            "Analysis: model and selection",
            f"{inp.selected_model} chosen by mean {spec.split.cv_folds}-fold stratified CV AUROC "
            "inside the "
            "training years; temporal test set touched once",
        ),
        (
            "13",
            "Class imbalance",
            "scale_pos_weight = negatives/positives in training; probabilities re-calibrated "
            "afterwards",
        ),
        (
            "12e",
            "Calibration",
            f"{report.calibration.method} calibration; ECE "
            f"{fmt_num(report.calibration.ece)} "
            f"({report.calibration.ece_binning}), slope "
            f"{fmt_num(report.calibration.slope)}",
        ),
        (
            "14",
            "Fairness",
            "subgroup metrics by sex, age band and ethnicity where recorded; equalised-odds, "
            "demographic-parity and predictive-parity differences with bootstrap CIs",
        ),
        (
            "23a",
            "Performance with CIs, including subgroups",
            f"AUROC {fmt_num(t.auroc)} ({fmt_ci(t.auroc_ci)}); "
            f"{len(report.subgroups)} subgroups reported with CIs in the validation report",
        ),
        (
            "27a",
            "Poor or missing inputs in deployment",
            "inputs outside valid ranges or the intended population are refused or flagged; "
            "missing inputs use the frozen training median and are flagged to the clinician",
        ),
    ]
    # in TRIPOD+AI's own numbering and order (Collins et al., BMJ 2024): 8a is the outcome
    items.sort(key=lambda it: (int(re.match(r"\d+", it[0]).group()), it[0]))  # type: ignore[union-attr]
    return [{"item": i, "topic": topic, "content": content} for i, topic, content in items]


def _moment(spec: Any) -> str:
    """When the model runs, in words, from the spec's anchor and prediction time."""
    h = spec.prediction_time_hours
    if spec.anchor == "icu_admission":
        return f"At ICU hour {h:g}"
    return "At discharge" if h == 0 else f"{h:g} h after discharge"


def _inputs(spec: Any) -> str:
    """Where the features come from, in words."""
    if spec.table is not None:
        return "the declared columns of a prepared table (aggregated by its producer)"
    w = spec.observation_window
    what = "the ICU stay" if spec.anchor == "icu_admission" else "discharge"
    if spec.anchor == "icu_admission" and w.start_hours == 0:
        return f"the first {w.end_hours:g} h of {what}"
    return f"the window {w.start_hours:g} h to {w.end_hours:g} h relative to {what}"


def model_card(report: ValidationReport, inp: EvaluationInput) -> dict[str, Any]:
    """Return the model card as a JSON-ready dict (:data:`CARD_SCHEMA`; :data:`CARD_SECTIONS`)."""
    spec, t = inp.spec, report.test
    th = spec.thresholds
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        # What the card describes, as data: the release's signing check reads these.
        "operating_threshold": float(t.threshold),
        "basic_info": {
            "model_name": f"{spec.name} ({inp.selected_model})",
            "model_version": inp.model_version,
            "task": spec.title,
            "risk": spec.words().risk_words,
            "outcome": spec.words().outcome,
            "task_version": spec.version,
            "task_spec_sha256": report.task.spec_sha256,
            "developer": "the hospital ML team operating clinical-mlops",
            "validation_report_schema": report.schema_id,
        },
        "status_and_approvals": registry_pointer(),
        "release_info": {
            "version": inp.model_version,
            "ehr_compatibility": "HL7 FHIR R4 RiskAssessment and CDS Hooks 2.0 patient-view",
            "regulatory_approval": (
                "None. Decision-support software of this kind is likely a high-risk AI system "
                "(EU AI Act) and medical-device software; local governance approval is required."
            ),
        },
        "summary": (
            f"{' '.join(spec.description.split())} On the locked test set the model reaches AUROC "
            f"{fmt_num(t.auroc)} (95 % CI {fmt_ci(t.auroc_ci)}); at threshold {th.operating} "
            f"sensitivity {fmt_num(t.sensitivity)}, specificity {fmt_num(t.specificity)}, "
            f"PPV {fmt_num(t.ppv)}."
        ),
        "uses_and_directions": {
            "intended_use": " ".join(spec.intended_use.statement.split()),
            "workflow": (
                f"{_moment(spec)} the risk, its conformal set and the main "
                "contributions are shown to the care team; a flag (risk >= "
                f"{th.operating}) prompts senior review; the clinician decides and may override."
            ),
            "intended_users": list(spec.intended_use.users),
            "setting": spec.intended_use.setting,
            "target_population": spec.intended_use.population,
            "out_of_scope": list(spec.non_intended_uses),
        },
        "warnings": {
            "risks": [
                "Over-reliance: the score must not replace clinical judgement (human review "
                "required).",
                "Alert fatigue: "
                f"{report.workload.alerts_per_100:.1f} alerts per 100 patients at "
                f"{th.operating}.",
                "Self-fulfilling prophecy: a high score must not by itself lead to limiting "
                "treatment.",
            ],
            "biases": [
                f"{k}: {v.value if v.value is None else fmt_num(v.value)} "
                f"(largest for {v.attribute})"
                for k, v in report.fairness.items()
            ]
            + [a.message for a in report.fairness_alerts],
            "limitations": report.limitations,
            "coverage_guarantee": _coverage_guarantee(report, spec),
            "clinical_risk_level": (
                "High: informs clinical decisions for "
                f"{spec.intended_use.population[:1].lower()}{spec.intended_use.population[1:]}; "
                "any error is mitigated by mandatory clinician review."
            ),
        },
        "trust_ingredients": {
            "outputs": (
                f"calibrated probability of the outcome ({spec.label.name}), a conformal "
                "prediction set at "
                f"{1 - th.conformal_alpha:.0%} coverage, flags (low confidence, missing or "
                "out-of-range inputs, out of scope), top feature contributions in clinical words"
            ),
            "model_type": (f"{inp.selected_model} with {report.calibration.method} calibration"),
            "hyperparameters": inp.hyperparameters,
            "input_data": f"{len(spec.features)} features from {_inputs(spec)} (see Features)",
            "development_data": {
                "source": report.cohort.source,
                "snapshot_id": report.cohort.snapshot_id,
                "cohort_flow": report.cohort.cohort_flow,
                "train_years": list(spec.split.train_years),
                "test_years": list(spec.split.test_years),
                "prevalence": report.cohort.prevalence,
            },
            "bias_mitigation": (
                "Protected attributes declared in the task spec; subgroup performance and "
                "fairness metrics with CIs gate release; an AUROC gap above "
                f"{th.subgroup_auroc_gap} raises an alert; fairness is monitored after deployment."
            ),
            "ongoing_maintenance": (
                "Drift (ADWIN, Page-Hinkley, PSI), calibration and fairness monitored against "
                "linked "
                f"outcomes; AUROC degradation over {th.auroc_degradation:.0%} suspends autonomous "
                "use "
                "and triggers human review; scheduled periodic reviews; no automatic retraining."
            ),
            "security": (
                "Signed release bundle without pickles; inputs limited to approved features; "
                "patient data encrypted at rest; every inference recorded in a tamper-evident "
                "ledger."
            ),
            "lineage": inp.lineage,
        },
        "key_results": _key_results(report, inp),
        "workload": _workload(report, inp),
        "key_metrics": _key_metrics(report, inp),
        "features": [
            {
                "name": f.name,
                "label": f.label,
                "unit": f.shown_unit,
                "valid_range": list(f.valid_range) if f.valid_range else None,
                "aggregation": f.aggregation,
                "justification": f.justification,
                "caveat": " ".join(f.caveat.split()) if f.caveat else None,
            }
            for f in spec.approved_features
        ],
        "known_failure_modes": _failure_modes(report, spec),
        "escalation_paths": [
            "Ambiguous or empty conformal set, missing or out-of-range inputs: the prediction is "
            "flagged as low confidence and shown with that warning.",
            f"AUROC degradation over {th.auroc_degradation:.0%}, a drift alert, a subgroup AUROC "
            "gap "
            f"over {th.subgroup_auroc_gap} or anomalous request volume: automated recommendations "
            "are suspended (safe fallback to usual care) and cases are routed to human review.",
            "A clinician can override any recommendation in one step; override rates are "
            "monitored.",
            "Incidents are recorded with containment (suspend or roll back to an earlier approved "
            "release), communication and patient-notification steps.",
        ],
        "tripod_ai": _tripod(report, inp),
        "resources": [
            "validation report: report.json / report.html (same release bundle)",
            "CHAI Applied Model Card (v0.2 draft); Mitchell et al. 2019, Model Cards for Model "
            "Reporting; Collins et al. 2024, TRIPOD+AI (BMJ)",
            f"published reference: {spec.published.get('citation', 'none')}",
        ],
    }
    return json_ready(card)


def _as_of_view(as_of: dict[str, Any]) -> dict[str, Any]:
    """The registry's view of a release at rendering time, with missing keys filled."""
    risks = []
    for r in as_of.get("acknowledged_risks") or []:
        risks.append(
            {
                "risk": r.get("risk") or "—",
                "words": r.get("words") or "",
                "person": r.get("actor") or "—",
                "role": r.get("role") or "—",
                "reason": r.get("reason") or "",
                "time": r.get("at"),
            }
        )
    return {
        "rendered_at": as_of.get("rendered_at"),
        "release": as_of.get("release"),
        "status": str(as_of.get("status") or "unknown").replace("_", " "),
        "approvals": [
            {
                "person": a.get("person") or "—",
                "role": a.get("role") or "—",
                "decision": a.get("decision") or "approve",
                "why": a.get("why") or "",
                "time": a.get("time"),
            }
            for a in as_of.get("approvals") or []
        ],
        "acknowledged_risks": risks,
    }


def render_card(card: dict[str, Any], *, as_of: dict[str, Any] | None, fmt: str = "md") -> str:
    """Return the card as Markdown (``fmt="md"``) or self-contained HTML (``fmt="html"``).

    Without ``as_of`` the card states no status and points to the registry (the signed
    card). With ``as_of`` (``{"rendered_at": iso, "status": str, "release": str,
    "approvals": [...], "acknowledged_risks": [...]}``, read from the registry) it opens with
    "Status as of <rendered_at>": the status, who approved in which role and when, and each
    acknowledged risk with who accepted it and why. That section is not signed evidence; it is
    only as current as its date. Cards written before schema v2 render too.
    """
    if fmt not in CARD_FORMATS:
        raise ValueInvalid(f"format {fmt!r}: expected one of {', '.join(CARD_FORMATS)}")
    packages = (
        ((card.get("trust_ingredients") or {}).get("lineage") or {}).get("environment") or {}
    ).get("packages") or {}
    context = {
        "card": card,
        "sections": CARD_SECTIONS,
        "appendix": CARD_APPENDIX,
        "metric_groups": _METRIC_GROUPS,
        "as_of": _as_of_view(as_of) if as_of is not None else None,
        "pointer": card.get("status_and_approvals") or registry_pointer(),
        "packages": packages,
    }
    text = render(f"model_card.{fmt}.j2", **context)
    # Optional parts leave runs of blank lines in Markdown; one is enough.
    return re.sub(r"\n{3,}", "\n\n", text) if fmt == "md" else text


def write_model_card(
    report: ValidationReport, inp: EvaluationInput, out_dir: Path
) -> dict[str, Path]:
    """Write ``model_card.json``/``.md``/``.html`` to ``out_dir``; return their paths by format.

    These are the card signed into a release bundle: no status, a pointer to the registry.
    """
    card = model_card(report, inp)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "model_card.json",
        "md": out / "model_card.md",
        "html": out / "model_card.html",
    }
    paths["json"].write_text(canonical_json(card), encoding="utf-8")
    paths["md"].write_text(render_card(card, as_of=None, fmt="md"), encoding="utf-8")
    paths["html"].write_text(render_card(card, as_of=None, fmt="html"), encoding="utf-8")
    return paths
