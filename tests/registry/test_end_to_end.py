"""Train -> bundle -> gates -> three approvals -> pilot -> approved -> clinical-impacting
candidate -> promote -> rollback, on SQLite and on PostgreSQL, with refusals audited."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from clinical_mlops.application.governance import acknowledge_risk, release_risks
from clinical_mlops.errors import (
    ApprovalRefused,
    BundleSignatureInvalid,
    GateFailed,
    ReleaseNotFound,
    RoleRequired,
    TransitionNotAllowed,
)
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.operations import operations_metrics
from clinical_mlops.governance.policy import run_gates
from clinical_mlops.governance.rollout import serving_decision
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from identities import console


def _events(ws):
    with Ledger.open(ws) as led:
        return [(led.entry(s), led.read(s).payload) for s in range(led.size())]


def _approve_all(gov, v):
    gov.decide(
        v,
        person="erin",
        role="engineering",
        decision="approve",
        why="code and tests ok",
        identity=console("erin"),
    )
    gov.decide(
        v,
        person="dr.kim",
        role="clinical",
        decision="approve",
        why="clinically sound",
        identity=console("dr.kim"),
    )
    gov.decide(
        v,
        person="cora",
        role="compliance",
        decision="approve",
        why="documentation ok",
        identity=console("cora"),
    )


def _acknowledge_risks(gov, v):
    """The clinician accepts each risk the release carries out of validation (gate 3)."""
    for risk in release_risks(gov, v):
        acknowledge_risk(
            gov,
            v,
            risk=risk["id"],
            actor="dr.kim",
            reason="accepted for the pilot",
            identity=console("dr.kim"),
        )


def test_release_lifecycle_end_to_end(meta_backend, fresh_workspace, trained, clock):
    ws = fresh_workspace("e2e")
    model_version = trained[1]
    reg = Registry.open(ws, clock=clock)
    gov = Governance(reg)
    gov.grant_roles("cora", roles=["compliance"], actor="cora", why="bootstrap")
    for person, role in (("eli", "engineering"), ("erin", "engineering"), ("dr.kim", "clinical")):
        gov.grant_roles(person, roles=[role], actor="cora", why="release team")
    gov.grant_roles("max", roles=["clinical", "engineering"], actor="cora", why="dual-trained")

    bundle = build_bundle(ws, model_version=model_version, author="eli", clock=clock)
    v1 = gov.register(bundle, actor="eli", why="first release").version
    assert v1 == "icu_mortality_48h@1"
    assert reg.get(v1).status == "draft"

    # gates 1-3, then validated
    with pytest.raises(GateFailed, match="gate schema_contract has not been evaluated"):
        gov.promote(v1, actor="eli", why="too early", identity=console("eli"))
    _acknowledge_risks(gov, v1)
    results = run_gates(gov, v1, actor="eli")
    assert {n: r.passed for n, r in results.items()} == {
        "schema_contract": True,
        "metrics": True,
        "evidence": True,
    }
    assert (
        gov.promote(v1, actor="eli", why="gates 1-3 passed", identity=console("eli")).status
        == "validated"
    )

    # illegal transition and missing role: refused, audited, no state change
    with pytest.raises(TransitionNotAllowed, match="validated -> approved is not an allowed"):
        gov.transition(v1, to="approved", actor="cora", why="skip ahead", identity=console("cora"))
    with pytest.raises(RoleRequired, match="needs a person in role clinical"):
        gov.promote(v1, actor="erin", why="not a clinician", identity=console("erin"))
    assert reg.get(v1).status == "validated"
    assert (
        gov.promote(v1, actor="dr.kim", why="report reviewed", identity=console("dr.kim")).status
        == "clinically_reviewed"
    )

    # gate 4: self-approval, one person in two roles, premature promotion
    with pytest.raises(ApprovalRefused, match="author of the bundle"):
        gov.decide(
            v1,
            person="eli",
            role="engineering",
            decision="approve",
            why="mine",
            identity=console("eli"),
        )
    gov.decide(
        v1, person="max", role="engineering", decision="approve", why="ok", identity=console("max")
    )
    with pytest.raises(ApprovalRefused, match="one person cannot fill two roles"):
        gov.decide(
            v1, person="max", role="clinical", decision="approve", why="ok", identity=console("max")
        )
    with pytest.raises(GateFailed, match="missing approval in role clinical"):
        gov.promote(v1, actor="cora", why="not yet", identity=console("cora"))
    gov.decide(
        v1,
        person="dr.kim",
        role="clinical",
        decision="approve",
        why="clinically sound",
        identity=console("dr.kim"),
    )
    gov.decide(
        v1,
        person="cora",
        role="compliance",
        decision="approve",
        why="documentation ok",
        identity=console("cora"),
    )
    assert (
        gov.promote(v1, actor="cora", why="pilot", identity=console("cora")).status
        == "approved_limited"
    )
    assert gov.gates(v1)["approvals"]["evidence"]["approved_by"] == {
        "engineering": "max",
        "clinical": "dr.kim",
        "compliance": "cora",
    }

    # pilot at a named site; full mode is refused before approval
    with pytest.raises(TransitionNotAllowed, match="allows shadow, silent, pilot"):
        gov.set_rollout(
            v1, site="*", mode="full", actor="dr.kim", identity=console("dr.kim"), why="too early"
        )
    manifest = gov.set_rollout(
        v1, site="icu-north", mode="pilot", actor="dr.kim", identity=console("dr.kim"), why="pilot"
    )
    assert serving_decision(manifest, site="icu-north").show_to_clinician is True
    assert serving_decision(manifest, site="icu-south").score is False
    # shadow never replaces what runs at a site: it starts a trial beside it
    shadow = gov.set_rollout(
        v1, site="icu-east", mode="shadow", actor="dr.kim", identity=console("dr.kim"), why="shadow"
    )
    assert "icu-east" not in shadow["sites"]
    assert [(t["release"], t["site"], t["mode"]) for t in shadow["trials"]] == [
        (v1, "icu-east", "shadow")
    ]

    clock.advance(timedelta(days=3))
    assert (
        gov.promote(v1, actor="cora", why="pilot reviewed", identity=console("cora")).status
        == "approved"
    )
    assert reg.active("icu_mortality_48h").version == v1

    # a candidate with a lower threshold is clinical-impacting, with workload in the notes
    candidate = build_bundle(
        ws, model_version=model_version, author="eli", threshold=0.15, clock=clock
    )
    v2 = gov.register(candidate, actor="eli", why="lower threshold").version
    change = reg.get(v2).change
    assert change["change_class"] == "clinical-impacting"
    assert change["requires_all_gates"] is True
    note = change["notes"][0]
    assert note.startswith("Operating threshold moved 0.40 -> 0.15: about ")
    assert "more alerts per 100 patients" in note
    with pytest.raises(GateFailed):
        gov.promote(v2, actor="eli", why="gates must run again", identity=console("eli"))
    _acknowledge_risks(gov, v2)
    run_gates(gov, v2, actor="eli")
    gov.promote(v2, actor="eli", why="gates passed", identity=console("eli"))
    gov.promote(v2, actor="dr.kim", why="reviewed", identity=console("dr.kim"))
    _approve_all(gov, v2)
    gov.promote(v2, actor="cora", why="pilot", identity=console("cora"))
    gov.promote(v2, actor="cora", why="approved", identity=console("cora"))
    assert reg.active("icu_mortality_48h").version == v2
    assert reg.deployment_manifest("icu_mortality_48h")["sites"]["*"]["threshold"] == 0.15

    # rollback to the first release in one step
    with pytest.raises(RoleRequired):
        gov.rollback(v1, actor="cora", why="compliance cannot roll back", identity=console("cora"))
    assert (
        gov.rollback(v1, actor="eli", why="too many alerts", identity=console("eli")).version == v1
    )
    assert reg.active("icu_mortality_48h").version == v1
    assert serving_decision(reg.deployment_manifest("icu_mortality_48h"), site="x").release == v1

    # unknown version
    with pytest.raises(ReleaseNotFound, match="'icu_mortality_48h@9' is not registered"):
        gov.promote("icu_mortality_48h@9", actor="eli", why="?", identity=console("eli"))

    # a tampered registered bundle refuses to move, and nothing changes
    status_before = reg.get(v2).status
    model_file = reg.bundle(v2).path / "model.json"
    data = bytearray(model_file.read_bytes())
    data[-3] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(BundleSignatureInvalid, match="model.json does not match its SHA-256"):
        gov.suspend(v2, actor="dr.kim", why="tampered", identity=console("dr.kim"))
    assert reg.get(v2).status == status_before

    # the ledger holds every step with actor and role, and every refusal
    events = _events(ws)
    changes = [
        (e.actor, p["role"], p["from_status"], p["to_status"])
        for e, p in events
        if e.type == "status_change"
    ]
    assert changes[:5] == [
        ("eli", "engineering", "draft", "validated"),
        ("dr.kim", "clinical", "validated", "clinically_reviewed"),
        ("cora", "compliance", "clinically_reviewed", "approved_limited"),
        ("cora", "compliance", "approved_limited", "approved"),
        ("eli", "engineering", "draft", "validated"),
    ]
    approvals = [(e.actor, p["role"], p["release"]) for e, p in events if e.type == "approval"]
    assert ("max", "engineering", v1) in approvals and ("dr.kim", "clinical", v1) in approvals
    assert len(approvals) == 6
    deployments = [p["action"] for e, p in events if e.type == "deployment"]
    assert deployments == ["promote", "promote", "rollback"]
    thresholds = [(p["old"], p["new"]) for e, p in events if e.type == "threshold_change"]
    assert thresholds == [(0.4, 0.15), (0.15, 0.4)]
    refused = [p["rule"] for e, p in events if e.type == "governance_refused"]
    assert refused == [
        "GateFailed",
        "TransitionNotAllowed",
        "RoleRequired",
        "ApprovalRefused",
        "ApprovalRefused",
        "GateFailed",
        "TransitionNotAllowed",
        "GateFailed",
        "RoleRequired",
        "ReleaseNotFound",
        "BundleSignatureInvalid",
    ]

    ops = operations_metrics(ws)
    assert ops["deployments"] == 3 and ops["rollbacks"] == 1
    assert ops["validation_lead_time_days"]["n"] == 2
    assert ops["refused_governance_actions"] == len(refused)

    shown = gov.show(v1)
    assert shown["status"] == "approved" and shown["active"] is True
    assert set(shown["gates"]) == {"schema_contract", "metrics", "evidence", "approvals"}
    assert all(g["passed"] for g in shown["gates"].values())
    assert (
        shown["lineage"]["snapshot"]["id"]
        == json.loads((reg.bundle(v1).path / "lineage.json").read_text())["snapshot"]["id"]
    )
    gov.close()
    reg.close()
