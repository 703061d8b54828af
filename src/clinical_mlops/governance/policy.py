"""Release gates as policy-as-code (R-L3), read from the task spec's acceptance criteria.

- gate 1 ``schema_contract``: the bundle was built against the installed task spec (for a
  task defined in a YAML file: the spec sealed in the bundle),
  every feature is declared and approved, the model artifacts match their lineage,
  the snapshot passed its hard data contracts, the report is for this model, the report
  and model card describe the release's own operating threshold and escalation policy
  (``registry.bundle.evidence_problems``), and the model scores a row with every input
  missing to a probability in [0, 1];
- gate 2 ``metrics``: on the locked test set, AUROC ≥ ``min_auroc``, ECE ≤ ``max_ece``,
  AUROC ≥ ``min_subgroup_auroc`` for every subgroup with enough stays to measure it,
  AUROC above the clinical baseline's, and clinician reviews per 100 stays under the
  release's escalation policy ≤ ``max_reviews_per_100`` when the acceptance criteria
  declare it, else ≤ the budget of the release's own policy (point estimates; the CIs,
  and alerts per 100, are in evidence);
- gate 3 ``evidence``: explanation config, fairness metrics, drift-sensitivity
  (robustness to masked inputs) and the monitoring reference profile present, and
  every risk the release carries out of validation (a fairness alert, a per-class
  conformal coverage shortfall, a failed masked-input check: :mod:`.risks`)
  acknowledged by a named person in the clinical or compliance role, with a reason;
- gate 4 ``approvals``: clinical, compliance and engineering approvals by three
  different people, none of them the author, no standing rejection.

Each gate returns its evidence and, when it fails, every failed criterion with the
observed and the required value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.validation_report import NoBaselineDeclared
from clinical_mlops.governance.approvals import Approval, approval_problems
from clinical_mlops.governance.risks import Acknowledgement, risks_of
from clinical_mlops.hashing import sha256_file
from clinical_mlops.registry.bundle import Bundle, evidence_problems
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.vocabulary import Gate, Role

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance

__all__ = [
    "GateResult",
    "external_validation_problems",
    "gate_approvals",
    "gate_evidence",
    "gate_metrics",
    "gate_schema_contract",
]


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: passed, the evidence it looked at, the failed criteria."""

    name: str
    passed: bool
    evidence: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "evidence": self.evidence,
            "failures": self.failures,
        }


def _result(name: Gate, evidence: dict[str, Any], failures: list[str]) -> GateResult:
    return GateResult(name=name, passed=not failures, evidence=evidence, failures=failures)


def _measured(what: str, value: Any) -> float:
    """Return a headline figure as a float; a figure the report could not measure fails loudly."""
    if isinstance(value, int | float):
        return float(value)
    raise ValueInvalid(f"validation report: {what} was not measured ({value!r}); expected a number")


def gate_schema_contract(bundle: Bundle) -> GateResult:
    """Return gate 1 (schema and contract checks) for ``bundle``."""
    failures: list[str] = []
    release = bundle.release
    spec = bundle.spec()
    schema = bundle.read_json("feature_schema.json")
    if release["spec_sha256"] != spec.spec_hash():
        failures.append(
            f"task spec: bundle built against spec {release['spec_sha256'][:12]}, installed "
            f"spec is {spec.spec_hash()[:12]}"
        )
    names = [f["name"] for f in schema["features"]]
    unapproved = [f["name"] for f in schema["features"] if f["status"] != "approved"]
    if unapproved:
        failures.append(f"features: not approved in the task spec: {unapproved}")
    undeclared = sorted(set(names) - set(spec.feature_names))
    if undeclared:
        failures.append(f"features: not declared in the task spec: {undeclared}")
    explained = [f["name"] for f in bundle.read_json("explanation.json")["features"]]
    if explained != names:
        failures.append("explanation: feature list differs from the feature schema")
    lineage = bundle.read_json("lineage.json")
    mismatched = sorted(
        name
        for name, digest in lineage["artifacts"].items()
        if sha256_file(bundle.path / name) != digest
    )
    if mismatched:
        failures.append(f"lineage: artifacts differ from their lineage hashes: {mismatched}")
    contracts = bundle.read_json("snapshot_manifest.json")["contracts"]
    if int(contracts.get("hard_failed", 1)) != 0:
        failures.append(f"data contracts: {contracts.get('hard_failed')} hard checks failed")
    # Loading checks the report against its schema (DocumentInvalid names the file and field).
    bundle.report()
    evidence = evidence_problems(
        {name: bundle.read_json(name) for name in ("report.json", "model_card.json")},
        bundle.deployment,
    )
    failures += [f"evidence: {problem}" for problem in evidence]
    model = bundle.model()
    if model.version != release["model_version"]:
        failures.append(
            f"model: artifacts are version {model.version}, release says {release['model_version']}"
        )
    empty = pd.DataFrame({n: [None] for n in names})
    p = float(model.probability(empty)[0])
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        failures.append(f"unit check: an all-missing row scored {p}, not a probability")
    return _result(
        Gate.SCHEMA_CONTRACT,
        {
            "spec_sha256": spec.spec_hash(),
            "features": names,
            "lineage_artifacts_match": not mismatched,
            "contract_checks": contracts.get("checks"),
            "contract_hard_failed": contracts.get("hard_failed"),
            "evidence_matches_deployment": not evidence,
            "all_missing_row_probability": round(p, 6),
        },
        failures,
    )


def gate_metrics(bundle: Bundle) -> GateResult:
    """Return gate 2 (locked-test metrics against the spec's acceptance criteria)."""
    criteria = bundle.spec().acceptance
    report = bundle.report()
    test, baseline = report.test, report.baseline
    failures: list[str] = []
    auroc, ece = _measured("test AUROC", test.auroc), _measured("test ECE", test.ece)
    if auroc < criteria.min_auroc:
        failures.append(f"test AUROC {auroc:.3f} < minimum {criteria.min_auroc:.2f}")
    if ece > criteria.max_ece:
        failures.append(f"test ECE {ece:.3f} > maximum {criteria.max_ece:.2f}")
    subgroups: dict[str, Any] = {}
    for key, row in sorted(report.subgroups.items()):
        value = row.auroc
        if isinstance(value, int | float):
            subgroups[key] = round(float(value), 4)
            if value < criteria.min_subgroup_auroc:
                failures.append(
                    f"subgroup {key} AUROC {value:.3f} < minimum {criteria.min_subgroup_auroc:.2f}"
                )
        else:
            subgroups[key] = f"not measured: {value}"
    workload = report.workload
    reviews = workload.reviews_per_100
    # The acceptance ceiling when the spec declares one, else the budget the release's own
    # escalation policy declares: a release never passes with more reviews than it can staff.
    policy = bundle.deployment.get("escalation") or {}
    ceiling, source = criteria.max_reviews_per_100, "acceptance.max_reviews_per_100"
    if ceiling is None and isinstance(policy.get("max_reviews_per_100"), int | float):
        ceiling = float(policy["max_reviews_per_100"])
        source = "the release's escalation.max_reviews_per_100"
    if ceiling is not None:
        if not isinstance(reviews, int | float):
            failures.append(
                "clinician reviews per 100 test stays not measured in the report (computed "
                f"before escalation policies); required <= {ceiling:g} ({source})"
            )
        elif reviews > ceiling:
            failures.append(
                f"clinician reviews per 100 test stays {reviews:.2f} > maximum "
                f"{ceiling:g} ({source})"
            )
    compared: dict[str, Any]
    if isinstance(baseline, NoBaselineDeclared):
        # The spec refuses must_beat_baseline with kind: none; a bundle that says otherwise fails.
        if criteria.must_beat_baseline:
            failures.append(
                "acceptance.must_beat_baseline is true but the task declares no clinical baseline"
            )
        compared = {"baseline": baseline.statement}
    else:
        base = _measured("baseline AUROC", baseline.auroc)
        if criteria.must_beat_baseline and not auroc > base:
            failures.append(
                f"test AUROC {auroc:.3f} does not beat the clinical baseline {base:.3f}"
            )
        compared = {
            "baseline_auroc": base,
            "auroc_minus_baseline": baseline.auroc_difference.to_json(),
        }
    return _result(
        Gate.METRICS,
        {
            "criteria": criteria.model_dump(mode="json"),
            "test_auroc": auroc,
            "test_auroc_ci": test.auroc_ci,
            "test_ece": ece,
            "n_test": test.n,
            "subgroup_auroc": subgroups,
            "threshold": workload.threshold,
            "alerts_per_100": workload.alerts_per_100,
            "alerts_per_100_ci": workload.alerts_per_100_ci,
            "reviews_per_100": reviews,
            "reviews_per_100_ci": workload.reviews_per_100_ci,
            **compared,
        },
        failures,
    )


def gate_evidence(bundle: Bundle, acknowledgements: Iterable[Acknowledgement] = ()) -> GateResult:
    """Return gate 3 (evidence present; every risk of the release acknowledged).

    ``acknowledgements`` are those recorded on the release; a risk without one fails
    the gate, named with its observed value and limit.
    """
    spec = bundle.spec()
    required = spec.acceptance.required_evidence
    report = bundle.report()
    explanation = bundle.read_json("explanation.json")
    profile = bundle.profile()
    present = {
        "explanation": bool(explanation.get("method")) and bool(explanation.get("features")),
        "fairness": bool(report.fairness),
        "robustness": bool(report.robustness.masked),
        "profile": bool(profile.features) and bool(profile.alerts_per_100),
    }
    failures = [f"{name} evidence missing" for name in required if not present.get(name)]
    acknowledged = {a.risk: a for a in acknowledgements}
    risks = []
    for risk in risks_of(report, spec):
        ack = acknowledged.get(risk.id)
        risks.append(risk.to_json() | {"acknowledgement": ack.to_json() if ack else None})
        if ack is None:
            failures.append(
                f"risk {risk.id} not acknowledged: {risk.words} (observed {risk.observed:.3f}, "
                f"limit {risk.limit:.3f}; a person in the clinical or compliance role must "
                "record why the release may go ahead)"
            )
    return _result(
        Gate.EVIDENCE,
        {
            "required": list(required),
            "present": present,
            "explanation_method": explanation.get("method"),
            "fairness_metrics": sorted(report.fairness),
            "fairness_alerts": [a.to_json() for a in report.fairness_alerts],
            "robustness_masked": sorted(report.robustness.masked),
            "risks": risks,
        },
        failures,
    )


def gate_approvals(*, author: str, approvals: Iterable[Approval]) -> GateResult:
    """Return gate 4: clinical, compliance and engineering approvals by distinct non-authors."""
    listed = list(approvals)
    problems, by_role = approval_problems(approvals=listed, author=author)
    return _result(
        Gate.APPROVALS,
        {
            "author": author,
            "approved_by": dict(by_role),
            "decisions": [a.to_json() for a in listed],
        },
        problems,
    )


def external_validation_problems(spec: TaskSpec, validations: Iterable[Any]) -> list[str]:
    """Return why a release of ``spec`` lacks the external validation it requires ([]: it has it).

    ``acceptance.min_external_sites`` (default 0) is the number of distinct sites at which
    the release must have an external validation whose AUROC could be measured
    (``registry.external.validated_sites``) before it is ``approved``; the problem names
    the sites validated so far and how many are missing.
    """
    from clinical_mlops.registry.external import validated_sites

    required = spec.acceptance.min_external_sites
    if required <= 0:
        return []
    sites = validated_sites(list(validations))
    if len(sites) >= required:
        return []
    return [
        f"external validation at {required} site(s) required (acceptance.min_external_sites); "
        f"validated at {', '.join(sites) if sites else 'none'}: {required - len(sites)} more "
        "site(s) missing; run `clinical-mlops validate RELEASE --on SNAPSHOT` on another "
        "site's data"
    ]


def run_gates(governance: Governance, version: str, *, actor: str) -> dict[str, GateResult]:
    """Return gates 1-3 of ``version``, each stored with its evidence and recorded in the ledger.

    Needs the engineering role. Does not change the release's status; a failing
    gate is stored as failed (with the exact criterion and values) and blocks
    ``draft -> validated``. Gate 3 counts the risk acknowledgements recorded so far:
    after acknowledging the last open risk, run the gates again.
    """
    with governance.governed(action="run gates", actor=actor, version=version):
        governance.require(actor, allowed=(Role.ENGINEERING,), action=f"run gates on {version}")
        bundle = governance.registry.bundle(version)
        results = {
            r.name: r
            for r in (
                gate_schema_contract(bundle),
                gate_metrics(bundle),
                gate_evidence(
                    bundle,
                    governance.risk_acknowledgements(governance.registry.get(version).version),
                ),
            )
        }
        for r in results.values():
            governance.record_gate(version, r, actor=actor)
    return results
