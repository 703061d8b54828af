"""The framework documents of a governed release: TRIPOD+AI, Annex IV, the Art. 72 plan, the PCCP."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.evidence import FORMATS
from clinical_mlops.evidence.annex_iv import SECTIONS, build_annex_iv
from clinical_mlops.evidence.facts import ReleaseFacts, gather_facts
from clinical_mlops.evidence.fields import OWNER_ROLES, Document, field_problems
from clinical_mlops.evidence.pccp import MODIFICATIONS, build_pccp
from clinical_mlops.evidence.pmm_plan import build_pmm_plan, rule_limit
from clinical_mlops.evidence.tripod import ITEMS, STATUSES, build_tripod, tripod_status
from clinical_mlops.monitoring.rules import RULE_KINDS, rule_table, workload_limits
from clinical_mlops.registry.changes import CHANGE_CLASSES
from clinical_mlops.tasks.spec import MONITORING_RULES
from clinical_mlops.workspace import Workspace
from registry_helpers import trained  # noqa: F401

BUILDERS = {
    "tripod-ai": build_tripod,
    "annex-iv": build_annex_iv,
    "pmm-plan": build_pmm_plan,
    "pccp": build_pccp,
}
#: the TRIPOD+AI sub-items only the study's people can state
OWED_BY_PEOPLE = ("2", "17", "18a", "18b", "18d", "19")


@pytest.fixture(scope="module")
def framework_ws(
    trained: tuple[Path, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str]:
    """(workspace root, release) of the demo release governed to approved, made once."""
    ws = Workspace.open(tmp_path_factory.mktemp("frameworks"))
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(ws, model_version=trained[1])
    return ws.root, str(shown["version"])


@pytest.fixture(scope="module")
def facts(framework_ws: tuple[Path, str]) -> ReleaseFacts:
    root, release = framework_ws
    return gather_facts(Workspace.open(root), release)


@pytest.fixture
def private_ws(framework_ws: tuple[Path, str], tmp_path: Path) -> tuple[Workspace, str]:
    """A private copy of the governed workspace, to change its alert routing."""
    root, release = framework_ws
    shutil.copytree(root, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws"), release


def _blanks(value: Any) -> bool:
    """True when a known value holds an unknown part: None, or the text "None" from one."""
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_blanks(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_blanks(v) for v in value)
    return bool(re.search(r"\bNone\b", str(value)))


def _sound(doc: Document) -> None:
    assert field_problems(doc) == []
    for f in doc.fields:
        if f.missing:
            assert f.owner in OWNER_ROLES, f.key
        else:
            assert f.pointers, f.key
            assert not _blanks(f.value), (f.key, f.value)


def test_the_four_framework_formats_are_registered_in_document_order() -> None:
    names = [n for n in FORMATS if n in BUILDERS]
    assert names == ["tripod-ai", "annex-iv", "pmm-plan", "pccp"]
    assert all(FORMATS[n] is BUILDERS[n] for n in names)


def test_tripod_ai_has_all_27_items_and_every_sub_item_once(facts: ReleaseFacts) -> None:
    ids = [i.id for i in ITEMS]
    assert len(ids) == len(set(ids)) == 52
    assert sorted({int(re.match(r"\d+", i).group()) for i in ids}) == list(range(1, 28))  # type: ignore[union-attr]
    doc = build_tripod(facts)
    assert [f.key for f in doc.fields] == [f"tripod/{i}" for i in ids]
    _sound(doc)
    for f in doc.fields:
        status = tripod_status(f)
        if f.missing:
            assert status == f"to be completed by {f.owner}"
        else:
            assert status in STATUSES
            if status == "partly":
                assert f.owner in OWNER_ROLES, f.key
    for item in OWED_BY_PEOPLE:
        assert doc.field(f"tripod/{item}").missing
    # what the release documents is judged from its evidence, with the bundle file's hash
    perf = doc.field("tripod/23a")
    assert tripod_status(perf) == "met"
    assert perf.pointers[0].sha256 == facts.files["report.json"]
    assert f"{facts.report['test']['auroc']:.3f}" in perf.value["AUROC"]
    body = json.loads(doc.files["tripod-ai.json"])
    assert [x["item"] for x in body["items"]] == ids
    assert sum(body["counts"].values()) == 52
    assert {x["status"] for x in body["items"]} <= {
        *STATUSES,
        *(f"to be completed by {r}" for r in OWNER_ROLES),
    }


def test_annex_iv_has_sections_1_to_9(facts: ReleaseFacts) -> None:
    doc = build_annex_iv(facts)
    _sound(doc)
    assert sorted({int(f.key.split("/")[0]) for f in doc.fields}) == list(range(1, 10))
    page = doc.files["annex-iv.html"].decode()
    for n, title in SECTIONS.items():
        assert f'id="section-{n}"' in page
        assert f"## {n}. {title}" in doc.files["annex-iv.md"].decode()
    # the provider's own statements are owed, never invented
    assert doc.field("8/declaration").owner == "provider organisation"
    assert doc.field("7/standards").missing
    # approvals and gates point at their ledger entries
    seqs = {p.ref for p in doc.field("2/g/validation").pointers if p.kind == "ledger"}
    assert {f"seq {a['seq']} (approval {a['role']})" for a in facts.approvals} <= seqs


def test_pmm_plan_lists_every_rule_the_monitor_evaluates_with_threshold_and_owner(
    facts: ReleaseFacts,
) -> None:
    doc = build_pmm_plan(facts)
    _sound(doc)
    table = rule_table(facts.spec)
    assert set(table) == set(MONITORING_RULES) == set(RULE_KINDS)
    rules = {f.key.split("/", 1)[1]: f for f in doc.fields if f.key.startswith("rules/")}
    assert set(rules) == set(table)
    for name, rule in table.items():
        value = rules[name].value
        assert value["owner role"] == rule.owner_role
        assert value["action"] == rule.action
        assert value["severity"] == rule.severity
        assert value["threshold"] == rule_limit(facts, name).threshold
    m, th = facts.spec.monitoring, facts.spec.thresholds
    limits = workload_limits(facts.spec, facts.deployment)
    expected = {
        "input_psi": f"{th.psi:g}",
        "score_psi": f"{th.psi:g}",
        "calibration": f"{m.max_ece:g}",
        "auroc_degradation": f"{100 * th.auroc_degradation:g} %",
        "fairness_gap": f"{th.subgroup_auroc_gap:g}",
        "override_rate_high": f"{100 * m.max_override_rate:g} %",
        "review_rate_high": f"{limits.review_budget:g}",
        "queue_size_high": f"{limits.max_open_cases}",
        "review_latency_high": f"{limits.max_review_latency_hours:g} h",
    }
    for name, number in expected.items():
        assert number in rules[name].value["threshold"], name
    md = doc.files["pmm-plan.md"].decode()
    for name in table:
        assert f"| {name} |" in md
    # no routing declared: who is told is owed by the hospital, not invented
    assert doc.field("routing/owners").owner == "deployer (hospital)"
    assert doc.field("incidents/process").value["roles"] == (
        "incident lead, clinical lead, communications lead"
    )


def test_pmm_plan_threshold_is_the_release_specs(facts: ReleaseFacts) -> None:
    spec = facts.spec
    changed = spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"max_ece": 0.123})}
    )
    before = build_pmm_plan(facts).field("rules/calibration").value["threshold"]
    after = build_pmm_plan(dataclasses.replace(facts, spec=changed))
    assert before == f"ECE > {spec.monitoring.max_ece:g}"
    assert after.field("rules/calibration").value["threshold"] == "ECE > 0.123"
    assert "ECE &gt; 0.123" in after.files["pmm-plan.html"].decode()


def _alerting(escalate_after: int) -> dict[str, Any]:
    return {
        "people": {"dr.ortiz": {"email": "ortiz@icu.example.org"}, "dr.lee": {"email": "l@x.org"}},
        "smtp": {"host": "smtp.icu.example.org", "sender": "mlops@icu.example.org"},
        "rotas": {
            "icu-oncall": {
                "people": ["dr.ortiz", "dr.lee"],
                "period_hours": 168,
                "start": "2026-01-05T08:00:00Z",
            }
        },
        "default": {"owner": "person:dr.lee", "channels": ["email"]},
        "rules": {
            "auroc_degradation": {
                "owner": "rota:icu-oncall",
                "channels": ["email"],
                "escalate_after_minutes": escalate_after,
            }
        },
    }


def test_pmm_plan_follows_the_workspace_alert_routing(private_ws: tuple[Workspace, str]) -> None:
    ws, release = private_ws
    ws.path("alerting").write_text(yaml.safe_dump(_alerting(30)), encoding="utf-8")
    doc = build_pmm_plan(gather_facts(ws, release))
    _sound(doc)
    rule = doc.field("rules/auroc_degradation")
    assert rule.value["notified"] == "rota:icu-oncall by email, escalated after 30 min"
    where = [p for p in rule.pointers if p.kind == "workspace"]
    assert [p.ref for p in where] == ["alerting.yaml#/rules/auroc_degradation"]
    assert where[0].sha256 is not None
    # a rule without its own routing goes to the default owner
    calibration = doc.field("rules/calibration")
    assert calibration.value["notified"].startswith("person:dr.lee by email")
    assert "icu-oncall" in doc.field("routing/rotas").shown()
    with pytest.raises(KeyError):
        doc.field("routing/owners")

    ws.path("alerting").write_text(yaml.safe_dump(_alerting(10)), encoding="utf-8")
    changed = build_pmm_plan(gather_facts(ws, release)).field("rules/auroc_degradation")
    assert changed.value["notified"] == "rota:icu-oncall by email, escalated after 10 min"
    assert changed.pointers[-1].sha256 != where[0].sha256


def test_pccp_maps_every_change_class(facts: ReleaseFacts) -> None:
    doc = build_pccp(facts)
    _sound(doc)
    assert set(MODIFICATIONS) == set(CHANGE_CLASSES)
    for cls in CHANGE_CLASSES:
        assert doc.field(f"modifications/{cls}").value["modifications"]
    acc = facts.spec.acceptance
    criteria = doc.field("protocol/performance-evaluation").value
    assert criteria["AUROC"] == f">= {acc.min_auroc:g} on the locked test set"
    assert criteria["calibration"] == f"ECE <= {acc.max_ece:g}"
    assert all(g.endswith("passed for this release") for g in criteria["gates"])
    this = doc.field("modifications/this-release").value
    assert this["class"] == facts.release["change_class"] == "initial"
    sections = [s for s in ("1. Description", "2. Modification", "3. Impact")]
    md = doc.files["pccp.md"].decode()
    assert all(f"## {s}" in md for s in sections)
    assert doc.field("impact/benefit-risk").owner == "clinical safety officer"


HOSTILE = '<script>alert("x")</script> [click](javascript:alert(1)) | row'


def test_documents_escape_hostile_values(facts: ReleaseFacts) -> None:
    spec = facts.spec
    use = spec.intended_use.model_copy(
        update={"statement": f"Flags {HOSTILE} patients", "population": f"Adults {HOSTILE}"}
    )
    hostile = dataclasses.replace(
        facts,
        spec=spec.model_copy(update={"description": f"Estimates {HOSTILE}", "intended_use": use}),
    )
    for name, build in BUILDERS.items():
        doc = build(hostile)
        assert field_problems(doc) == []
        html_page = next(v for k, v in doc.files.items() if k.endswith(".html")).decode()
        md = next(v for k, v in doc.files.items() if k.endswith(".md")).decode()
        assert "<script" not in html_page, name
        assert "&lt;script&gt;" in html_page, name
        assert "<script" not in md and "&lt;script&gt;" in md, name
        assert "[click](javascript" not in md, name
        # self-contained: no script, no external resource
        assert not re.search(r"\b(src|href)=", html_page), name
