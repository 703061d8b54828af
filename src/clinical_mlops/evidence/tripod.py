"""The TRIPOD+AI checklist of a release: each of the 27 items judged from its evidence.

TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) is the reporting guideline for studies
that develop or evaluate a clinical prediction model, by regression or machine
learning: 27 items, 52 with their sub-items, across title, abstract, introduction,
methods, open science, patient and public involvement, results and discussion.

Each sub-item is one field ``tripod/<id>`` judged from the release's facts:

* **met** — the release's evidence states what the item asks; the value says it and
  the pointers name where (bundle file and hash with a JSON path, ledger seq,
  registry record);
* **partly** — the evidence states part of it; the value says what, and the field
  names the role who must complete the rest;
* **not met** — the item applies and the evidence does not state it (the value says
  what is missing);
* **to be completed by <role>** — what only the study's people can state (funding,
  conflicts, ethics approval, registration, patient and public involvement, the
  abstract and the interpretation); never judged met by the software.

The checklist judges *reporting*, not quality: a met item says the release documents
it, not that the model is good. Item wording here is a short paraphrase; read the
statement for the full text. Outputs: ``tripod-ai.md``, ``tripod-ai.html`` and
``tripod-ai.json`` (every item with its status, value, pointers and owner).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer
from clinical_mlops.evidence.layout import Page, Section, render_page

__all__ = ["ITEMS", "STATUSES", "TripodItem", "build_tripod", "tripod_status"]

#: how a sub-item is judged when the evidence states it (else: to be completed by a role)
STATUSES = ("met", "partly", "not met")
_REFERENCE = "Collins GS et al. TRIPOD+AI statement. BMJ 2024;385:e078378"


@dataclass(frozen=True)
class TripodItem:
    """One TRIPOD+AI sub-item: its id, section, topic, what it asks (paraphrased), D/E scope."""

    id: str
    section: str
    topic: str
    asks: str
    applies: str  # "D" development, "E" evaluation, "D;E" both


def _i(id: str, section: str, topic: str, asks: str, applies: str = "D;E") -> TripodItem:
    return TripodItem(id, section, topic, asks, applies)


#: every TRIPOD+AI sub-item, in the statement's order
ITEMS: tuple[TripodItem, ...] = (
    _i("1", "Title", "Title", "study type (development/evaluation), population and outcome"),
    _i("2", "Abstract", "Abstract", "the TRIPOD+AI for Abstracts items"),
    _i("3a", "Introduction", "Background", "healthcare context, rationale, existing models"),
    _i("3b", "Introduction", "Background", "target population, purpose in care, users"),
    _i("3c", "Introduction", "Background", "known health inequalities between groups"),
    _i("4", "Introduction", "Objectives", "objectives: development, evaluation or both"),
    _i("5a", "Methods", "Data", "data sources per dataset, rationale, representativeness"),
    _i("5b", "Methods", "Data", "dates of accrual and follow-up"),
    _i("6a", "Methods", "Participants", "setting, number and location of centres"),
    _i("6b", "Methods", "Participants", "eligibility criteria"),
    _i("6c", "Methods", "Participants", "treatments received and how they were handled"),
    _i("7", "Methods", "Data preparation", "pre-processing and quality checks, across groups"),
    _i("8a", "Methods", "Outcome", "outcome, horizon, assessment, rationale, across groups"),
    _i("8b", "Methods", "Outcome", "qualifications of assessors if judgement is needed"),
    _i("8c", "Methods", "Outcome", "blinding of outcome assessment"),
    _i("9a", "Methods", "Predictors", "choice and pre-selection of initial predictors", "D"),
    _i("9b", "Methods", "Predictors", "definition, measurement and timing of predictors"),
    _i("9c", "Methods", "Predictors", "qualifications of assessors if judgement is needed"),
    _i("10", "Methods", "Sample size", "how the study size was arrived at and justified"),
    _i("11", "Methods", "Missing data", "how missing data were handled, data omitted"),
    _i("12a", "Methods", "Analytical methods", "how the data were used and partitioned", "D"),
    _i("12b", "Methods", "Analytical methods", "handling of predictors in the analysis", "D"),
    _i("12c", "Methods", "Analytical methods", "model type, building, tuning, validation", "D"),
    _i("12d", "Methods", "Analytical methods", "heterogeneity across clusters"),
    _i("12e", "Methods", "Analytical methods", "performance measures and plots, rationale"),
    _i("12f", "Methods", "Analytical methods", "model updating after evaluation", "E"),
    _i("12g", "Methods", "Analytical methods", "how predictions were calculated", "E"),
    _i("13", "Methods", "Class imbalance", "class-imbalance methods and recalibration"),
    _i("14", "Methods", "Fairness", "approaches to model fairness and rationale"),
    _i("15", "Methods", "Model output", "output type; classification thresholds", "D"),
    _i("16", "Methods", "Training versus evaluation", "differences between the datasets"),
    _i("17", "Methods", "Ethical approval", "ethics committee and consent or waiver"),
    _i("18a", "Open science", "Funding", "sources of funding and the funders' role"),
    _i("18b", "Open science", "Conflicts of interest", "conflicts of interest of authors"),
    _i("18c", "Open science", "Protocol", "where the protocol can be accessed"),
    _i("18d", "Open science", "Registration", "registry name and number, or none"),
    _i("18e", "Open science", "Data sharing", "availability of the study data"),
    _i("18f", "Open science", "Code sharing", "availability of the analytical code"),
    _i(
        "19",
        "Patient and public involvement",
        "Patient and public involvement",
        "patient and public involvement, or none",
    ),
    _i("20a", "Results", "Participants", "participant flow, with and without the outcome"),
    _i("20b", "Results", "Participants", "characteristics per source, missing data"),
    _i("20c", "Results", "Participants", "evaluation vs development distributions", "E"),
    _i("21", "Results", "Model development", "participants and events in each analysis"),
    _i("22", "Results", "Model specification", "the full model and access to it", "D"),
    _i("23a", "Results", "Model performance", "performance with CIs, including subgroups"),
    _i("23b", "Results", "Model performance", "heterogeneity of performance across clusters"),
    _i("24", "Results", "Model updating", "results of any model updating", "E"),
    _i("25", "Discussion", "Interpretation", "overall interpretation, including fairness"),
    _i("26", "Discussion", "Limitations", "limitations and their effect on bias"),
    _i("27a", "Discussion", "Usability", "handling poor or unavailable inputs in use", "D"),
    _i("27b", "Discussion", "Usability", "user interaction and expertise required", "D"),
    _i("27c", "Discussion", "Usability", "next steps for research, generalisability"),
)

_SECTIONS = (
    "Title",
    "Abstract",
    "Introduction",
    "Methods",
    "Open science",
    "Patient and public involvement",
    "Results",
    "Discussion",
)


def tripod_status(f: Field) -> str:
    """Return a checklist field's status: met, partly, not met, or to be completed by <role>."""
    if f.missing:
        return f"to be completed by {f.owner}"
    note = f.note or ""
    for status in sorted(STATUSES, key=len, reverse=True):
        if note == status or note.startswith(status + ":"):
            return status
    raise ValueError(f"{f.key}: no TRIPOD+AI status in its note {note!r}")


# -- judgement helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Judged:
    status: str  # met | partly | not met | owner
    value: Any = None
    pointers: tuple[Pointer, ...] = ()
    owner: str | None = None
    why: str | None = None


def _met(value: Any, *pointers: Pointer, why: str | None = None) -> _Judged:
    return _Judged("met", value, pointers, why=why)


def _partly(value: Any, *pointers: Pointer, owner: str, why: str) -> _Judged:
    return _Judged("partly", value, pointers, owner=owner, why=why)


def _not_met(value: Any, *pointers: Pointer, why: str) -> _Judged:
    return _Judged("not met", value, pointers, why=why)


def _owed(owner: str, why: str) -> _Judged:
    return _Judged("owner", owner=owner, why=why)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _f3(value: Any) -> str:
    v = _num(value)
    return "not measured" if v is None else f"{v:.3f}"


def _ci(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_num(v) for v in value):
        return f"{value[0]:.3f}–{value[1]:.3f}"
    return str(value)


def _years(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]}–{value[1]}"
    return str(value)


def _pct(value: Any) -> str:
    v = _num(value)
    return "not measured" if v is None else f"{100 * v:.1f} %"


# -- the items ---------------------------------------------------------------------------------


def _title(f: ReleaseFacts) -> _Judged:
    return _partly(
        f"{f.spec.title} (release {f.version}: development and temporal validation)",
        f.spec_pointer("/title"),
        f.bundle("report.json", "/cohort/split"),
        owner="clinical",
        why="the task title names the population, the outcome and the prediction time; a "
        "publication's title is its authors'",
    )


def _abstract(f: ReleaseFacts) -> _Judged:
    return _owed(
        "clinical", "the study report's authors write the abstract (TRIPOD+AI for Abstracts)"
    )


def _context(f: ReleaseFacts) -> _Judged:
    base = f.report.get("baseline") or {}
    value = {
        "context": f.spec.description,
        "kind": (
            f"prognostic: {f.spec.label.description}"
            if f.spec.label.window.start_hours >= f.spec.prediction_time_hours
            else f"diagnostic: {f.spec.label.description}"
        ),
    }
    pointers = [f.spec_pointer("/description"), f.spec_pointer("/label")]
    if base.get("source"):
        value["existing model compared"] = f"{base.get('name')}: {base['source']}"
        pointers.append(f.bundle("report.json", "/baseline/source"))
    return _partly(
        value,
        *pointers,
        owner="clinical",
        why="the rationale for a new model and the review of existing models are the "
        "clinical team's",
    )


def _population(f: ReleaseFacts) -> _Judged:
    use = f.spec.intended_use
    return _met(
        {
            "intended use": use.statement,
            "population": use.population,
            "setting": use.setting,
            "users": list(use.users),
        },
        f.spec_pointer("/intended_use"),
        f.bundle("deployment.json", "/intended_use"),
    )


def _inequalities(f: ReleaseFacts) -> _Judged:
    attrs = ", ".join(a.name.replace("_", " ") for a in f.spec.protected_attributes)
    return _owed(
        "clinical",
        f"known inequalities are a statement from the literature; the task declares the "
        f"attributes performance is compared over ({attrs})",
    )


def _objectives(f: ReleaseFacts) -> _Judged:
    split = (f.report.get("cohort") or {}).get("split") or {}
    value = (
        f"Develop {f.release.get('model_version')} on {_years(split.get('train_years'))} and "
        f"evaluate it once on the locked {split.get('kind', 'temporal')} test years "
        f"{_years(split.get('test_years'))}"
    )
    pointers = [f.bundle("report.json", "/cohort/split"), f.bundle("lineage.json", "/selection")]
    if f.external_validations:
        value += f"; {len(f.external_validations)} external validation(s) recorded"
        pointers.append(f.registry("external validations"))
    return _met(value, *pointers)


def _sources(f: ReleaseFacts) -> _Judged:
    source = (f.snapshot_manifest.get("source") or {}) if f.snapshot_manifest else {}
    split = (f.report.get("cohort") or {}).get("split") or {}
    value = {
        "source": f"{source.get('source')} ({source.get('source_version')})",
        "de-identification": source.get("deidentification"),
        "development data": f"stays admitted {_years(split.get('train_years'))}",
        "evaluation data": f"stays admitted {_years(split.get('test_years'))} (locked test set)",
        "snapshot": f.lineage.get("snapshot", {}).get("id"),
    }
    pointers = [
        f.bundle("snapshot_manifest.json", "/source"),
        f.bundle("lineage.json", "/snapshot"),
    ]
    for v in f.external_validations:
        value[f"external validation {v.get('id')}"] = (
            f"sites {', '.join(v.get('sites') or [])}, years {_years(v.get('years'))}, "
            f"snapshot {v.get('snapshot_id')}"
        )
        if v.get("seq") is not None:
            pointers.append(f.ledger(int(v["seq"]), "external validation recorded"))
    value = {k: v for k, v in value.items() if v not in (None, "")}
    return _partly(
        value,
        *pointers,
        owner="clinical",
        why="the rationale for these data and their representativeness of the target "
        "population are the clinical team's",
    )


def _dates(f: ReleaseFacts) -> _Judged:
    cohort = f.spec.cohort
    split = (f.report.get("cohort") or {}).get("split") or {}
    window = f.spec.label.window
    return _met(
        {
            "admissions": _years(list(cohort.years)),
            "development": _years(split.get("train_years")),
            "evaluation": _years(split.get("test_years")),
            "follow-up": f"outcome assessed from hour {window.start_hours:g} to hour "
            f"{window.end_hours:g} after {f.spec.anchor.replace('_', ' ')}",
        },
        f.spec_pointer("/cohort/years"),
        f.spec_pointer("/label/window"),
        f.bundle("report.json", "/cohort/split"),
    )


def _setting(f: ReleaseFacts) -> _Judged:
    sites = [str(r.get("site")) for r in (f.report.get("matrix") or {}).get("by_site") or []]
    value: dict[str, Any] = {"setting": f.spec.intended_use.setting}
    pointers = [f.spec_pointer("/intended_use/setting")]
    if sites:
        value["centres"] = f"{len(sites)}: {', '.join(sites)}"
        pointers.append(f.bundle("report.json", "/matrix/by_site"))
        return _partly(
            value,
            *pointers,
            owner="clinical",
            why="the centres are named by the source's site codes; their location and type "
            "are the clinical team's to state",
        )
    return _partly(
        value, *pointers, owner="clinical", why="the source names no centres; state them"
    )


def _eligibility(f: ReleaseFacts) -> _Judged:
    flow = (f.report.get("cohort") or {}).get("cohort_flow") or []
    return _met(
        [f"{s['step']}: {s['remaining']} remaining ({s['excluded']} excluded)" for s in flow]
        or f.spec.intended_use.population,
        f.spec_pointer("/cohort"),
        f.bundle("report.json", "/cohort/cohort_flow"),
    )


def _treatments(f: ReleaseFacts) -> _Judged:
    return _owed(
        "clinical",
        "which treatments patients received and how they bear on the outcome is a clinical "
        "statement; treatment flags that are inputs are listed under item 9b",
    )


def _preparation(f: ReleaseFacts) -> _Judged:
    contracts = (f.snapshot_manifest or {}).get("contracts") or {}
    value = {
        "data contracts": f"{contracts.get('checks')} checks, {contracts.get('hard_failed')} hard "
        f"failures, {len(contracts.get('soft') or [])} soft findings",
        "cohort rule": f"stays with more than {100 * f.spec.cohort.max_missing_feature_fraction:g} % "
        "of features missing are excluded",
        "pre-processing": "fitted on the development years only and frozen in the release "
        "(preprocess.json)",
    }
    return _partly(
        value,
        f.bundle("snapshot_manifest.json", "/contracts"),
        f.bundle("preprocess.json"),
        f.spec_pointer("/cohort/max_missing_feature_fraction"),
        owner="engineering",
        why="quality checks are reported overall, not compared across sociodemographic groups",
    )


def _outcome(f: ReleaseFacts) -> _Judged:
    label = f.spec.label
    return _partly(
        {
            "outcome": label.description,
            "horizon": f"hours {label.window.start_hours:g}–{label.window.end_hours:g} after "
            f"{f.spec.anchor.replace('_', ' ')}",
            "assessment": "derived by the snapshot's code from recorded events",
        },
        f.spec_pointer("/label"),
        f.bundle("lineage.json", "/snapshot/feature_sql"),
        owner="clinical",
        why="the rationale for this outcome and whether it is recorded alike across "
        "sociodemographic groups are the clinical team's",
    )


def _assessors(f: ReleaseFacts) -> _Judged:
    return _owed(
        "clinical",
        f"whether recording {f.spec.words().events} needs human judgement, and by whom, is a "
        "clinical statement",
    )


def _blinding(f: ReleaseFacts) -> _Judged:
    return _met(
        "Outcomes are derived by code from events recorded after the prediction time; no "
        "person assessing the outcome sees the model's predictions",
        f.spec_pointer("/label/window"),
        f.bundle("lineage.json", "/snapshot/feature_sql"),
    )


def _choice(f: ReleaseFacts) -> _Judged:
    approved = [x for x in f.spec.features if x.status == "approved"]
    return _met(
        [f"{x.label}: {x.justification}" for x in approved],
        f.spec_pointer("/features"),
        why="each input carries a clinical justification and an approval status; only "
        "approved inputs reach the model",
    )


def _predictors(f: ReleaseFacts) -> _Judged:
    ow = f.spec.observation_window
    rows = []
    for x in f.spec.features:
        unit = f" [{x.display_unit or x.unit}]" if (x.display_unit or x.unit) else ""
        rng = f", valid {x.valid_range[0]:g}–{x.valid_range[1]:g}" if x.valid_range else ""
        rows.append(
            f"{x.label}{unit}: {x.aggregation} over hours {ow.start_hours:g}–{ow.end_hours:g}{rng}"
        )
    return _met(
        rows,
        f.spec_pointer("/features"),
        f.bundle("feature_schema.json", "/features"),
    )


def _predictor_assessors(f: ReleaseFacts) -> _Judged:
    return _owed(
        "clinical",
        "which inputs rest on a clinician's judgement (scores, coded diagnoses) and who "
        "records them is a clinical statement",
    )


def _sample_size(f: ReleaseFacts) -> _Judged:
    c = f.report.get("cohort") or {}
    t = f.report.get("test") or {}
    return _partly(
        f"{c.get('n_stays')} stays ({c.get('n_train')} development, {c.get('n_test')} "
        f"evaluation with {t.get('n_positive')} {f.spec.words().events}); prevalence "
        f"{_pct(c.get('prevalence'))}",
        f.bundle("report.json", "/cohort"),
        f.bundle("report.json", "/test/n_positive"),
        owner="engineering",
        why="the size is what the source held; no sample size calculation is recorded",
    )


def _missing(f: ReleaseFacts) -> _Judged:
    rob = f.report.get("robustness") or {}
    return _met(
        {
            "imputation": "training-median imputation fitted on the development years, frozen "
            "in the release; a missing input is flagged on every prediction",
            "omitted": f"stays missing more than "
            f"{100 * f.spec.cohort.max_missing_feature_fraction:g} % of features",
            "robustness": rob.get("method", "masked-input check"),
        },
        f.bundle("preprocess.json"),
        f.bundle("report.json", "/cohort/missingness_train"),
        f.bundle("report.json", "/robustness"),
    )


def _partition(f: ReleaseFacts) -> _Judged:
    split = (f.report.get("cohort") or {}).get("split") or {}
    cfg = (f.lineage.get("training") or {}).get("config") or {}
    return _met(
        f"{split.get('kind', 'temporal')} split: development {_years(split.get('train_years'))}, "
        f"locked evaluation {_years(split.get('test_years'))} (used once); "
        f"{(f.report.get('cv') or {}).get('folds')}-fold cross-validation inside development; "
        f"{_pct(cfg.get('calibration_fraction'))} of development held out for calibration and "
        "conformal sets",
        f.bundle("report.json", "/cohort/split"),
        f.bundle("lineage.json", "/training"),
    )


def _handling(f: ReleaseFacts) -> _Judged:
    kinds: dict[str, int] = {}
    for x in f.spec.features:
        kinds[x.kind] = kinds.get(x.kind, 0) + 1
    return _met(
        {
            "inputs": ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
            "categorical": "one indicator per declared category",
            "numeric": "units converted to the declared unit, out-of-range values treated as "
            "artefacts, median imputation",
        },
        f.bundle("preprocess.json"),
        f.bundle("feature_schema.json", "/features"),
    )


def _model(f: ReleaseFacts) -> _Judged:
    sel = f.lineage.get("selection") or {}
    cfg = (f.lineage.get("training") or {}).get("config") or {}
    return _met(
        {
            "model": sel.get("selected_model"),
            "candidates": ", ".join(cfg.get("candidates") or sel.get("cv", {}).keys()),
            "selection rule": sel.get("rule"),
            "hyperparameters": sel.get("hyperparameters"),
            "tuning": f"{cfg.get('search_iterations')} random-search iterations per candidate",
            "calibration": (f.report.get("calibration") or {}).get("method"),
            "internal validation": "cross-validation inside the development years; locked "
            "temporal test set",
            "seed": f.lineage.get("seed"),
        },
        f.bundle("lineage.json", "/selection"),
        f.bundle("lineage.json", "/training/config"),
        f.bundle("report.json", "/calibration/method"),
    )


def _clusters(f: ReleaseFacts) -> _Judged:
    matrix = f.report.get("matrix") or {}
    if not matrix.get("rows") and not matrix.get("by_site"):
        return _not_met(
            "The validation report has no performance by site or period",
            f.bundle("report.json"),
            why="heterogeneity across clusters is not quantified",
        )
    return _met(
        f"{matrix.get('method')} (strata: {', '.join(matrix.get('strata') or [])})",
        f.bundle("report.json", "/matrix"),
    )


def _measures(f: ReleaseFacts) -> _Judged:
    return _met(
        {
            "discrimination": "AUROC with 95 % bootstrap CI",
            "calibration": f"ECE ({(f.report.get('methods') or {}).get('ece_binning')}), slope, "
            "intercept, reliability diagram",
            "clinical utility": "decision curve (net benefit), alerts and reviews per 100",
            "comparison": f"against {(f.report.get('baseline') or {}).get('name')}, paired "
            "bootstrap",
            "uncertainty": (f.report.get("methods") or {}).get("ci"),
        },
        f.bundle("report.json", "/methods"),
        f.bundle("report.json", "/decision_curve"),
        f.bundle("report.json", "/baseline/auroc_difference"),
    )


def _updating(f: ReleaseFacts) -> _Judged:
    if f.site_recalibrations:
        return _met(
            [
                f"{r['release']}: recalibrated at site {r['site']} ({r['status']})"
                for r in f.site_recalibrations
            ],
            f.registry("site recalibrations of the task"),
        )
    return _met(
        "No updating of this release is recorded; a local recalibration would be a new "
        "release governed like any other",
        f.registry("site recalibrations of the task"),
    )


def _how_predicted(f: ReleaseFacts) -> _Judged:
    return _met(
        "The signed bundle's model, pre-processing, calibrator and conformal thresholds "
        f"(JSON, no pickles), served through the HTTP API and "
        f"{(f.model_card.get('release_info') or {}).get('ehr_compatibility')}",
        f.bundle("model.json"),
        f.bundle("preprocess.json"),
        f.bundle("calibrator.json"),
        f.bundle("model_card.json", "/release_info/ehr_compatibility"),
    )


def _imbalance(f: ReleaseFacts) -> _Judged:
    training = f.lineage.get("training") or {}
    weight = _num(training.get("scale_pos_weight"))
    cal = (f.report.get("calibration") or {}).get("method")
    if weight is None:
        return _met(
            f"No class weighting recorded; probabilities calibrated by {cal}",
            f.bundle("lineage.json", "/training"),
            f.bundle("report.json", "/calibration/method"),
        )
    return _met(
        f"Positive class weighted {weight:.3g}× (negatives/positives in development); "
        f"probabilities recalibrated afterwards by {cal}",
        f.bundle("lineage.json", "/training/scale_pos_weight"),
        f.bundle("report.json", "/calibration/method"),
    )


def _fairness(f: ReleaseFacts) -> _Judged:
    attrs = ", ".join(a.name.replace("_", " ") for a in f.spec.protected_attributes)
    acked = [r for r in f.risks if r.get("kind") == "fairness"]
    pointers = [
        f.spec_pointer("/protected_attributes"),
        f.bundle("report.json", "/fairness"),
        f.spec_pointer("/thresholds/subgroup_auroc_gap"),
    ]
    value = {
        "attributes": attrs,
        "metrics": "subgroup AUROC, equalised-odds, demographic-parity and predictive-parity "
        "differences with bootstrap CIs",
        "release rule": f"a subgroup AUROC gap above {f.spec.thresholds.subgroup_auroc_gap:g} is a "
        "risk a clinical or compliance officer must acknowledge before validation (gate 3); "
        "the fairness_gap monitor compares subgroups on live outcomes",
    }
    for r in acked:
        ack = r.get("acknowledgement")
        if ack and ack.get("seq") is not None:
            pointers.append(f.ledger(int(ack["seq"]), f"risk acknowledged: {r['id']}"))
    if acked:
        value["risks acknowledged"] = f"{len(acked)} fairness risk(s) in the register"
    return _met(value, *pointers)


def _output(f: ReleaseFacts) -> _Judged:
    return _partly(
        {
            "output": (f.model_card.get("trust_ingredients") or {}).get("outputs"),
            "threshold": f"flag at calibrated risk >= {f.release.get('threshold')}",
            "review": (f.deployment.get("escalation") or {}).get("statement"),
        },
        f.bundle("model_card.json", "/trust_ingredients/outputs"),
        f.bundle("deployment.json", "/operating_threshold"),
        f.bundle("report.json", "/workload/by_threshold"),
        owner="clinical",
        why="the threshold is declared in the task spec with its workload at each threshold; "
        "why this threshold was chosen is the clinical team's to state",
    )


def _differences(f: ReleaseFacts) -> _Judged:
    c = f.report.get("cohort") or {}
    test = c.get("test_set") or {}
    train_miss = c.get("missingness_train") or {}
    test_miss = test.get("missingness") or {}
    shifts = sorted(
        (
            (abs(test_miss[k] - train_miss[k]), k)
            for k in set(train_miss) & set(test_miss)
            if _num(test_miss[k]) is not None and _num(train_miss[k]) is not None
        ),
        reverse=True,
    )
    value = {
        "setting, eligibility, outcome, predictors": "the same task spec and source; the "
        "evaluation data are later admissions",
        "prevalence": f"{_pct(c.get('prevalence_train'))} development, "
        f"{_pct(c.get('prevalence_test'))} evaluation",
    }
    if shifts:
        _, k = shifts[0]
        value["largest missingness difference"] = (
            f"{k}: {_pct(train_miss[k])} development, {_pct(test_miss[k])} evaluation"
        )
    return _met(
        value,
        f.bundle("report.json", "/cohort/prevalence_train"),
        f.bundle("report.json", "/cohort/test_set"),
        f.bundle("report.json", "/cohort/missingness_train"),
    )


def _ethics(f: ReleaseFacts) -> _Judged:
    return _owed(
        "compliance",
        "the ethics committee's approval or waiver is held by the organisation, not the release",
    )


def _funding(f: ReleaseFacts) -> _Judged:
    return _owed("provider organisation", "funding is not recorded by the software")


def _conflicts(f: ReleaseFacts) -> _Judged:
    return _owed("provider organisation", "declarations are made by the study's authors")


def _protocol(f: ReleaseFacts) -> _Judged:
    return _partly(
        f"Task spec {f.spec.name} v{f.spec.version} (sha256 {f.report.get('task', {}).get('spec_sha256')}) "
        "declares cohort, outcome, predictors, split and acceptance criteria before "
        "validation, sealed in the release",
        f.bundle("task_spec.json"),
        f.bundle("release.json", "/spec_sha256"),
        owner="provider organisation",
        why="where a study protocol can be accessed is the organisation's to state",
    )


def _registration(f: ReleaseFacts) -> _Judged:
    return _owed("provider organisation", "study registration is not recorded by the software")


def _data_sharing(f: ReleaseFacts) -> _Judged:
    source = (f.snapshot_manifest or {}).get("source") or {}
    return _partly(
        f"Content-addressed snapshot {f.lineage.get('snapshot', {}).get('id')} from "
        f"{source.get('source')}; raw file hashes in the snapshot manifest",
        f.bundle("snapshot_manifest.json", "/source"),
        f.bundle("lineage.json", "/snapshot/id"),
        owner="data protection officer",
        why="whether and how the patient data can be shared is the data controller's decision",
    )


def _code_sharing(f: ReleaseFacts) -> _Judged:
    code = f.lineage.get("code") or {}
    return _partly(
        f"clinical-mlops {code.get('package_version')} at commit {code.get('commit')}"
        f"{' (uncommitted changes)' if code.get('dirty') else ''}; environment "
        f"{(f.lineage.get('environment') or {}).get('packages_sha256')}",
        f.bundle("lineage.json", "/code"),
        f.bundle("lineage.json", "/environment"),
        owner="provider organisation",
        why="where the code is available, and under which licence, is the organisation's to state",
    )


def _ppi(f: ReleaseFacts) -> _Judged:
    return _owed(
        "provider organisation", "patient and public involvement is not recorded by the software"
    )


def _flow(f: ReleaseFacts) -> _Judged:
    c = f.report.get("cohort") or {}
    test = c.get("test_set") or {}
    flow = c.get("cohort_flow") or []
    n_train = c.get("n_train")
    prev_train = _num(c.get("prevalence_train"))
    events_train = round(n_train * prev_train) if n_train and prev_train is not None else None
    return _met(
        {
            "flow": [f"{s['step']}: {s['remaining']}" for s in flow] or "no flow recorded",
            "development": f"{n_train} stays, {events_train} with the outcome",
            "evaluation": f"{test.get('n')} stays, {test.get('n_positive')} with the outcome",
        },
        f.bundle("report.json", "/cohort/cohort_flow"),
        f.bundle("report.json", "/cohort/prevalence_train"),
        f.bundle("report.json", "/cohort/test_set"),
    )


def _characteristics(f: ReleaseFacts) -> _Judged:
    subgroups = f.report.get("subgroups") or {}
    sites = (f.report.get("matrix") or {}).get("by_site") or []
    return _met(
        {
            "overall": f"{(f.report.get('cohort') or {}).get('n_stays')} stays, prevalence "
            f"{_pct((f.report.get('cohort') or {}).get('prevalence'))}",
            "by group": [
                f"{k}: n {v.get('n')}, prevalence {_pct(v.get('prevalence'))}"
                for k, v in subgroups.items()
            ]
            or "no subgroups declared",
            "by site": [
                f"{r.get('site')}: n {r.get('n')}, events {r.get('n_events')}" for r in sites
            ]
            or "one source without sites",
            "missing data": "per input, development and evaluation (report cohort section)",
        },
        f.bundle("report.json", "/subgroups"),
        f.bundle("report.json", "/matrix/by_site"),
        f.bundle("report.json", "/cohort/missingness_train"),
    )


def _distributions(f: ReleaseFacts) -> _Judged:
    return _partly(
        "Prevalence and the missing share of every input, development against evaluation; "
        "the development distribution of every input is kept as the reference profile",
        f.bundle("report.json", "/cohort/test_set"),
        f.bundle("reference_profile.json"),
        owner="engineering",
        why="the evaluation data's distribution of each input is not tabulated beside the "
        "development data's",
    )


def _counts(f: ReleaseFacts) -> _Judged:
    training = f.lineage.get("training") or {}
    test = f.report.get("test") or {}
    return _met(
        {
            "development": f"{training.get('n_train')} stays (model fit on "
            f"{training.get('n_fit')}; calibration {training.get('n_calibration_isotonic')}, "
            f"conformal {training.get('n_calibration_conformal')})",
            "evaluation": f"{test.get('n')} stays, {test.get('n_positive')} with the outcome",
        },
        f.bundle("lineage.json", "/training"),
        f.bundle("report.json", "/test/n"),
    )


def _specification(f: ReleaseFacts) -> _Judged:
    return _partly(
        f"Signed release bundle {f.bundle_name} (manifest sha256 {f.bundle_sha256}): model, "
        "pre-processing, calibrator and conformal thresholds as JSON, replayable bit for bit",
        f.bundle("model.json"),
        f.bundle("release.json"),
        owner="provider organisation",
        why="restrictions on access to and reuse of the model are the organisation's to state",
    )


def _performance(f: ReleaseFacts) -> _Judged:
    t = f.report.get("test") or {}
    subgroups = f.report.get("subgroups") or {}
    measured = {k: v for k, v in subgroups.items() if _num(v.get("auroc")) is not None}
    short = sorted(set(subgroups) - set(measured))
    value: dict[str, Any] = {
        "AUROC": f"{_f3(t.get('auroc'))} (95 % CI {_ci(t.get('auroc_ci'))})",
        "calibration": f"ECE {_f3(t.get('ece'))}, slope {_f3(t.get('calibration_slope'))}, "
        f"intercept {_f3(t.get('calibration_intercept'))}, Brier {_f3(t.get('brier'))}",
        "subgroups": [
            f"{k}: AUROC {_f3(v['auroc'])} ({_ci(v.get('auroc_ci'))})" for k, v in measured.items()
        ]
        or "no subgroup with enough stays to measure",
    }
    if short:
        value["too few to measure"] = ", ".join(short)
    pointers = (
        f.bundle("report.json", "/test/auroc_ci"),
        f.bundle("report.json", "/calibration"),
        f.bundle("report.json", "/subgroups"),
    )
    if _num(t.get("auroc")) is None:
        return _not_met(value, *pointers, why="no AUROC could be measured on the test set")
    return _met(value, *pointers)


def _heterogeneity(f: ReleaseFacts) -> _Judged:
    sites = (f.report.get("matrix") or {}).get("by_site") or []
    measured = [r for r in sites if _num(r.get("auroc")) is not None]
    rows = [
        f"{r.get('site')}: AUROC "
        f"{_f3(r['auroc']) if _num(r.get('auroc')) is not None else r.get('auroc')}, "
        f"ECE {_f3(r.get('ece'))}"
        for r in sites
    ]
    if not sites:
        return _not_met(
            "No performance by site in the validation report",
            f.bundle("report.json"),
            why="clusters were not examined",
        )
    if not measured:
        return _partly(
            rows,
            f.bundle("report.json", "/matrix/by_site"),
            owner="engineering",
            why="every site had too few outcomes to measure discrimination; validate on more "
            "stays per site",
        )
    return _met(rows, f.bundle("report.json", "/matrix/by_site"))


def _updated_results(f: ReleaseFacts) -> _Judged:
    if f.site_recalibrations:
        return _partly(
            [f"{r['release']} (site {r['site']}, {r['status']})" for r in f.site_recalibrations],
            f.registry("site recalibrations of the task"),
            owner="engineering",
            why="each updated release carries its own validation report; cite them",
        )
    return _met(
        "No model updating of this release is recorded",
        f.registry("site recalibrations of the task"),
    )


def _interpretation(f: ReleaseFacts) -> _Judged:
    pointers = [f.bundle("report.json", "/fairness_alerts")]
    for r in f.risks:
        ack = r.get("acknowledgement")
        if ack and ack.get("seq") is not None:
            pointers.append(f.ledger(int(ack["seq"]), f"risk acknowledged: {r['id']}"))
    alerts = f.report.get("fairness_alerts") or []
    return _partly(
        [a.get("message") for a in alerts if a.get("message")]
        or "No fairness alert in the validation report",
        *pointers,
        owner="clinical",
        why="the overall interpretation against the objectives and previous studies is the "
        "clinical team's",
    )


def _limitations(f: ReleaseFacts) -> _Judged:
    return _met(
        [*(f.report.get("limitations") or []), *(f.model_card.get("known_failure_modes") or [])],
        f.bundle("report.json", "/limitations"),
        f.bundle("model_card.json", "/known_failure_modes"),
    )


def _poor_inputs(f: ReleaseFacts) -> _Judged:
    return _met(
        [
            *(f.model_card.get("escalation_paths") or [])[:1],
            "Undeclared inputs are refused; values outside a feature's valid range are treated "
            "as missing and flagged",
            f"Stays outside the validated scope are routed to review "
            f"({', '.join((f.deployment.get('escalation') or {}).get('review_on') or [])})",
        ],
        f.bundle("model_card.json", "/escalation_paths"),
        f.bundle("feature_schema.json", "/features"),
        f.bundle("deployment.json", "/escalation"),
    )


def _interaction(f: ReleaseFacts) -> _Judged:
    return _partly(
        {
            "users": list(f.spec.intended_use.users),
            "workflow": (f.model_card.get("uses_and_directions") or {}).get("workflow"),
            "review": (f.deployment.get("escalation") or {}).get("statement"),
        },
        f.bundle("model_card.json", "/uses_and_directions"),
        f.bundle("deployment.json", "/escalation/statement"),
        owner="deployer (hospital)",
        why="the training and expertise users need are the deploying hospital's to set",
    )


def _next_steps(f: ReleaseFacts) -> _Judged:
    need = f.spec.acceptance.min_external_sites
    done = sorted({str(s) for v in f.external_validations for s in v.get("sites") or []})
    return _partly(
        f"External validation: {len(done)} site(s) recorded"
        f"{' (' + ', '.join(done) + ')' if done else ''}, {need} required before full approval; "
        "live calibration, discrimination and fairness are monitored against outcomes",
        f.spec_pointer("/acceptance/min_external_sites"),
        f.registry("external validations"),
        owner="clinical",
        why="the research agenda for applicability and generalisability is the clinical team's",
    )


_JUDGE: dict[str, Callable[[ReleaseFacts], _Judged]] = {
    "1": _title,
    "2": _abstract,
    "3a": _context,
    "3b": _population,
    "3c": _inequalities,
    "4": _objectives,
    "5a": _sources,
    "5b": _dates,
    "6a": _setting,
    "6b": _eligibility,
    "6c": _treatments,
    "7": _preparation,
    "8a": _outcome,
    "8b": _assessors,
    "8c": _blinding,
    "9a": _choice,
    "9b": _predictors,
    "9c": _predictor_assessors,
    "10": _sample_size,
    "11": _missing,
    "12a": _partition,
    "12b": _handling,
    "12c": _model,
    "12d": _clusters,
    "12e": _measures,
    "12f": _updating,
    "12g": _how_predicted,
    "13": _imbalance,
    "14": _fairness,
    "15": _output,
    "16": _differences,
    "17": _ethics,
    "18a": _funding,
    "18b": _conflicts,
    "18c": _protocol,
    "18d": _registration,
    "18e": _data_sharing,
    "18f": _code_sharing,
    "19": _ppi,
    "20a": _flow,
    "20b": _characteristics,
    "20c": _distributions,
    "21": _counts,
    "22": _specification,
    "23a": _performance,
    "23b": _heterogeneity,
    "24": _updated_results,
    "25": _interpretation,
    "26": _limitations,
    "27a": _poor_inputs,
    "27b": _interaction,
    "27c": _next_steps,
}


def _field(item: TripodItem, judged: _Judged) -> Field:
    key, label = f"tripod/{item.id}", f"{item.id} {item.topic}: {item.asks}"
    if judged.status == "owner" and judged.owner is not None:
        return Field.to_complete(key, label, judged.owner, note=judged.why)
    note = judged.status + (f": {judged.why}" if judged.why else "")
    return Field(key, label, judged.value, judged.pointers, owner=judged.owner, note=note)


def _json(doc: Document) -> bytes:
    by_key = {f.key: f for f in doc.fields}
    items = []
    for item in ITEMS:
        f = by_key[f"tripod/{item.id}"]
        items.append(
            {
                "item": item.id,
                "section": item.section,
                "topic": item.topic,
                "asks": item.asks,
                "applies": item.applies,
                "status": tripod_status(f),
            }
            | {k: v for k, v in f.to_json().items() if k not in ("key", "label")}
        )
    body = {
        "format": "clinical-mlops/tripod-ai/v1",
        "checklist": _REFERENCE,
        "release": doc.release,
        "as_of": doc.as_of,
        "counts": {
            s: sum(1 for f in doc.fields if tripod_status(f).startswith(s))
            for s in (*STATUSES, "to be completed")
        },
        "items": items,
    }
    return (json.dumps(body, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def build_tripod(facts: ReleaseFacts) -> Document:
    """Return the TRIPOD+AI checklist of the release: 52 sub-items judged, in MD, HTML and JSON.

    Every field is met, partly or not met with the pointers to its evidence (and, when
    partly, the role who must complete it), or to be completed by a named role.
    """
    fields = [_field(item, _JUDGE[item.id](facts)) for item in ITEMS]
    doc = Document(
        format="tripod-ai",
        title=f"TRIPOD+AI checklist — {facts.spec.title}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=fields,
    )
    page = Page(
        framework=_REFERENCE,
        sections=tuple(
            Section(
                id=name.lower().replace(" ", "-"),
                title=name,
                keys=tuple(f"tripod/{i.id}" for i in ITEMS if i.section == name),
            )
            for name in _SECTIONS
        ),
        status=tripod_status,
        preamble=(
            "Each sub-item is judged from the signed release bundle, the registry and the "
            "ledger: met, partly or not met, with the evidence it was read from; what only "
            "the study's people can state is to be completed by the named role. A checklist "
            "judges reporting, not the model's quality.",
        ),
    )
    md, page_html = render_page(doc, page)
    doc.files = {"tripod-ai.md": md, "tripod-ai.html": page_html, "tripod-ai.json": _json(doc)}
    return doc
