"""The post-market monitoring plan of a release (EU AI Act, Regulation (EU) 2024/1689, Art. 72).

Art. 72 asks the provider of a high-risk AI system for a post-market monitoring system,
proportionate to the system's risks, that actively and systematically collects,
documents and analyses data on its performance throughout its lifetime (including,
where relevant, its interaction with other AI systems), based on a plan that is part
of the Annex IV technical documentation.

The plan here is read from what actually runs, not written beside it:

* every monitoring rule of the release (:func:`clinical_mlops.monitoring.rules.rule_table`
  of the sealed task spec): what it measures, its threshold (with the spec field it comes
  from), its window, severity, action and owner role — one field ``rules/<rule>`` each;
* who is told: the workspace's ``alerting.yaml`` (owner, channels, escalation delay per
  rule; on-call rotas; automatic suspension), or a field for the deployer to complete
  when the workspace declares no routing;
* the periodic review (interval, last review, next due), the incident process (named
  roles, containment by suspension or rollback, communication, patient-notification
  decision, resolution), suspension and rollback;
* the release's performance on local data as of the plan's time, from monitoring.

Outputs: ``pmm-plan.md`` and ``pmm-plan.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document, Field, Pointer
from clinical_mlops.evidence.layout import Page, Section, Table, render_page
from clinical_mlops.governance.incidents import INCIDENT_ROLES
from clinical_mlops.governance.reviews import CHECKLIST
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["RuleLimit", "build_pmm_plan", "rule_limit"]

_REFERENCE = "Regulation (EU) 2024/1689 (AI Act), Art. 72 and Annex IV point 9"


@dataclass(frozen=True)
class RuleLimit:
    """What one monitoring rule measures, its threshold and where that is declared, its window."""

    quantity: str
    threshold: str
    paths: tuple[str, ...]  # JSON pointers into task_spec.json
    window: str


def _m(spec: TaskSpec) -> Any:
    return spec.monitoring


def _input_window(spec: TaskSpec) -> str:
    return f"last {_m(spec).input_lookback_hours:g} h, at least {_m(spec).min_window_stays} predictions"


def _outcome_window(spec: TaskSpec) -> str:
    m = _m(spec)
    return (
        f"latest {m.outcome_window} linked outcomes (at least {m.min_outcomes}, "
        f"{m.min_outcome_positives} events; outcomes at most {m.outcome_max_age_days:g} days old)"
    )


def _workload_window(spec: TaskSpec) -> str:
    return f"last {_m(spec).alert_volume_lookback_hours:g} h"


def _limits(spec: TaskSpec, workload: dict[str, Any]) -> dict[str, RuleLimit]:
    m, th = spec.monitoring, spec.thresholds
    n_in = "number of monitored inputs"
    adwin = RuleLimit(
        "change in the stream (river ADWIN)",
        f"delta {m.adwin_delta:g}",
        ("/monitoring/adwin_delta",),
        "every window since the release went live",
    )
    ph = RuleLimit(
        "change in the stream (river Page-Hinkley)",
        f"delta {m.page_hinkley_delta:g}, threshold {m.page_hinkley_threshold:g}, after "
        f"{m.page_hinkley_min_instances} values",
        (
            "/monitoring/page_hinkley_delta",
            "/monitoring/page_hinkley_threshold",
            "/monitoring/page_hinkley_min_instances",
        ),
        "every window since the release went live",
    )
    return {
        "input_psi": RuleLimit(
            "population stability index of each input against the reference profile",
            f"PSI >= {th.psi:g} and KS / chi-square p < {m.test_alpha:g} / {n_in}",
            ("/thresholds/psi", "/monitoring/test_alpha"),
            _input_window(spec),
        ),
        "input_missingness": RuleLimit(
            "share of stays missing each input, against the validated share",
            f"{m.missingness_increase:g} above the reference and binomial p < "
            f"{m.test_alpha:g} / {n_in}",
            ("/monitoring/missingness_increase", "/monitoring/test_alpha"),
            _input_window(spec),
        ),
        "input_adwin": adwin,
        "input_page_hinkley": ph,
        "score_psi": RuleLimit(
            "population stability index of the risk score",
            f"PSI >= {th.psi:g} and KS p < {m.test_alpha:g}",
            ("/thresholds/psi", "/monitoring/test_alpha"),
            _input_window(spec),
        ),
        "score_adwin": adwin,
        "score_page_hinkley": ph,
        "auroc_degradation": RuleLimit(
            "live AUROC relative to the validated AUROC",
            f"{100 * th.auroc_degradation:g} % below the validated value, on a full outcome window",
            ("/thresholds/auroc_degradation", "/monitoring/outcome_window"),
            _outcome_window(spec),
        ),
        "calibration": RuleLimit(
            "expected calibration error on linked outcomes",
            f"ECE > {m.max_ece:g}",
            ("/monitoring/max_ece",),
            _outcome_window(spec),
        ),
        "residual_adwin": RuleLimit(
            "observed minus predicted risk (river ADWIN)",
            f"delta {m.adwin_delta:g}",
            ("/monitoring/adwin_delta",),
            _outcome_window(spec),
        ),
        "fairness_gap": RuleLimit(
            "widening of a subgroup's AUROC gap to the population since validation",
            f"lower {100 * m.fairness_confidence:g} % bound > {th.subgroup_auroc_gap:g}",
            ("/thresholds/subgroup_auroc_gap", "/monitoring/fairness_confidence"),
            f"{_outcome_window(spec)}; groups with at least {m.fairness_min_group_positives} events",
        ),
        "override_rate_high": RuleLimit(
            "clinician overrides per prediction shown",
            f">= {100 * m.max_override_rate:g} % of at least {m.min_shown_for_override_rate} shown",
            ("/monitoring/max_override_rate", "/monitoring/min_shown_for_override_rate"),
            f"last {m.override_lookback_hours:g} h",
        ),
        "override_rate_zero": RuleLimit(
            "time in service without any override (automation bias)",
            f"no override for {m.zero_override_days:g} days while at least "
            f"{m.zero_override_min_shown} predictions were shown",
            ("/monitoring/zero_override_days", "/monitoring/zero_override_min_shown"),
            f"last {m.zero_override_days:g} days",
        ),
        "alert_volume": RuleLimit(
            "share of stays above the operating threshold, against the validated share",
            f"outside {m.alert_volume_band[0]:g}–{m.alert_volume_band[1]:g} times the validated share",
            ("/monitoring/alert_volume_band",),
            _workload_window(spec),
        ),
        "review_rate_high": RuleLimit(
            "predictions routed to clinician review per 100 scored",
            f"> {workload['review_budget']:g} per 100 (the release's review budget)",
            ("/escalation/max_reviews_per_100",),
            f"{_workload_window(spec)}, at least {m.min_window_stays} predictions",
        ),
        "queue_size_high": RuleLimit(
            "open review cases of the release",
            f"> {workload['max_open_cases']}",
            ("/monitoring/max_open_cases",),
            "at each evaluation",
        ),
        "review_latency_high": RuleLimit(
            "90th centile of the time from a case's opening to its decision",
            f"> {workload['max_review_latency_hours']:g} h",
            ("/monitoring/max_review_latency_hours",),
            f"{_workload_window(spec)}, at least 5 decided cases",
        ),
    }


def rule_limit(facts: ReleaseFacts, rule: str) -> RuleLimit:
    """Return what ``rule`` measures for this release, its threshold and window (KeyError: unknown)."""
    return _limits(facts.spec, facts.workload)[rule]


def _routing(facts: ReleaseFacts, rule: str) -> tuple[dict[str, Any] | None, Pointer | None]:
    """Return the routing of ``rule`` from alerting.yaml (its own, else the default), or None."""
    alerting = facts.alerting
    if alerting is None:
        return None, None
    own = (alerting.get("rules") or {}).get(rule)
    route = own or alerting.get("default")
    if route is None:
        return None, None
    where = f"alerting.yaml#/rules/{rule}" if own else "alerting.yaml#/default"
    return route, facts.workspace_pointer(where, facts.alerting_sha256)


def _rule_field(facts: ReleaseFacts, rule: str) -> Field:
    meta = facts.monitoring_rules[rule]
    limit = rule_limit(facts, rule)
    value: dict[str, Any] = {
        "kind": meta.get("kind"),
        "measures": limit.quantity,
        "threshold": limit.threshold,
        "window": limit.window,
        "severity": meta["severity"],
        "action": meta["action"],
        "owner role": meta["owner_role"],
    }
    pointers = [facts.spec_pointer(p) for p in limit.paths]
    overridden = rule in (facts.task_spec_json.get("monitoring") or {}).get("rules", {})
    pointers.append(
        facts.spec_pointer(f"/monitoring/rules/{rule}")
        if overridden
        else Pointer("spec", f"clinical_mlops.monitoring.rules.DEFAULT_RULES[{rule}]")
    )
    route, where = _routing(facts, rule)
    if route is not None and where is not None:
        value["notified"] = f"{route['owner']} by {', '.join(route.get('channels') or [])}" + (
            f", escalated after {route['escalate_after_minutes']:g} min"
            if route.get("escalate_after_minutes")
            else ""
        )
        pointers.append(where)
    return Field.known(f"rules/{rule}", f"Rule {rule}", value, *pointers)


def _rule_table(facts: ReleaseFacts) -> Table:
    rows = []
    for rule in sorted(facts.monitoring_rules):
        meta, limit = facts.monitoring_rules[rule], rule_limit(facts, rule)
        route, _ = _routing(facts, rule)
        rows.append(
            (
                rule,
                limit.threshold,
                limit.window,
                str(meta["action"]),
                str(meta["owner_role"]),
                str(route["owner"]) if route else "no routing declared",
            )
        )
    return Table(
        ("rule", "threshold", "window", "action", "owner role", "notified"),
        tuple(rows),
        caption="Monitoring rules at a glance",
    )


def _scope(facts: ReleaseFacts) -> list[Field]:
    use = facts.spec.intended_use
    rollout = facts.rollout
    return [
        Field.known(
            "scope/system",
            "Monitored system",
            {
                "release": facts.version,
                "model": facts.release.get("model_version"),
                "status": facts.release.get("status"),
                "intended use": use.statement,
            },
            facts.registry("release record and status"),
            facts.bundle("deployment.json", "/intended_use"),
        ),
        Field.known(
            "scope/sites",
            "Where it runs",
            [f"{site}: {r['mode']} since {r['since']}" for site, r in sorted(rollout.items())]
            if rollout
            else f"Not served at any site as of {facts.as_of_iso}",
            facts.registry("deployment manifest"),
        ),
        Field.known(
            "scope/proportionality",
            "Proportionality to the risk",
            (facts.model_card.get("warnings") or {}).get("clinical_risk_level"),
            facts.bundle("model_card.json", "/warnings/clinical_risk_level"),
        )
        if (facts.model_card.get("warnings") or {}).get("clinical_risk_level")
        else Field.to_complete(
            "scope/proportionality", "Proportionality to the risk", "clinical safety officer"
        ),
    ]


def _collection(facts: ReleaseFacts) -> list[Field]:
    m = facts.spec.monitoring
    return [
        Field.known(
            "data/collected",
            "Data collected actively and systematically",
            [
                "every prediction: an encrypted, signed ledger record with inputs "
                "(pseudonymised), output, explanation, requester and purpose",
                f"linked outcomes, read back from the EHR up to {m.outcome_max_age_days:g} days",
                "clinician overrides with reason codes, and review cases with their decisions",
                f"monitoring windows every {m.window_minutes} min",
            ],
            facts.spec_pointer("/monitoring/window_minutes"),
            facts.spec_pointer("/monitoring/outcome_max_age_days"),
            Pointer("ledger", f"origin {facts.ledger_origin}, {facts.ledger_size} entries as read"),
        ),
        Field.to_complete(
            "data/deployer",
            "Data the deployer provides",
            "deployer (hospital)",
            note="which outcome feeds and feedback the hospital supplies, and how often",
        ),
        Field.to_complete(
            "data/other-ai-systems",
            "Interaction with other AI systems",
            "deployer (hospital)",
            note="the software does not know which other AI systems act on the same patients",
        ),
    ]


def _routing_fields(facts: ReleaseFacts) -> list[Field]:
    alerting = facts.alerting
    if alerting is None:
        return [
            Field.to_complete(
                "routing/owners",
                "Who is told of an alert",
                "deployer (hospital)",
                note="the workspace declares no alerting.yaml: alerts reach nobody until it does",
            )
        ]
    default = alerting.get("default")
    owners = [r["owner"] for r in [default, *(alerting.get("rules") or {}).values()] if r]
    rotas = alerting.get("rotas")
    if rotas:
        on_call: Any = [
            f"{name}: {len(r['people'])} people ({', '.join(r['people'])}), hand-over every "
            f"{r['period_hours']:g} h from {r['start']}"
            for name, r in sorted(rotas.items())
        ]
    else:
        named = sorted({o.partition(":")[2] for o in owners if o.startswith("rota:")})
        on_call = (
            [f"rota {n}: whoever is on call when the alert opens" for n in named]
            if named
            else "No rota: every owner is a named person"
        )
    out = [
        Field.known(
            "routing/default",
            "Owner of rules without their own routing",
            f"{default['owner']} by {', '.join(default.get('channels') or [])}"
            if default
            else "No default: rules without their own routing notify nobody",
            facts.workspace_pointer("alerting.yaml#/default", facts.alerting_sha256),
        ),
        Field.known(
            "routing/rotas",
            "On-call rotas",
            on_call,
            facts.workspace_pointer("alerting.yaml#/rotas", facts.alerting_sha256),
        ),
        Field.known(
            "routing/suspension",
            "Automatic suspension",
            "On: a critical rule whose action is suspend suspends the release"
            if alerting.get("auto_suspend", True)
            else "Off: a person must suspend the release",
            facts.workspace_pointer("alerting.yaml#/auto_suspend", facts.alerting_sha256),
        ),
    ]
    return out


def _review(facts: ReleaseFacts) -> list[Field]:
    r = facts.review
    last = r.get("last_review")
    value: dict[str, Any] = {
        "interval": f"every {r['interval_days']} days from approval or the last review",
        "checklist": ", ".join(CHECKLIST),
        "last review": f"{last['time']} by {last['reviewer']}: {last['outcome']}"
        if last
        else "No review recorded yet",
    }
    if r.get("due"):
        value["next due"] = str(r["due"])
    pointers = [facts.registry("review schedule")]
    seq = next((e["seq"] for e in reversed(facts.events_of("review"))), None)
    if seq is not None:
        pointers.append(facts.ledger(int(seq), "review"))
    return [Field.known("review/schedule", "Periodic review", value, *pointers)]


def _incidents(facts: ReleaseFacts) -> list[Field]:
    seqs = [
        facts.ledger(int(e["seq"]), f"incident {e['payload'].get('action')}")
        for e in facts.events
        if e["type"] == "incident"
    ]
    recorded = [
        f"{i['id']} ({i['severity']}): {i['status']}, opened {i['opened']}" for i in facts.incidents
    ]
    return [
        Field.known(
            "incidents/process",
            "Incident process",
            {
                "roles": ", ".join(r.replace("_", " ") for r in INCIDENT_ROLES),
                "steps": "open (named roles, severity low/moderate/high/critical) -> contained "
                "(suspend the release or roll back to an earlier approved one) -> communication "
                "-> patient-notification decision -> resolved with the root cause",
                "resolved by": "compliance or clinical role",
            },
            Pointer("spec", "clinical_mlops.governance.incidents (INCIDENT_ROLES, resolve)"),
        ),
        Field.known(
            "incidents/recorded",
            "Incidents recorded for this release",
            recorded or f"No incident recorded up to {facts.as_of_iso}",
            facts.registry("incidents"),
            *seqs,
        ),
        Field.to_complete(
            "incidents/serious-reporting",
            "Serious-incident reporting to the market surveillance authority (Art. 73)",
            "regulatory affairs",
            note="the report to the authority is written by people; the incident record is its "
            "evidence",
        ),
    ]


def _containment(facts: ReleaseFacts) -> list[Field]:
    suspending = sorted(r for r, m in facts.monitoring_rules.items() if m["action"] == "suspend")
    changes = [
        facts.ledger(int(h["ledger_seq"]), f"status {h['to']}")
        for h in facts.history
        if h.get("to") == "suspended" and h.get("ledger_seq") is not None
    ]
    return [
        Field.known(
            "control/suspension",
            "Suspension and rollback",
            {
                "automatic": f"rules that suspend: {', '.join(suspending)}"
                if suspending
                else "No rule suspends automatically",
                "fallback": "while suspended the service returns the clinical-baseline fallback, "
                "never a model score",
                "suspend": "any governance role, recorded with its reason",
                "rollback": "clinical or engineering role, to an earlier approved release",
                "resume": "compliance role",
                "retraining": "no rule ever retrains a model",
            },
            Pointer("spec", "clinical_mlops.governance.board (TRANSITIONS, rollback)"),
            *changes,
        )
    ]


def _local(facts: ReleaseFacts) -> list[Field]:
    local = facts.local
    if local is None:
        return [
            Field.known(
                "performance/local",
                "Performance on local data",
                f"No monitored window with linked outcomes at or before {facts.as_of_iso}",
                facts.monitoring(f"windows of {facts.version} up to {facts.as_of_iso}"),
            )
        ]
    return [
        Field.known(
            "performance/local",
            "Performance on local data",
            {
                "window": local.window_end,
                "outcomes": local.n_outcomes,
                "AUROC": local.auroc,
                "AUROC fall vs validation": local.auroc_degradation,
                "ECE": local.ece,
                "windows monitored": f"{local.n_windows} since {local.first_window}",
            },
            facts.monitoring(f"window {local.window_end} of {facts.version}"),
        )
    ]


def _feedback(facts: ReleaseFacts) -> list[Field]:
    return [
        Field.to_complete(
            "feedback/risk-management",
            "How findings update the risk management system and technical documentation",
            "clinical safety officer",
            note="reviews and incidents are recorded; the organisation's procedure for acting "
            "on them is its own",
        )
    ]


_SECTIONS: tuple[tuple[str, str, str, Callable[[ReleaseFacts], list[Field]]], ...] = (
    ("scope", "1. Scope", "What is monitored, where, and why this much.", _scope),
    (
        "data",
        "2. Data collection",
        "What is collected on performance throughout the lifetime.",
        _collection,
    ),
    (
        "performance",
        "3. Performance on local data",
        "As of the plan's time, from monitoring.",
        _local,
    ),
)


def build_pmm_plan(facts: ReleaseFacts) -> Document:
    """Return the Art. 72 post-market monitoring plan of the release, in Markdown and HTML.

    Lists every monitoring rule the monitoring package evaluates for the release, with
    its threshold, window, action and owner role, and who is notified; the review
    schedule, the incident process, suspension and rollback.
    """
    rules = [_rule_field(facts, r) for r in sorted(facts.monitoring_rules)]
    parts: list[tuple[str, str, str | None, list[Field], tuple[Table, ...]]] = [
        (sid, title, intro, build(facts), ()) for sid, title, intro, build in _SECTIONS
    ]
    parts += [
        (
            "rules",
            "4. Monitoring rules",
            "Each rule of the release's sealed task spec as the monitor evaluates it.",
            rules,
            (_rule_table(facts),),
        ),
        (
            "routing",
            "5. Owners and rotas",
            "Who is told of an alert, and how.",
            _routing_fields(facts),
            (),
        ),
        ("review", "6. Periodic review", None, _review(facts), ()),
        ("incidents", "7. Incidents", None, _incidents(facts), ()),
        ("control", "8. Suspension and rollback", None, _containment(facts), ()),
        ("feedback", "9. Feedback into risk management", None, _feedback(facts), ()),
    ]
    fields = [f for _, _, _, fs, _ in parts for f in fs]
    doc = Document(
        format="pmm-plan",
        title=f"Post-market monitoring plan — {facts.spec.title}",
        release=facts.version,
        as_of=facts.as_of_iso,
        fields=fields,
    )
    page = Page(
        framework=_REFERENCE,
        sections=tuple(
            Section(sid, title, tuple(f.key for f in fs), intro, tables)
            for sid, title, intro, fs, tables in parts
        ),
        preamble=(
            "Read from the monitoring rules, the workspace's alert routing, the governance "
            "record and the monitored windows of this release; part of the Annex IV technical "
            "documentation (point 9).",
        ),
    )
    md, page_html = render_page(doc, page)
    doc.files = {"pmm-plan.md": md, "pmm-plan.html": page_html}
    return doc
