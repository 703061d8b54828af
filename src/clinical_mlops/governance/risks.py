"""Risks a release carries out of validation, which a named person must acknowledge (R-L3 gate 3).

:func:`risks_of` reads them from the validation report and the task spec, with a
stable id each, in this order:

* ``fairness:<attribute>:<metric>`` — every fairness alert of the report (for
  ``subgroup_auroc_gap`` alerts the metric is ``auroc_gap``): discrimination differs
  between groups of one protected attribute by more than ``thresholds.subgroup_auroc_gap``.
* ``coverage:class_<k>`` — a class whose conformal coverage on the locked test set is
  below the target (1 - alpha) minus ``acceptance.max_coverage_shortfall``: the
  prediction sets of those patients hold the true outcome less often than the card
  promises.
* ``robustness:<input>`` — a failed masked-input check: with ``<input>`` missing for
  every test stay (the robustness section of the report), AUROC falls by at least
  ``thresholds.auroc_degradation`` relative to the AUROC with every value as recorded.
  That is the fall which, measured on live outcomes, raises the ``auroc_degradation``
  monitoring alert and suspends automated use; a check "fails" when losing that one
  feed alone would trip it.

Each risk says in words what it means for patients, the observed value and the limit.
Gate 3 fails while any risk of the release lacks an :class:`Acknowledgement`: a person
in the clinical or compliance role recorded why the release may go ahead despite it
(``Governance.acknowledge_risk``; one per release and risk, enforced by the store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.vocabulary import Role

__all__ = ["ACKNOWLEDGING_ROLES", "Acknowledgement", "Risk", "RiskKind", "risks_of"]

RiskKind = Literal["fairness", "coverage", "robustness"]

#: the roles whose holders may acknowledge a risk
ACKNOWLEDGING_ROLES: tuple[Role, ...] = (Role.CLINICAL, Role.COMPLIANCE)

#: fairness alert type -> the metric named in the risk id
_FAIRNESS_METRIC = {"subgroup_auroc_gap": "auroc_gap"}


@dataclass(frozen=True)
class Risk:
    """One risk a release carries out of validation: id, words, observed value and limit."""

    id: str
    kind: RiskKind
    words: str
    observed: float
    limit: float
    criterion: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "words": self.words,
            "observed": self.observed,
            "limit": self.limit,
            "criterion": self.criterion,
        }


@dataclass(frozen=True)
class Acknowledgement:
    """A named person's recorded justification for releasing despite one risk."""

    release: str
    risk: str
    words: str
    actor: str
    role: str
    reason: str
    at: str
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "risk": self.risk,
            "words": self.words,
            "actor": self.actor,
            "role": self.role,
            "reason": self.reason,
            "at": self.at,
            "seq": self.seq,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fairness(report: ValidationReport) -> list[Risk]:
    out = []
    for a in report.fairness_alerts:
        metric = _FAIRNESS_METRIC.get(a.type, a.type)
        attribute = a.attribute.replace("_", " ")
        out.append(
            Risk(
                id=f"fairness:{a.attribute}:{metric}",
                kind="fairness",
                words=(
                    f"The model ranks risk less accurately for some patients by {attribute}: "
                    f"AUROC {a.worst_auroc:.3f} in {a.worst_group} against {a.best_auroc:.3f} "
                    f"in {a.best_group}, a gap of {a.gap:.3f} where the task tolerates "
                    f"{a.tolerance:g}."
                ),
                observed=float(a.gap),
                limit=float(a.tolerance),
                criterion="thresholds.subgroup_auroc_gap",
            )
        )
    return out


def _coverage(report: ValidationReport, spec: TaskSpec) -> list[Risk]:
    conformal = report.conformal
    target = float(conformal.target_coverage)
    slack = spec.acceptance.max_coverage_shortfall
    limit = target - slack
    words = spec.words()
    names = {"0": words.non_events, "1": words.events}
    out = []
    for k, value in sorted(conformal.coverage_by_class.items()):
        coverage = _number(value)
        if coverage is None or not coverage < limit:
            continue
        who = names.get(k, f"class {k}")
        out.append(
            Risk(
                id=f"coverage:class_{k}",
                kind="coverage",
                words=(
                    f"For {who}, the prediction set held the true outcome in {coverage:.1%} of "
                    f"their locked test {words.units}, short of the {target:.0%} the sets are "
                    f"built to cover by more than the declared slack of {slack:g}."
                ),
                observed=coverage,
                limit=limit,
                criterion="acceptance.max_coverage_shortfall",
            )
        )
    return out


def _robustness(report: ValidationReport, spec: TaskSpec) -> list[Risk]:
    reference = _number(report.robustness.reference.get("auroc"))
    if reference is None or reference <= 0:
        return []
    tolerance = spec.thresholds.auroc_degradation
    labels = {f.name: f.label for f in spec.features}
    out = []
    for name, row in sorted(report.robustness.masked.items()):
        masked = _number(row.get("auroc"))
        if masked is None:
            continue
        fall = (reference - masked) / reference
        if fall < tolerance:
            continue
        out.append(
            Risk(
                id=f"robustness:{name}",
                kind="robustness",
                words=(
                    f"If {labels.get(name, name)} stopped arriving, the model's AUROC would fall "
                    f"from {reference:.3f} to {masked:.3f} ({fall:.1%} lower), at least the "
                    f"{tolerance:.0%} fall that suspends automated use in service."
                ),
                observed=fall,
                limit=float(tolerance),
                criterion="thresholds.auroc_degradation",
            )
        )
    return out


def risks_of(report: ValidationReport, spec: TaskSpec) -> list[Risk]:
    """Return the risks ``report`` shows against ``spec``: fairness, coverage, robustness.

    Deterministic: the same report and spec give the same risks, ids and words, so
    an acknowledgement recorded against an id keeps naming the same finding.
    """
    return [*_fairness(report), *_coverage(report, spec), *_robustness(report, spec)]
