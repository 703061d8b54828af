"""The CHAI Applied Model Card (v0.2 XML schema) of a release, every element from its evidence.

Each element of the schema (``standards/chai-mc-v0.2.xsd``) is filled from the release's
facts: the signed model card and validation report, the task spec, the registry's
approvals and status history, the monitored windows. A field's key is the element's
path (``BasicInfo/ModelName``), with ``#part`` when several facts make one element's
text (their texts are joined, one per line). What the project cannot know — the
developer's contact, the funding source, publications — is written as ``To be
completed by <role>``; the schema has no room for pointers, so they are kept in the
document's fields and written beside the card as ``chai-model-card.evidence.json``
(element path -> pointers or owner). The XML is validated against the schema offline
(the W3C XML Signature schema it imports is kept beside it) before it is returned: an
invalid card is a bug and raises, never a file.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer

if TYPE_CHECKING:
    from lxml import etree

__all__ = [
    "CHAI_NAMESPACE",
    "EVIDENCE_FILE",
    "SCHEMA_DIR",
    "XML_FILE",
    "build_chai",
    "chai_schema",
    "validate_chai",
]

CHAI_NAMESPACE = "https://mc.chai.org/v0.2/schema.xsd"
XMLDSIG_URL = "http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd"
SCHEMA_DIR = Path(__file__).with_name("standards")
XML_FILE = "chai-model-card.xml"
EVIDENCE_FILE = "chai-model-card.evidence.json"

#: the schema's elements in order: (path, required); a path ending in ``/`` is a container
_LAYOUT: tuple[tuple[str, bool], ...] = (
    ("BasicInfo/ModelName", True),
    ("BasicInfo/ModelDeveloper", True),
    ("BasicInfo/DeveloperContact", True),
    ("ReleaseInfo/ReleaseStage", True),
    ("ReleaseInfo/ReleaseDate", True),
    ("ReleaseInfo/ReleaseVersion", True),
    ("ReleaseInfo/GlobalAvailability", True),
    ("ReleaseInfo/EHRCompatibility/EHR", False),
    ("ReleaseInfo/RegulatoryApproval", False),
    ("ModelSummary/Summary", True),
    ("ModelSummary/Keywords/Keyword", False),
    ("UsesAndDirections/IntendedUseAndWorkflow", True),
    ("UsesAndDirections/PrimaryIntendedUsers", True),
    ("UsesAndDirections/HowToUse", True),
    ("UsesAndDirections/TargetedPatientPopulation", True),
    ("UsesAndDirections/CautionedOutOfScopeSettings", True),
    ("Warnings/KnownRisksAndLimitations", True),
    ("Warnings/KnownBiasesOrEthicalConsiderations", True),
    ("Warnings/ClinicalRiskLevel", True),
    ("TrustIngredients/AISystemFacts/OutcomesAndOutputs", True),
    ("TrustIngredients/AISystemFacts/ModelType", True),
    ("TrustIngredients/AISystemFacts/FoundationModels", False),
    ("TrustIngredients/AISystemFacts/InputDataSource", True),
    ("TrustIngredients/AISystemFacts/OutputAndInputDataTypes", True),
    ("TrustIngredients/AISystemFacts/DevelopmentDataCharacterization", True),
    ("TrustIngredients/AISystemFacts/BiasMitigationApproaches", True),
    ("TrustIngredients/AISystemFacts/OngoingMaintenance", True),
    ("TrustIngredients/AISystemFacts/Security", False),
    ("TrustIngredients/AISystemFacts/Transparency", False),
    ("TrustIngredients/TransparencyInformation/FundingSource", True),
    ("TrustIngredients/TransparencyInformation/ThirdPartyInformation", False),
    ("TrustIngredients/TransparencyInformation/StakeholdersConsulted", True),
    *(
        (f"KeyMetrics/{group}/{leaf}", True)
        for group in ("UsefulnessUsabilityEfficacy", "FairnessEquity", "SafetyReliability")
        for leaf in (
            "MetricGoal",
            "Results/MetricResult",
            "Interpretation",
            "TestType",
            "TestingDataDescription",
            "ValidationProcessAndJustification",
        )
    ),
    ("Resources/EvaluationReferences", False),
    ("Resources/ClinicalTrial", False),
    ("Resources/PeerReviewedPublications", True),
    ("Resources/ReimbursementStatus", False),
    ("Resources/PatientConsentOrDisclosure", True),
    ("Bibliography", True),
)
#: elements repeated once per field (each field one element) rather than joined
_REPEATED = {
    "ReleaseInfo/EHRCompatibility/EHR",
    "ModelSummary/Keywords/Keyword",
    *(
        f"KeyMetrics/{g}/Results/MetricResult"
        for g in ("UsefulnessUsabilityEfficacy", "FairnessEquity", "SafetyReliability")
    ),
}
_GROUPS = {
    "UsefulnessUsabilityEfficacy": "usefulness_usability_efficacy",
    "FairnessEquity": "fairness_equity",
    "SafetyReliability": "safety_reliability",
}


class _LocalSchemas:
    """An lxml resolver that serves the imported W3C schema from ``standards/``."""

    def __new__(cls) -> Any:
        from lxml import etree

        class Resolver(etree.Resolver):
            def resolve(self, url: str, pubid: str | None, context: Any) -> Any:
                if url == XMLDSIG_URL:
                    return self.resolve_filename(
                        str(SCHEMA_DIR / "xmldsig-core-schema.xsd"), context
                    )
                return None

        return Resolver()


@cache
def chai_schema() -> etree.XMLSchema:
    """Return the CHAI v0.2 schema, its XML Signature import resolved offline."""
    from lxml import etree

    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_LocalSchemas())
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "chai-mc-v0.2.xsd"), parser))


def validate_chai(xml: bytes) -> list[str]:
    """Return the schema errors of a CHAI model card (empty: valid), one line each."""
    from lxml import etree

    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        doc = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    schema = chai_schema()
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


# -- the fields ---------------------------------------------------------------------------
def _lines(items: Any) -> str:
    return "\n".join(f"- {i}" for i in items)


def _ledger_people(facts: ReleaseFacts) -> tuple[list[str], list[Pointer]]:
    """Return the approvals as text and their ledger pointers."""
    texts, pointers = [], []
    for a in facts.approvals:
        texts.append(f"{a['role']}: {a['person']} ({a['decision']}, {a['time']})")
        if a.get("seq") is not None:
            pointers.append(facts.ledger(a["seq"], f"approval by {a['role']}"))
    return texts, pointers or [facts.registry("approvals")]


def _basic(facts: ReleaseFacts) -> list[Field]:
    card = facts.model_card["basic_info"]
    return [
        Field.known(
            "BasicInfo/ModelName",
            "Model name",
            f"{facts.spec.presentation.title if facts.spec.presentation else card['task']} "
            f"({card['model_name']})",
            facts.bundle("model_card.json", "/basic_info/model_name"),
            facts.spec_pointer("/presentation/title"),
        ),
        Field.to_complete(
            "BasicInfo/ModelDeveloper",
            "Model developer",
            "provider organisation",
            note=f"the release was built by {facts.release_json['author']} (release.json); "
            "the legal developer is the organisation that places the model in service",
        ),
        Field.to_complete(
            "BasicInfo/DeveloperContact", "Developer contact", "provider organisation"
        ),
    ]


def _status_seq(facts: ReleaseFacts) -> int | None:
    for h in reversed(facts.history):
        if h.get("ledger_seq") is not None:
            return int(h["ledger_seq"])
    return None


def _release(facts: ReleaseFacts) -> list[Field]:
    status = facts.release["status"]
    seq = _status_seq(facts)
    stage_pointers = [facts.registry(f"status as of {facts.as_of_iso}")]
    if seq is not None:
        stage_pointers.append(facts.ledger(seq, "status_change"))
    rollout = (
        "; ".join(
            f"{site}: {r['mode']} since {r['since']}" for site, r in sorted(facts.rollout.items())
        )
        or "not rolled out at any site"
    )
    approved = [h for h in facts.history if h["to"] in ("approved_limited", "approved")]
    if approved:
        first = approved[0]
        date = Field.known(
            "ReleaseInfo/ReleaseDate",
            "Release date",
            f"{first['time'][:10]} (approved for clinical use: {first['to']})",
            *(
                [facts.ledger(first["ledger_seq"], "status_change")]
                if first.get("ledger_seq") is not None
                else [facts.registry("history")]
            ),
        )
    else:
        date = Field.known(
            "ReleaseInfo/ReleaseDate",
            "Release date",
            f"{facts.release_json['created'][:10]} (bundle signed; not approved for clinical use "
            f"as of {facts.as_of_iso[:10]})",
            facts.bundle("release.json", "/created"),
        )
    local = [
        f"{a['role']} approval by {a['person']} on {a['time'][:10]}"
        for a in facts.approvals
        if a["decision"] == "approve"
    ]
    fields = [
        Field.known(
            "ReleaseInfo/ReleaseStage",
            "Release stage",
            f"{status} (registry status as of {facts.as_of_iso}); rollout: {rollout}",
            *stage_pointers,
        ),
        date,
        Field.known(
            "ReleaseInfo/ReleaseVersion",
            "Release version",
            f"{facts.version} (model {facts.release['model_version']}; bundle sha256 "
            f"{facts.bundle_sha256})",
            facts.registry("version and bundle_sha256"),
            facts.bundle("release.json", "/model_version"),
        ),
        Field.to_complete(
            "ReleaseInfo/GlobalAvailability",
            "Global availability",
            "regulatory affairs",
            note=f"sites where the release runs as of {facts.as_of_iso}: {rollout}",
        ),
        Field.known(
            "ReleaseInfo/EHRCompatibility/EHR",
            "EHR compatibility",
            facts.model_card["release_info"]["ehr_compatibility"],
            facts.bundle("model_card.json", "/release_info/ehr_compatibility"),
        ),
    ]
    if local:
        _, pointers = _ledger_people(facts)
        fields.append(
            Field.known(
                "ReleaseInfo/RegulatoryApproval#local",
                "Local governance approval",
                "Local governance approvals (gate 4): " + "; ".join(local),
                *pointers,
            )
        )
    fields.append(
        Field.to_complete(
            "ReleaseInfo/RegulatoryApproval#regulator",
            "Regulatory clearance or certification",
            "regulatory affairs",
            note=facts.model_card["release_info"]["regulatory_approval"],
        )
    )
    return fields


def _summary(facts: ReleaseFacts) -> list[Field]:
    keywords = [
        ("task", facts.task, facts.spec_pointer("/name")),
        (
            "outcome",
            facts.model_card["basic_info"]["outcome"],
            facts.bundle("model_card.json", "/basic_info/outcome"),
        ),
        ("setting", facts.spec.intended_use.setting, facts.spec_pointer("/intended_use/setting")),
        (
            "model",
            facts.report["model"]["selected_model"],
            facts.bundle("report.json", "/model/selected_model"),
        ),
    ]
    return [
        Field.known(
            "ModelSummary/Summary",
            "Summary",
            facts.model_card["summary"],
            facts.bundle("model_card.json", "/summary"),
        ),
        *(
            Field.known(f"ModelSummary/Keywords/Keyword#{name}", f"Keyword: {name}", value, pointer)
            for name, value, pointer in keywords
        ),
    ]


def _uses(facts: ReleaseFacts) -> list[Field]:
    uses = facts.model_card["uses_and_directions"]

    def p(key: str) -> Pointer:
        return facts.bundle("model_card.json", f"/uses_and_directions/{key}")

    return [
        Field.known(
            "UsesAndDirections/IntendedUseAndWorkflow",
            "Intended use and workflow",
            f"{uses['intended_use']}\nSetting: {uses['setting']}\nWorkflow: {uses['workflow']}",
            p("intended_use"),
            p("setting"),
            p("workflow"),
        ),
        Field.known(
            "UsesAndDirections/PrimaryIntendedUsers",
            "Primary intended users",
            ", ".join(uses["intended_users"]),
            p("intended_users"),
        ),
        Field.known(
            "UsesAndDirections/HowToUse",
            "How to use",
            f"{uses['workflow']}\nEscalation: {facts.deployment['escalation']['statement']}\n"
            + _lines(facts.model_card["escalation_paths"]),
            p("workflow"),
            facts.bundle("deployment.json", "/escalation/statement"),
            facts.bundle("model_card.json", "/escalation_paths"),
        ),
        Field.known(
            "UsesAndDirections/TargetedPatientPopulation",
            "Targeted patient population",
            uses["target_population"],
            p("target_population"),
        ),
        Field.known(
            "UsesAndDirections/CautionedOutOfScopeSettings",
            "Cautioned out-of-scope settings",
            _lines(uses["out_of_scope"]),
            p("out_of_scope"),
            facts.bundle("deployment.json", "/non_intended_uses"),
        ),
    ]


def _warnings(facts: ReleaseFacts) -> list[Field]:
    warn = facts.model_card["warnings"]
    fields = [
        Field.known(
            "Warnings/KnownRisksAndLimitations#failure-modes",
            "Known failure modes",
            _lines(facts.model_card["known_failure_modes"]),
            facts.bundle("model_card.json", "/known_failure_modes"),
        ),
        Field.known(
            "Warnings/KnownRisksAndLimitations#limitations",
            "Limitations",
            _lines(warn["limitations"]),
            facts.bundle("model_card.json", "/warnings/limitations"),
        ),
    ]
    if facts.risks:
        texts, pointers = [], []
        for r in facts.risks:
            ack = r.get("acknowledgement")
            if ack:
                texts.append(
                    f"{r['words']} — accepted by {ack['actor']} ({ack['role']}): {ack['reason']}"
                )
                if ack.get("seq") is not None:
                    pointers.append(facts.ledger(ack["seq"], f"risk_acknowledged {r['id']}"))
            else:
                texts.append(f"{r['words']} — not yet accepted")
        fields.append(
            Field.known(
                "Warnings/KnownRisksAndLimitations#risks",
                "Validation risks and their acceptance",
                "Validation risks (gate 3):\n" + _lines(texts),
                facts.registry("risk register"),
                *pointers,
            )
        )
    fields += [
        Field.known(
            "Warnings/KnownBiasesOrEthicalConsiderations",
            "Known biases",
            _lines(warn["biases"]),
            facts.bundle("model_card.json", "/warnings/biases"),
            facts.bundle("report.json", "/fairness"),
        ),
        Field.known(
            "Warnings/ClinicalRiskLevel",
            "Clinical risk level",
            warn["clinical_risk_level"],
            facts.bundle("model_card.json", "/warnings/clinical_risk_level"),
        ),
    ]
    return fields


def _maintenance(facts: ReleaseFacts) -> Field:
    rules = facts.monitoring_rules
    owners: dict[str, list[str]] = {}
    for name, rule in rules.items():
        owners.setdefault(f"{rule['owner_role']} ({rule['action']})", []).append(name)
    review = facts.review
    text = [
        f"Monitored every {facts.spec.monitoring.window_minutes} minutes against {len(rules)} "
        "rules; owners and actions: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(owners.items())),
        f"Periodic review every {review['interval_days']} days; next due {review['due'] or 'once approved'}"
        + (
            f"; last review {review['last_review']['time'][:10]} ({review['last_review']['outcome']})"
            if review.get("last_review")
            else "; no periodic review recorded yet"
        ),
    ]
    pointers = [
        facts.spec_pointer("/monitoring"),
        facts.monitoring("rule table (task spec rules over the defaults)"),
        facts.registry("review schedule"),
    ]
    if facts.local is not None:
        loc = facts.local
        text.append(
            f"Local performance as of {facts.as_of_iso}: AUROC {loc.auroc:.3f} on "
            f"{loc.n_outcomes} linked outcomes (window ending {loc.window_end})"
            if loc.auroc is not None
            else f"Local outcomes as of {facts.as_of_iso}: {loc.n_outcomes}"
        )
        pointers.append(facts.monitoring(f"window {facts.version} ending {loc.window_end}"))
    else:
        text.append(f"No monitored window with linked outcomes as of {facts.as_of_iso}")
    return Field.known(
        "TrustIngredients/AISystemFacts/OngoingMaintenance",
        "Ongoing maintenance",
        "\n".join(text),
        *pointers,
    )


def _trust(facts: ReleaseFacts) -> list[Field]:
    trust = facts.model_card["trust_ingredients"]
    report, dev = facts.report, trust["development_data"]
    src = facts.snapshot_manifest["source"]
    features = facts.feature_schema.get("features") or facts.task_spec_json["features"]
    env = facts.lineage.get("environment", {})
    packages = env.get("packages") or {}
    libs = [
        f"{n} {packages[n]}"
        for n in ("scikit-learn", "xgboost-cpu", "xgboost", "numpy")
        if n in packages
    ]
    approvals, approval_pointers = _ledger_people(facts)
    return [
        Field.known(
            "TrustIngredients/AISystemFacts/OutcomesAndOutputs",
            "Outcomes and outputs",
            f"Outcome: {facts.model_card['basic_info']['outcome']}. Output: the calibrated "
            f"{facts.model_card['basic_info']['risk']} (a probability), its conformal prediction set "
            f"(target coverage {report['conformal']['target_coverage']:.0%} per class), the inputs "
            f"that moved it, and a flag when the risk is at or above "
            f"{facts.deployment['operating_threshold']}.",
            facts.bundle("model_card.json", "/basic_info/outcome"),
            facts.bundle("report.json", "/conformal/target_coverage"),
            facts.bundle("deployment.json", "/operating_threshold"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/ModelType",
            "Model type",
            f"{report['model']['selected_model']} (hyperparameters "
            f"{json.dumps(report['model']['hyperparameters'], sort_keys=True)}), "
            f"{report['calibration']['method']} calibration, {report['conformal']['method']} "
            f"prediction sets; selected by {facts.lineage['selection']['rule']}",
            facts.bundle("report.json", "/model"),
            facts.bundle("report.json", "/calibration/method"),
            facts.bundle("lineage.json", "/selection/rule"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/FoundationModels",
            "Foundation models",
            f"No foundation model is used: a {report['model']['selected_model']} model trained "
            "only on the development data",
            facts.bundle("report.json", "/model/selected_model"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/InputDataSource",
            "Input data source",
            f"{src['source']} ({src['source_version']}); de-identification: "
            f"{src['deidentification']}; snapshot {facts.snapshot_manifest['id']}",
            facts.bundle("snapshot_manifest.json", "/source"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/OutputAndInputDataTypes",
            "Output and input data types",
            "Inputs: "
            + "; ".join(
                f"{f['name']} ({f.get('kind', 'feature')}"
                + (f", {f['unit']}" if f.get("unit") else "")
                + ")"
                for f in features
            )
            + ". Output: a probability between 0 and 1 and a prediction set.",
            facts.bundle(
                "feature_schema.json" if facts.feature_schema.get("features") else "task_spec.json",
                "/features",
            ),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/DevelopmentDataCharacterization",
            "Development data characterization",
            f"{report['cohort']['n_stays']} stays (training {report['cohort']['n_train']}, "
            f"years {dev['train_years'][0]}-{dev['train_years'][1]}; locked test "
            f"{report['cohort']['n_test']}, years {dev['test_years'][0]}-{dev['test_years'][1]}); "
            f"outcome prevalence {dev['prevalence']:.3f}. Cohort flow:\n"
            + _lines(
                f"{s['step']}: {s['remaining']} remain ({s['excluded']} excluded)"
                for s in dev["cohort_flow"]
            ),
            facts.bundle("report.json", "/cohort"),
            facts.bundle("model_card.json", "/trust_ingredients/development_data"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/BiasMitigationApproaches",
            "Bias mitigation approaches",
            trust["bias_mitigation"],
            facts.bundle("model_card.json", "/trust_ingredients/bias_mitigation"),
        ),
        _maintenance(facts),
        Field.known(
            "TrustIngredients/AISystemFacts/Security",
            "Security",
            f"The release is a signed bundle (Ed25519 key {facts.signature['key_id']}, signed "
            f"{facts.signature['signed_at'][:10]}, valid until {facts.signature['expires_at'][:10]}); "
            "every prediction, approval and change is recorded in a signed, tamper-evident audit "
            f"ledger (origin {facts.ledger_origin}); patient identifiers are pseudonymised.",
            facts.bundle("MANIFEST.json")
            if "MANIFEST.json" in facts.files
            else facts.registry("bundle signature"),
            facts.registry("bundle signature"),
        ),
        Field.known(
            "TrustIngredients/AISystemFacts/Transparency",
            "Transparency",
            f"Code commit {facts.lineage['code']['commit']} (package "
            f"{facts.lineage['code']['package_version']}); environment lock sha256 "
            f"{env.get('packages_sha256')}; every field of this card points at its evidence in "
            f"{EVIDENCE_FILE}.",
            facts.bundle("lineage.json", "/code"),
            facts.bundle("lineage.json", "/environment/packages_sha256"),
        ),
        Field.to_complete(
            "TrustIngredients/TransparencyInformation/FundingSource",
            "Funding source",
            "provider organisation",
        ),
        *(
            [
                Field.known(
                    "TrustIngredients/TransparencyInformation/ThirdPartyInformation",
                    "Third-party information",
                    "Open-source libraries: " + ", ".join(libs),
                    facts.bundle("lineage.json", "/environment/packages"),
                )
            ]
            if libs
            else []
        ),
        *(
            [
                Field.known(
                    "TrustIngredients/TransparencyInformation/StakeholdersConsulted#approvers",
                    "Release approvers",
                    "Release decided by: " + "; ".join(approvals),
                    *approval_pointers,
                )
            ]
            if approvals
            else []
        ),
        Field.to_complete(
            "TrustIngredients/TransparencyInformation/StakeholdersConsulted#others",
            "Patients, clinicians and communities consulted",
            "deployer (hospital)",
        ),
    ]


def _local_result(facts: ReleaseFacts, group: str) -> list[Field]:
    loc = facts.local
    if loc is None:
        return []
    pointer = facts.monitoring(f"window {facts.version} ending {loc.window_end}")
    key = f"KeyMetrics/{group}/Results/MetricResult#local"
    value: dict[str, Any]
    if group == "UsefulnessUsabilityEfficacy" and loc.auroc is not None:
        value = {"auroc": loc.auroc, "auroc_se": loc.auroc_se, "n_outcomes": loc.n_outcomes}
        label = f"Local AUROC (monitoring, as of {facts.as_of_iso})"
    elif group == "SafetyReliability" and loc.ece is not None:
        value = {
            "ece": loc.ece,
            "brier": loc.brier,
            "calibration_slope": loc.calibration_slope,
            "n_outcomes": loc.n_outcomes,
        }
        label = f"Local calibration (monitoring, as of {facts.as_of_iso})"
    elif group == "FairnessEquity" and loc.subgroup_auroc:
        value = {
            "subgroup_auroc": loc.subgroup_auroc,
            "gaps": loc.gaps,
            "n_outcomes": loc.n_outcomes,
        }
        label = f"Local subgroup AUROC (monitoring, as of {facts.as_of_iso})"
    else:
        return []
    return [
        Field.known(
            key,
            label,
            {"Label": label, "ValueJson": value | {"window_end": loc.window_end}},
            pointer,
        )
    ]


def _metrics(facts: ReleaseFacts) -> list[Field]:
    fields: list[Field] = []
    report = facts.report
    methods = report["methods"]
    validation = (
        f"{report['cohort']['split']['kind']} split; the locked test set was evaluated once; "
        f"confidence intervals: {methods['ci']} ({methods['n_boot']} resamples); release "
        "criteria declared in the task spec before validation and checked by gate 2"
    )
    externals = facts.external_validations
    for group, key in _GROUPS.items():
        entries = facts.model_card["key_metrics"][key]
        base = f"KeyMetrics/{group}"

        def p(i: int, name: str, key: str = key) -> Pointer:
            return facts.bundle("model_card.json", f"/key_metrics/{key}/{i}/{name}")

        def joined(name: str, entries: list[dict[str, Any]] = entries) -> str:
            return "\n".join(dict.fromkeys(f"{e['name']}: {e[name]}" for e in entries))

        fields.append(
            Field.known(
                f"{base}/MetricGoal",
                "Metric goal",
                joined("goal"),
                *(p(i, "goal") for i in range(len(entries))),
            )
        )
        for i, e in enumerate(entries):
            fields.append(
                Field.known(
                    f"{base}/Results/MetricResult#{i}",
                    e["name"],
                    {"Label": e["name"], "ValueJson": {"result": e["result"]}},
                    p(i, "result"),
                )
            )
        fields += _local_result(facts, group)
        fields += [
            Field.known(
                f"{base}/Interpretation",
                "Interpretation",
                joined("interpretation"),
                *(p(i, "interpretation") for i in range(len(entries))),
            ),
            Field.known(
                f"{base}/TestType",
                "Test type",
                joined("test_type"),
                *(p(i, "test_type") for i in range(len(entries))),
            ),
            Field.known(
                f"{base}/TestingDataDescription",
                "Testing data description",
                "\n".join(dict.fromkeys(e["test_data"] for e in entries)),
                *(p(i, "test_data") for i in range(len(entries))),
            ),
        ]
        ext_text = (
            "; external validation: "
            + "; ".join(
                f"sites {', '.join(v['sites'])} {v['years'][0]}-{v['years'][1]}, n={v['n']}, AUROC "
                + (f"{v['auroc']:.3f}" if isinstance(v["auroc"], float) else "not measurable")
                for v in externals
            )
            if externals
            else "; no external validation recorded"
        )
        fields.append(
            Field.known(
                f"{base}/ValidationProcessAndJustification",
                "Validation process and justification",
                validation + ext_text,
                facts.bundle("report.json", "/methods"),
                facts.bundle("report.json", "/cohort/split"),
                *(
                    facts.ledger(v["seq"], "external_validation_recorded")
                    for v in externals
                    if v.get("seq") is not None
                ),
                *([] if externals else [facts.registry("external validations")]),
            )
        )
    return fields


def _resources(facts: ReleaseFacts) -> list[Field]:
    refs = [
        f"validation report report.json (sha256 {facts.files['report.json']}) and report.html "
        f"(sha256 {facts.files['report.html']}) in bundle {facts.bundle_name}"
    ]
    pointers = [facts.bundle("report.json"), facts.bundle("report.html")]
    for v in facts.external_validations:
        refs.append(f"external validation report {v['id']} (sha256 {v['report_sha256']})")
        if v.get("seq") is not None:
            pointers.append(facts.ledger(v["seq"], "external_validation_recorded"))
    fields = [
        Field.known(
            "Resources/EvaluationReferences", "Evaluation references", _lines(refs), *pointers
        )
    ]
    if facts.trials:
        fields.append(
            Field.known(
                "Resources/ClinicalTrial",
                "Silent and shadow trials",
                _lines(
                    f"{t['mode']} trial at {t['site']} from {t['started']}"
                    + (f" to {t['ended']}" if t.get("ended") else " (running)")
                    for t in facts.trials
                ),
                facts.registry("trials"),
            )
        )
    consent = facts.spec.consent.purposes_allowed
    fields += [
        Field.to_complete(
            "Resources/PeerReviewedPublications",
            "Peer-reviewed publications",
            "provider organisation",
        ),
        Field.to_complete(
            "Resources/ReimbursementStatus", "Reimbursement status", "deployer (hospital)"
        ),
        Field.known(
            "Resources/PatientConsentOrDisclosure#consent",
            "Consent checked before scoring",
            f"A prediction is made only for patients whose recorded consent covers the purpose of "
            f"the request (allowed purposes: {', '.join(consent)}); refusals are recorded in the "
            "audit ledger.",
            facts.spec_pointer("/consent"),
        ),
        Field.to_complete(
            "Resources/PatientConsentOrDisclosure#disclosure",
            "How patients are told that AI supports their care",
            "deployer (hospital)",
        ),
        Field.known(
            "Bibliography",
            "Bibliography",
            _lines(facts.model_card["resources"]),
            facts.bundle("model_card.json", "/resources"),
        ),
    ]
    return fields


def chai_fields(facts: ReleaseFacts) -> list[Field]:
    """Return the fields of the CHAI card of ``facts``, in schema order."""
    return [
        *_basic(facts),
        *_release(facts),
        *_summary(facts),
        *_uses(facts),
        *_warnings(facts),
        *_trust(facts),
        *_metrics(facts),
        *_resources(facts),
    ]


# -- rendering ------------------------------------------------------------------------------
def _element_of(key: str) -> str:
    return key.split("#", 1)[0]


def render_chai(fields: list[Field]) -> bytes:
    """Return the card's XML from ``fields`` (one element per schema path, in schema order)."""
    from lxml import etree

    ns = f"{{{CHAI_NAMESPACE}}}"
    root = etree.Element(f"{ns}AppliedModelCard", nsmap={"mc": CHAI_NAMESPACE})
    by_path: dict[str, list[Field]] = {}
    for f in fields:
        by_path.setdefault(_element_of(f.key), []).append(f)
    known_paths = {path for path, _ in _LAYOUT}
    stray = sorted(set(by_path) - known_paths)
    if stray:
        raise ValueInvalid(f"CHAI card: fields for elements the schema does not have: {stray}")

    def parent_of(parts: list[str]) -> Any:
        node = root
        for part in parts:
            found = node.find(f"{ns}{part}")
            node = found if found is not None else etree.SubElement(node, f"{ns}{part}")
        return node

    for path, required in _LAYOUT:
        parts = path.split("/")
        present = by_path.get(path, [])
        if not present:
            if required:
                raise ValueInvalid(f"CHAI card: no field for required element {path}")
            continue
        if path in _REPEATED:
            parent = parent_of(parts[:-1])
            for f in present:
                element = etree.SubElement(parent, f"{ns}{parts[-1]}")
                if parts[-1] == "MetricResult":
                    if f.value is None:
                        raise ValueInvalid(f"CHAI card: {f.key} needs a value")
                    etree.SubElement(element, f"{ns}Label").text = f.value["Label"]
                    etree.SubElement(element, f"{ns}ValueJson").text = json.dumps(
                        f.value["ValueJson"], sort_keys=True
                    )
                else:
                    element.text = f.shown()
        else:
            element = etree.SubElement(parent_of(parts[:-1]), f"{ns}{parts[-1]}")
            element.text = "\n".join(f.shown() for f in present)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def evidence_map(doc: Document) -> bytes:
    """Return the companion JSON: each element path with its pointers or its owner."""
    out: dict[str, list[dict[str, Any]]] = {}
    for f in doc.fields:
        out.setdefault(_element_of(f.key), []).append(
            {
                "key": f.key,
                "label": f.label,
                "pointers": [p.to_json() for p in f.pointers],
                "to_be_completed_by": f.owner if f.missing else None,
                "note": f.note,
            }
        )
    body = {
        "format": "clinical-mlops/chai-evidence/v1",
        "card": XML_FILE,
        "schema": "CHAI Applied Model Card v0.2 (https://mc.chai.org/v0.2/schema.xsd)",
        "release": doc.release,
        "as_of": doc.as_of,
        "elements": out,
    }
    return json.dumps(body, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8") + b"\n"


def build_chai(facts: ReleaseFacts) -> Document:
    """Return the CHAI Applied Model Card of the release, validated against the v0.2 schema.

    Raises ``ValueInvalid`` listing the schema errors if the card does not validate
    (nothing is returned to be written).
    """
    fields = chai_fields(facts)
    xml = render_chai(fields)
    errors = validate_chai(xml)
    if errors:
        raise ValueInvalid(
            f"CHAI card of {facts.version}: not valid against the v0.2 schema: {'; '.join(errors[:5])}"
        )
    doc = Document(
        format="chai",
        title=f"CHAI Applied Model Card — {facts.version}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=fields,
    )
    doc.files = {XML_FILE: xml, EVIDENCE_FILE: evidence_map(doc)}
    return doc
