"""The ONC HTI-1 source attributes of a release, as a predictive decision support intervention.

45 CFR 170.315(b)(11)(iv)(B) lists 31 source attributes for predictive DSIs in nine
groups (details and output; purpose; cautioned out-of-scope use; development details and
input features; fairness in development; external validation; quantitative measures of
performance; ongoing maintenance; update and continued validation or fairness assessment
schedule). :func:`build_hti1` fills each from the release's facts with its pointer, or
names the role that must complete it. Attribute 12 (use of the variables of paragraph
(b)(11)(iv)(A)(5)-(13) as input features) is detected from the task's feature contract
by :func:`classify_inputs`. Validity and fairness on local data (attributes 27 and 29)
come from the monitored windows as of the document's time: before any window with
linked outcomes they are "to be completed by" the deployer, afterwards they carry the
local figures and the window they come from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer

__all__ = [
    "ATTRIBUTES",
    "HTI1_FILE",
    "INPUT_VARIABLES",
    "build_hti1",
    "classify_inputs",
]

HTI1_FILE = "hti1-source-attributes.json"
REGULATION = "45 CFR 170.315(b)(11)(iv)(B)"

#: the 31 source attributes of a predictive DSI: (number, group, attribute)
ATTRIBUTES: tuple[tuple[int, str, str], ...] = (
    (1, "Details and output", "Name and contact information for the intervention developer"),
    (2, "Details and output", "Funding source of the intervention's technical implementation"),
    (3, "Details and output", "Description of value that the intervention produces as an output"),
    (
        4,
        "Details and output",
        "Whether the output is a prediction, classification, recommendation, evaluation, "
        "analysis, or other type of output",
    ),
    (5, "Purpose", "Intended use of the intervention"),
    (6, "Purpose", "Intended patient population(s) for the intervention's use"),
    (7, "Purpose", "Intended user(s)"),
    (
        8,
        "Purpose",
        "Intended decision-making role (e.g. informs, augments, replaces clinical management)",
    ),
    (
        9,
        "Cautioned out-of-scope use",
        "Tasks, situations, or populations where a user is cautioned against applying it",
    ),
    (
        10,
        "Cautioned out-of-scope use",
        "Known risks, inappropriate settings, inappropriate uses, or known limitations",
    ),
    (
        11,
        "Development details and input features",
        "Exclusion and inclusion criteria that influenced the training data set",
    ),
    (
        12,
        "Development details and input features",
        "Use of race, ethnicity, language, sexual orientation, gender identity, sex, date of "
        "birth, social determinants of health and health status assessment data as input features",
    ),
    (
        13,
        "Development details and input features",
        "Demographic representativeness according to those variables, at least those used as "
        "input features",
    ),
    (
        14,
        "Development details and input features",
        "Relevance of training data to the intended deployed setting",
    ),
    (
        15,
        "Fairness in development",
        "Approach taken to ensure that the intervention's output is fair",
    ),
    (16, "Fairness in development", "Approaches to manage, reduce, or eliminate bias"),
    (
        17,
        "External validation process",
        "Data source, clinical setting, or environment where validity and fairness were "
        "assessed, other than the source of training and testing data",
    ),
    (18, "External validation process", "Party that conducted the external testing"),
    (
        19,
        "External validation process",
        "Demographic representativeness of external data according to those variables",
    ),
    (20, "External validation process", "Description of the external validation process"),
    (
        21,
        "Quantitative measures of performance",
        "Validity in test data derived from the same source as the initial training data",
    ),
    (
        22,
        "Quantitative measures of performance",
        "Fairness in test data derived from the same source as the initial training data",
    ),
    (
        23,
        "Quantitative measures of performance",
        "Validity in data external to or from a different source than the training data",
    ),
    (
        24,
        "Quantitative measures of performance",
        "Fairness in data external to or from a different source than the training data",
    ),
    (
        25,
        "Quantitative measures of performance",
        "References to evaluation of use of the intervention on outcomes",
    ),
    (
        26,
        "Ongoing maintenance",
        "Process and frequency by which the intervention's validity is monitored over time",
    ),
    (27, "Ongoing maintenance", "Validity of intervention in local data"),
    (
        28,
        "Ongoing maintenance",
        "Process and frequency by which the intervention's fairness is monitored over time",
    ),
    (29, "Ongoing maintenance", "Fairness of intervention in local data"),
    (
        30,
        "Update and continued validation or fairness assessment schedule",
        "Process and frequency by which the intervention is updated",
    ),
    (
        31,
        "Update and continued validation or fairness assessment schedule",
        "Frequency by which the intervention's performance is corrected when risks related to "
        "validity and fairness are identified",
    ),
)

#: the variables of (b)(11)(iv)(A)(5)-(13) and the words in a feature's name or label that
#: mean the feature carries one: age is derived from the date of birth
INPUT_VARIABLES: dict[str, frozenset[str]] = {
    "race": frozenset({"race", "racial"}),
    "ethnicity": frozenset({"ethnicity", "ethnic", "hispanic", "latino"}),
    "language": frozenset({"language", "interpreter"}),
    "sexual orientation": frozenset({"orientation", "lgb", "lgbt", "lgbtq"}),
    "gender identity": frozenset({"gender", "transgender"}),
    "sex": frozenset({"sex"}),
    "date of birth": frozenset({"age", "dob", "birth", "birthdate", "born"}),
    "social determinants of health": frozenset(
        {
            "housing",
            "homeless",
            "homelessness",
            "insurance",
            "insured",
            "uninsured",
            "payer",
            "medicaid",
            "income",
            "poverty",
            "education",
            "employment",
            "unemployed",
            "occupation",
            "food",
            "transportation",
            "zip",
            "postcode",
            "deprivation",
            "marital",
            "neighbourhood",
            "neighborhood",
            "social",
            "financial",
            "isolation",
            "caregiver",
            "sdoh",
        }
    ),
    "health status assessments": frozenset(
        {
            "functional",
            "cognitive",
            "cognition",
            "disability",
            "disabled",
            "frailty",
            "frail",
            "mobility",
            "adl",
            "adls",
            "dementia",
            "pregnancy",
            "pregnant",
            "smoking",
            "smoker",
            "alcohol",
            "substance",
            "depression",
            "phq",
        }
    ),
}


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if w}


def classify_inputs(features: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Return, per (b)(11)(iv)(A)(5)-(13) variable, the input features that carry it.

    A feature carries a variable when a word of its name (split at ``_``) or of its
    label is one of that variable's words (:data:`INPUT_VARIABLES`); withdrawn features
    are not inputs. Each match names the feature and the word that matched, so a reader
    can check the rule.
    """
    found: dict[str, list[dict[str, str]]] = {v: [] for v in INPUT_VARIABLES}
    for f in features:
        if f.get("status") == "withdrawn":
            continue
        words = _words(str(f["name"])) | _words(str(f.get("label") or ""))
        for variable, vocabulary in INPUT_VARIABLES.items():
            hit = sorted(words & vocabulary)
            if hit:
                found[variable].append({"feature": str(f["name"]), "matched": hit[0]})
    return found


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _ci(ci: Any) -> str:
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, float) for v in ci):
        return f" (95 % CI {ci[0]:.3f}-{ci[1]:.3f})"
    return ""


def _known(n: int, value: Any, *pointers: Pointer, note: str | None = None) -> Field:
    return Field.known(f"hti1/{n}", ATTRIBUTES[n - 1][2], value, *pointers, note=note)


def _owed(n: int, owner: str, note: str | None = None) -> Field:
    return Field.to_complete(f"hti1/{n}", ATTRIBUTES[n - 1][2], owner, note=note)


def _details(facts: ReleaseFacts) -> list[Field]:
    card = facts.model_card["basic_info"]
    threshold = facts.deployment["operating_threshold"]
    return [
        _owed(
            1,
            "provider organisation",
            note=f"the release was built by {facts.release_json['author']} (release.json)",
        ),
        _owed(2, "provider organisation"),
        _known(
            3,
            f"The calibrated {card['risk']}: the probability of {card['outcome'].lower()}, "
            "with its conformal prediction set and the inputs that moved it.",
            facts.bundle("model_card.json", "/basic_info"),
            facts.bundle("report.json", "/conformal/method"),
        ),
        _known(
            4,
            f"Prediction (a probability) and classification (flagged at a risk of {threshold} "
            "or more)",
            facts.bundle("deployment.json", "/operating_threshold"),
        ),
    ]


def _purpose(facts: ReleaseFacts) -> list[Field]:
    use = facts.spec.intended_use
    return [
        _known(5, use.statement, facts.spec_pointer("/intended_use/statement")),
        _known(6, use.population, facts.spec_pointer("/intended_use/population")),
        _known(
            7,
            f"{', '.join(use.users)}; setting: {use.setting}",
            facts.spec_pointer("/intended_use/users"),
            facts.spec_pointer("/intended_use/setting"),
        ),
        _known(
            8,
            "Informs and augments clinical management; it does not replace it. Workflow: "
            + facts.model_card["uses_and_directions"]["workflow"],
            facts.bundle("model_card.json", "/uses_and_directions/workflow"),
            facts.spec_pointer("/non_intended_uses"),
        ),
    ]


def _cautioned(facts: ReleaseFacts) -> list[Field]:
    warn = facts.model_card["warnings"]
    return [
        _known(9, list(facts.spec.non_intended_uses), facts.spec_pointer("/non_intended_uses")),
        _known(
            10,
            list(facts.model_card["known_failure_modes"]) + list(warn["limitations"]),
            facts.bundle("model_card.json", "/known_failure_modes"),
            facts.bundle("model_card.json", "/warnings/limitations"),
        ),
    ]


def _representation(facts: ReleaseFacts) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in facts.report["subgroups"].values():
        out.setdefault(row["attribute"], {})[row["group"]] = int(row["n"])
    return out


def _development(facts: ReleaseFacts) -> list[Field]:
    report = facts.report
    flow = report["cohort"]["cohort_flow"]
    features = facts.task_spec_json["features"]
    used = classify_inputs(features)
    value = {
        variable: (
            "used: " + ", ".join(f"{m['feature']} (matched '{m['matched']}')" for m in matches)
            if matches
            else "not used"
        )
        for variable, matches in used.items()
    }
    feature_pointers = [
        facts.spec_pointer(f"/features/{facts.feature_index(m['feature'])}")
        for matches in used.values()
        for m in matches
    ]
    represented = _representation(facts)
    src = facts.snapshot_manifest["source"]
    dev = facts.model_card["trust_ingredients"]["development_data"]
    return [
        _known(
            11,
            [f"{s['step']}: {s['remaining']} remain ({s['excluded']} excluded)" for s in flow],
            facts.bundle("report.json", "/cohort/cohort_flow"),
            facts.spec_pointer("/cohort"),
        ),
        _known(
            12,
            value,
            facts.spec_pointer("/features"),
            *feature_pointers,
            note="detected from the task's feature contract: a feature carries a variable when "
            "a word of its name or label names it (age derives from the date of birth)",
        ),
        _known(
            13,
            {
                "locked test set, stays per group": represented,
                "test stays": report["cohort"]["n_test"],
            },
            facts.bundle("report.json", "/subgroups"),
            facts.bundle("report.json", "/cohort/n_test"),
            note="counts of the locked test set by the task's protected attributes; the "
            "training set's own counts are not part of the release bundle",
        ),
        _known(
            14,
            f"Developed on {src['source']} data ({src['source_version']}), training years "
            f"{dev['train_years'][0]}-{dev['train_years'][1]}, test years "
            f"{dev['test_years'][0]}-{dev['test_years'][1]}; intended setting: "
            f"{facts.spec.intended_use.setting}. " + report["limitations"][0],
            facts.bundle("snapshot_manifest.json", "/source"),
            facts.bundle("model_card.json", "/trust_ingredients/development_data"),
            facts.bundle("report.json", "/limitations/0"),
        ),
    ]


def _fairness(facts: ReleaseFacts) -> list[Field]:
    acceptance = facts.spec.acceptance
    rule = facts.monitoring_rules.get("fairness_gap", {})
    return [
        _known(
            15,
            facts.model_card["trust_ingredients"]["bias_mitigation"]
            + f" Release criterion: every measurable subgroup AUROC at least "
            f"{acceptance.min_subgroup_auroc}.",
            facts.bundle("model_card.json", "/trust_ingredients/bias_mitigation"),
            facts.bundle("release.json", "/acceptance/min_subgroup_auroc"),
        ),
        _known(
            16,
            f"Subgroup AUROC gaps above {facts.spec.thresholds.subgroup_auroc_gap} are validation "
            "risks a named person must accept with a reason before release (gate 3); after "
            f"deployment the fairness_gap rule ({rule.get('severity')}, owner "
            f"{rule.get('owner_role')}, action {rule.get('action')}) watches local subgroup "
            "AUROC.",
            facts.spec_pointer("/thresholds/subgroup_auroc_gap"),
            facts.monitoring("rule fairness_gap"),
            facts.registry("risk register"),
        ),
    ]


def _external(facts: ReleaseFacts) -> list[Field]:
    ext = facts.external_validations
    none = f"No external validation recorded as of {facts.as_of_iso}"
    registry = facts.registry("external validations")
    if not ext:
        return [
            _known(17, none, registry),
            _known(18, none, registry),
            _known(19, none, registry),
            _known(20, none, registry),
            _known(23, none, registry),
            _known(24, none, registry),
        ]
    pointers = [facts.ledger(v["seq"], "external_validation_recorded") for v in ext if v["seq"]]
    pointers = pointers or [registry]
    return [
        _known(
            17,
            [
                f"sites {', '.join(v['sites'])}, years {v['years'][0]}-{v['years'][1]}, "
                f"snapshot {v['snapshot_id']}"
                for v in ext
            ],
            *pointers,
        ),
        _known(18, sorted({v["actor"] for v in ext}), *pointers),
        _known(
            19,
            [{"sites": v["sites"], "n": v["n"], "n_events": v["n_events"]} for v in ext],
            *pointers,
            note="stays and events per external validation; subgroup counts are in each "
            "validation's report",
        ),
        _known(
            20,
            [
                v.get("statement") or f"{v['n']} stays evaluated once with the frozen model"
                for v in ext
            ],
            *pointers,
        ),
        _known(
            23,
            [
                f"sites {', '.join(v['sites'])}: AUROC {_fmt(v['auroc'])}{_ci(v.get('auroc_ci'))} "
                f"(development {_fmt(v.get('development_auroc'))})"
                for v in ext
            ],
            *pointers,
        ),
        _known(
            24,
            [
                {
                    "sites": v["sites"],
                    "rows": [
                        r
                        for r in v.get("rows", [])
                        if isinstance(r, dict) and "attribute" in str(r)
                    ]
                    or "subgroup results in the validation report",
                }
                for v in ext
            ],
            *pointers,
        ),
    ]


def _performance(facts: ReleaseFacts) -> list[Field]:
    test = facts.report["test"]
    fair = facts.report["fairness"]
    subgroups = {key: row["auroc"] for key, row in sorted(facts.report["subgroups"].items())}
    return [
        _known(
            21,
            {
                "auroc": f"{test['auroc']:.3f}{_ci(test.get('auroc_ci'))}",
                "ece": test["ece"],
                "brier": test["brier"],
                "calibration_slope": test["calibration_slope"],
                "sensitivity": test["sensitivity"],
                "specificity": test["specificity"],
                "ppv": test["ppv"],
                "threshold": test["threshold"],
                "n": test["n"],
                "n_positive": test["n_positive"],
            },
            facts.bundle("report.json", "/test"),
        ),
        _known(
            22,
            {
                "subgroup_auroc": subgroups,
                **{
                    name: {"value": m.get("value"), "largest_for": m.get("attribute")}
                    for name, m in sorted(fair.items())
                },
            },
            facts.bundle("report.json", "/subgroups"),
            facts.bundle("report.json", "/fairness"),
        ),
        _owed(
            25,
            "provider organisation",
            note="no evaluation of the intervention's effect on patient outcomes is known to "
            "the project",
        ),
    ]


def _monitoring(facts: ReleaseFacts) -> list[Field]:
    mon = facts.spec.monitoring
    rules = facts.monitoring_rules

    def rule_text(*names: str) -> str:
        return "; ".join(
            f"{n} ({rules[n]['severity']}, owner {rules[n]['owner_role']}, {rules[n]['action']})"
            for n in names
            if n in rules
        )

    fields = [
        _known(
            26,
            f"Every {mon.window_minutes} minutes over the last {mon.outcome_window} linked outcomes "
            f"(at least {mon.min_outcomes}, at most {mon.outcome_max_age_days} days old): "
            + rule_text(
                "auroc_degradation", "calibration", "residual_adwin", "score_psi", "input_psi"
            )
            + f"; AUROC degradation above {facts.spec.thresholds.auroc_degradation} suspends "
            "automated use.",
            facts.spec_pointer("/monitoring"),
            facts.spec_pointer("/thresholds/auroc_degradation"),
            facts.monitoring(
                "rules auroc_degradation, calibration, residual_adwin, score_psi, input_psi"
            ),
        )
    ]
    local = facts.local
    owner_note = (
        f"no monitored window with enough linked outcomes as of {facts.as_of_iso}; filled from "
        "monitoring once outcomes are linked"
    )
    if local is None or local.auroc is None:
        fields.append(_owed(27, "deployer (hospital)", note=owner_note))
    else:
        fields.append(
            _known(
                27,
                {
                    "auroc": local.auroc,
                    "auroc_se": local.auroc_se,
                    "auroc_degradation": local.auroc_degradation,
                    "ece": local.ece,
                    "brier": local.brier,
                    "calibration_slope": local.calibration_slope,
                    "n_outcomes": local.n_outcomes,
                    "window_end": local.window_end,
                    "as_of": facts.as_of_iso,
                },
                facts.monitoring(f"window {facts.version} ending {local.window_end}"),
            )
        )
    fields.append(
        _known(
            28,
            f"Every {mon.window_minutes} minutes with the outcome figures: subgroup AUROC per "
            f"protected attribute (groups with at least {mon.fairness_min_group_positives} events), "
            f"widening against validation tested at confidence {mon.fairness_confidence}: "
            + rule_text("fairness_gap"),
            facts.spec_pointer("/monitoring/fairness_confidence"),
            facts.spec_pointer("/protected_attributes"),
            facts.monitoring("rule fairness_gap"),
        )
    )
    if local is None or not any(v is not None for v in local.subgroup_auroc.values()):
        fields.append(_owed(29, "deployer (hospital)", note=owner_note))
    else:
        fields.append(
            _known(
                29,
                {
                    "subgroup_auroc": local.subgroup_auroc,
                    "gaps": local.gaps,
                    "n_outcomes": local.n_outcomes,
                    "window_end": local.window_end,
                    "as_of": facts.as_of_iso,
                },
                facts.monitoring(f"window {facts.version} ending {local.window_end}"),
            )
        )
    return fields


def _updates(facts: ReleaseFacts) -> list[Field]:
    review = facts.review
    rules = facts.monitoring_rules
    acting = sorted(n for n, r in rules.items() if r["action"] in ("suspend", "escalate"))
    alerting = facts.alerting
    pointers = [facts.monitoring("rule table"), facts.spec_pointer("/monitoring")]
    routing = "no alert routing declared (alerting.yaml absent)"
    if alerting is not None:
        default = alerting.get("default") or {}
        routing = (
            f"alerts routed by alerting.yaml; unacknowledged alerts escalate after "
            f"{default.get('escalate_after_minutes')} minutes by default; automatic suspension "
            f"{'on' if alerting.get('auto_suspend') else 'off'}"
        )
        pointers.append(facts.workspace_pointer("alerting.yaml", facts.alerting_sha256))
    return [
        _known(
            30,
            f"Periodic review every {review['interval_days']} days (next due {review['due']}); "
            "any update is a new release that passes the four gates (schema contract, metrics, "
            "evidence, named approvals) and is classified administrative, operational or "
            "clinical-impacting against the release it replaces.",
            facts.registry("review schedule"),
            facts.bundle("release.json", "/acceptance"),
        ),
        _known(
            31,
            f"Checked every {facts.spec.monitoring.window_minutes} minutes; rules that escalate or "
            f"suspend: {', '.join(acting)}; {routing}; incidents are contained by suspension or "
            "rollback to an earlier approved release.",
            *pointers,
        ),
    ]


def hti1_fields(facts: ReleaseFacts) -> list[Field]:
    """Return the 31 attributes of ``facts`` as fields ``hti1/1`` .. ``hti1/31``, in order."""
    fields = [
        *_details(facts),
        *_purpose(facts),
        *_cautioned(facts),
        *_development(facts),
        *_fairness(facts),
        *_external(facts),
        *_performance(facts),
        *_monitoring(facts),
        *_updates(facts),
    ]
    return sorted(fields, key=lambda f: int(f.key.split("/")[1]))


def build_hti1(facts: ReleaseFacts) -> Document:
    """Return the HTI-1 source attributes of the release as a JSON document."""
    fields = hti1_fields(facts)
    groups = {n: group for n, group, _ in ATTRIBUTES}
    body = {
        "format": "clinical-mlops/hti1-source-attributes/v1",
        "regulation": REGULATION,
        "release": facts.version,
        "bundle_sha256": facts.bundle_sha256,
        "as_of": facts.as_of_iso,
        "attributes": [
            {
                "number": int(f.key.split("/")[1]),
                "group": groups[int(f.key.split("/")[1])],
                "attribute": f.label,
                "value": f.value,
                "shown": f.shown(),
                "pointers": [p.to_json() for p in f.pointers],
                "to_be_completed_by": f.owner if f.missing else None,
                "note": f.note,
            }
            for f in fields
        ],
    }
    return Document(
        format="hti1",
        title=f"ONC HTI-1 source attributes — {facts.version}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=fields,
        files={HTI1_FILE: json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"},
    )
