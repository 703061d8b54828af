"""Change classification between two release bundles (R-L6), with clinical release notes.

Each difference is put in one class:

- **clinical-impacting** — what a patient's risk, flag or explanation would be:
  features added/removed/redefined, the operating threshold, cohort criteria, the
  model (weights, hyperparameters), calibration, conformal thresholds, the
  explanation method; a local recalibration at a site (named with the site, the
  stays it was fitted on and the method);
- **operational** — how it was built, not what it outputs: the data snapshot, the
  code commit, the software environment, with identical model artifacts;
- **administrative** — documentation only: report, model card, explanation wording.

The release is classed by its most serious change. Release notes say what changes
for clinicians in their words; a threshold change is stated as alerts per 100
patients on the reference (locked test) population of the candidate, and a threshold
or escalation-policy change as the workload each release's validation report
computed at its own threshold and policy: alerts and clinician reviews per 100
patients, before -> after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from clinical_mlops.registry.bundle import Bundle

__all__ = ["CHANGE_CLASSES", "Change", "ChangeReport", "classify_change"]

ChangeClass = Literal["administrative", "operational", "clinical-impacting"]
CHANGE_CLASSES: tuple[ChangeClass, ...] = ("administrative", "operational", "clinical-impacting")


@dataclass(frozen=True)
class Change:
    """One difference between two bundles."""

    what: str
    change_class: ChangeClass
    note: str
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "class": self.change_class,
            "note": self.note,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True)
class ChangeReport:
    """Every change from ``against`` to ``candidate`` and the resulting class."""

    against: str
    candidate: str
    changes: list[Change] = field(default_factory=list)

    @property
    def change_class(self) -> str:
        if not self.changes:
            return "none"
        return max((c.change_class for c in self.changes), key=CHANGE_CLASSES.index)

    @property
    def notes(self) -> list[str]:
        return [c.note for c in self.changes]

    @property
    def requires_all_gates(self) -> bool:
        return self.change_class == "clinical-impacting"

    def to_json(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "candidate": self.candidate,
            "change_class": self.change_class,
            "requires_all_gates": self.requires_all_gates,
            "changes": [c.to_json() for c in self.changes],
            "notes": self.notes,
        }


def _per100(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


def _workload(bundle: Bundle) -> tuple[float | None, float | None]:
    """Return (alerts, reviews) per 100 test stays from a bundle's report (None: not stated)."""
    w = bundle.read_json("report.json").get("workload") or {}

    def number(key: str) -> float | None:
        value = w.get(key)
        return float(value) if isinstance(value, int | float) else None

    return number("alerts_per_100"), number("reviews_per_100")


def _workload_words(old: Bundle, new: Bundle) -> str:
    """Return "alerts per 100 patients a -> b, clinician reviews per 100 patients c -> d"."""
    (a0, r0), (a1, r1) = _workload(old), _workload(new)
    return (
        f"alerts per 100 patients {_per100(a0)} -> {_per100(a1)}, clinician reviews per 100 "
        f"patients {_per100(r0)} -> {_per100(r1)} (validation reports at each release's "
        "threshold and escalation policy)"
    )


def _policy_terms(bundle: Bundle) -> dict[str, Any] | None:
    """Return what a release's escalation policy declares (not what it resolves to), or None."""
    policy = bundle.deployment.get("escalation")
    if not isinstance(policy, dict):
        return None
    terms = {
        k: policy.get(k)
        for k in ("review_on", "max_reviews_per_100", "beyond_budget", "band_sizing")
    }
    if policy.get("band_sizing") == "declared":
        terms["band"] = policy.get("band")
    return terms


def _threshold_note(old: Bundle, new: Bundle) -> str:
    profile = new.profile()
    a = profile.alert_rate(old.threshold)
    b = profile.alert_rate(new.threshold)
    if a is None or b is None:
        workload = "alert workload on the reference population unknown"
    else:
        diff = b - a
        where = f"({_per100(a)} -> {_per100(b)} on {profile.population})"
        if abs(diff) < 0.05:
            workload = f"no change in alerts per 100 patients {where}"
        else:
            direction = "more" if diff > 0 else "fewer"
            workload = f"about {abs(diff):.1f} {direction} alerts per 100 patients {where}"
    events = new.spec().words().events
    lower = (
        f"lower: more patients flagged, more {events} caught, more false alarms"
        if (new.threshold < old.threshold)
        else f"higher: fewer patients flagged, fewer false alarms, more {events} missed"
    )
    return (
        f"Operating threshold moved {old.threshold:.2f} -> {new.threshold:.2f}: {workload}; "
        f"threshold {lower}. Workload: {_workload_words(old, new)}."
    )


def _recalibration_change(old: dict[str, Any], new: dict[str, Any]) -> Change | None:
    """Return the local recalibration the candidate's lineage records and the old one's does not."""
    recal = new.get("recalibration")
    if not recal or recal == old.get("recalibration"):
        return None
    counts = recal["split"]["counts"]
    n_fit = counts["calibrator"]["stays"] + counts["conformal"]["stays"]
    events = counts["calibrator"]["events"] + counts["conformal"]["events"]
    held = counts["held_out"]
    fit, out = recal["split"]["fit_years"], recal["split"]["held_out_years"]
    return Change(
        "local recalibration",
        "clinical-impacting",
        f"Calibration refit at site {recal['site']} on {n_fit} stays ({events} events, "
        f"{fit[0]}-{fit[1]}) of snapshot {str(recal['snapshot_id'])[:12]} by {recal['method']} "
        f"recalibration of {recal['parent']['model_version']}: the scoring model is unchanged, "
        "the probability, uncertainty set and review routing of each patient change. "
        f"Validated on {held['stays']} held-out stays of the site ({out[0]}-{out[1]}); roll it "
        f"out at site {recal['site']} only.",
        old.get("recalibration", {}).get("site") if old.get("recalibration") else None,
        {"site": recal["site"], "method": recal["method"], "n_fit": n_fit},
    )


def classify_change(old: Bundle, new: Bundle) -> ChangeReport:
    """Return the classified changes from the approved bundle ``old`` to the candidate ``new``."""
    changes: list[Change] = []
    add = changes.append
    of, nf = old.read_json("feature_schema.json"), new.read_json("feature_schema.json")
    old_feats = {f["name"]: f for f in of["features"]}
    new_feats = {f["name"]: f for f in nf["features"]}
    for name in sorted(set(old_feats) - set(new_feats)):
        add(
            Change(
                f"feature {name}",
                "clinical-impacting",
                f"Input removed: {old_feats[name]['label']} is no longer used.",
                name,
                None,
            )
        )
    for name in sorted(set(new_feats) - set(old_feats)):
        add(
            Change(
                f"feature {name}",
                "clinical-impacting",
                f"Input added: {new_feats[name]['label']} ({new_feats[name]['unit'] or 'no unit'}).",
                None,
                name,
            )
        )
    for name in sorted(set(old_feats) & set(new_feats)):
        a, b = old_feats[name], new_feats[name]
        core = ("kind", "unit", "valid_range", "categories", "aggregation", "status")
        if any(a[k] != b[k] for k in core):
            diff = [k for k in core if a[k] != b[k]]
            add(
                Change(
                    f"feature {name}",
                    "clinical-impacting",
                    f"Input {a['label']} redefined ({', '.join(diff)} changed).",
                    {k: a[k] for k in diff},
                    {k: b[k] for k in diff},
                )
            )
        elif a != b:
            add(
                Change(
                    f"feature {name} wording",
                    "administrative",
                    f"Wording of the input {b['label']} updated.",
                    None,
                    None,
                )
            )
    if old.threshold != new.threshold:
        add(
            Change(
                "operating threshold",
                "clinical-impacting",
                _threshold_note(old, new),
                old.threshold,
                new.threshold,
            )
        )
    old_policy, new_policy = _policy_terms(old), _policy_terms(new)
    if old_policy != new_policy:
        statement = (new.deployment.get("escalation") or {}).get("statement", "none declared")
        add(
            Change(
                "escalation policy",
                "clinical-impacting",
                f"Escalation policy changed: which cases go to clinician review differs. "
                f"{statement} Workload: {_workload_words(old, new)}.",
                old_policy,
                new_policy,
            )
        )
    if of["cohort_criteria_sha256"] != nf["cohort_criteria_sha256"]:
        add(
            Change(
                "cohort criteria",
                "clinical-impacting",
                "Cohort changed: the patients the model is validated for are different; "
                "check the intended population in the model card.",
                of["cohort_criteria_sha256"][:12],
                nf["cohort_criteria_sha256"][:12],
            )
        )
    ol, nl = old.read_json("lineage.json"), new.read_json("lineage.json")
    recal = _recalibration_change(ol, nl)
    if recal is not None:
        add(recal)
    model_files = {
        "model.json": "Model retrained or re-tuned: individual risk estimates change.",
        "calibrator.json": "Calibration changed: the same score maps to a different probability.",
        "conformal.json": "Uncertainty sets changed: which patients are marked 'uncertain' changes.",
        "preprocess.json": "Handling of missing values or categories changed.",
    }
    o_files, n_files = old.manifest["files"], new.manifest["files"]
    for name, note in model_files.items():
        if o_files.get(name) != n_files.get(name):
            extra = ""
            if name == "model.json":
                oh = ol["selection"]["hyperparameters"]
                nh = nl["selection"]["hyperparameters"]
                if (
                    oh != nh
                    or ol["selection"]["selected_model"] != nl["selection"]["selected_model"]
                ):
                    extra = (
                        f" Model type/hyperparameters {ol['selection']['selected_model']} -> "
                        f"{nl['selection']['selected_model']}."
                    )
            add(
                Change(
                    name.removesuffix(".json"),
                    "clinical-impacting",
                    note + extra,
                    o_files.get(name, "")[:12],
                    n_files.get(name, "")[:12],
                )
            )
    oe, ne = old.read_json("explanation.json"), new.read_json("explanation.json")
    if oe.get("method") != ne.get("method"):
        add(
            Change(
                "explanation method",
                "clinical-impacting",
                f"Explanations shown to clinicians now come from {ne.get('method')} "
                f"(was {oe.get('method')}).",
                oe.get("method"),
                ne.get("method"),
            )
        )
    elif o_files.get("explanation.json") != n_files.get("explanation.json"):
        add(
            Change(
                "explanation wording",
                "administrative",
                "Wording of explanations updated; the method is unchanged.",
                None,
                None,
            )
        )
    if ol["snapshot"]["id"] != nl["snapshot"]["id"]:
        add(
            Change(
                "snapshot",
                "operational",
                "Built from a different data snapshot.",
                ol["snapshot"]["id"][:12],
                nl["snapshot"]["id"][:12],
            )
        )
    if ol["code"].get("commit") != nl["code"].get("commit"):
        add(
            Change(
                "code",
                "operational",
                "Built by a different code version.",
                ol["code"].get("commit"),
                nl["code"].get("commit"),
            )
        )
    if ol["environment"].get("packages_sha256") != nl["environment"].get("packages_sha256"):
        add(
            Change(
                "environment",
                "operational",
                "Built with different software package versions.",
                None,
                None,
            )
        )
    for name in ("report.json", "model_card.md"):
        if o_files.get(name) != n_files.get(name) and not any(
            c.change_class == "clinical-impacting" for c in changes
        ):
            add(Change(name, "administrative", f"Documentation updated ({name}).", None, None))
    return ChangeReport(
        against=str(old.release["model_version"]) + f" ({old.sha256[:12]})",
        candidate=str(new.release["model_version"]) + f" ({new.sha256[:12]})",
        changes=changes,
    )
