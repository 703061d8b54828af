"""Evidence bound to its release: a bundle's report, model card and release notes describe
its own operating threshold and escalation policy; signing and gate 1 refuse any other."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.policy import gate_schema_contract
from clinical_mlops.modeling.trained import TrainedModel, model_folder
from clinical_mlops.registry import bundle as bundle_module
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.changes import classify_change
from clinical_mlops.tasks.spec import load_task

EVIDENCE = ("report.json", "report.html", "model_card.md", "model_card.html", "model_card.json")


def _test_probabilities(ws, version: str) -> np.ndarray:
    """The model's calibrated risks of the locked test stays, scored here (not by evaluation)."""
    folder = model_folder(ws, version)
    lineage = json.loads((folder / "lineage.json").read_text(encoding="utf-8"))
    snapshot = open_snapshot(ws, lineage["snapshot"]["id"])
    return np.asarray(TrainedModel.load(folder).probability(locked_test_stays(snapshot)))


def _stated_thresholds(card: dict) -> set[str]:
    return set(re.findall(r"threshold (0?\.\d+)", json.dumps(card)))


def test_a_threshold_change_gives_new_evidence_matching_its_threshold(
    fresh_workspace, trained, clock
):
    ws = fresh_workspace("ev")
    b1 = build_bundle(ws, model_version=trained[1], author="eli", clock=clock)
    b2 = build_bundle(ws, model_version=trained[1], author="eli", threshold=0.3, clock=clock)
    assert (b1.threshold, b2.threshold) == (0.4, 0.3)
    p = _test_probabilities(ws, trained[1])

    # @1 at the spec's threshold and policy: the training evidence, as written.
    folder = model_folder(ws, trained[1])
    for name in EVIDENCE:
        assert (b1.path / name).read_bytes() == (folder / name).read_bytes(), name
    r1, r2 = b1.report(), b2.report()
    assert r1.workload.threshold == r1.test.threshold == 0.4
    assert r1.workload.alerts_per_100 == pytest.approx(100 * np.mean(p >= 0.4))

    # @2: computed at 0.30.
    assert r2.workload.threshold == r2.test.threshold == 0.3
    assert r2.decision_curve.operating_threshold == 0.3
    assert r2.workload.alerts_per_100 == pytest.approx(100 * np.mean(p >= 0.3))
    assert r2.test.alerts == int(np.sum(p >= 0.3))
    assert r2.workload.alerts_per_100 > r1.workload.alerts_per_100
    assert r2.test.sensitivity != r1.test.sensitivity
    for name in EVIDENCE:
        assert (b2.path / name).read_bytes() != (b1.path / name).read_bytes(), name
    assert "0.3 (operating)" in (b2.path / "report.html").read_text(encoding="utf-8")

    # Its card says 0.30, with @2's figures; @1's says 0.40.
    card1, card2 = b1.read_json("model_card.json"), b2.read_json("model_card.json")
    assert _stated_thresholds(card2) == {"0.3"}
    assert _stated_thresholds(card1) == {"0.4"}
    assert f"{r2.workload.alerts_per_100:.1f} alerts per 100" in json.dumps(card2)
    assert "0.3" in (b2.path / "model_card.md").read_text(encoding="utf-8")

    # The report's policy is the release's, resolved at 0.30.
    assert b2.read_json("report.json")["escalation"] == b2.deployment["escalation"]
    assert b2.deployment["escalation"]["threshold"] == 0.3
    assert isinstance(r2.workload.reviews_per_100, float)
    assert r2.workload.reviews_per_100_ci[0] <= r2.workload.reviews_per_100

    # The release notes state the workload effect, before -> after.
    notes = " ".join(classify_change(b1, b2).notes)
    assert (
        f"alerts per 100 patients {r1.workload.alerts_per_100:.1f} -> "
        f"{r2.workload.alerts_per_100:.1f}" in notes
    )
    assert (
        f"clinician reviews per 100 patients {r1.workload.reviews_per_100:.1f} -> "
        f"{r2.workload.reviews_per_100:.1f}" in notes
    )


def test_a_policy_change_gives_new_evidence_and_release_notes(fresh_workspace, trained, clock):
    from clinical_mlops.tasks.spec import EscalationPolicy

    ws = fresh_workspace("pol")
    b1 = build_bundle(ws, model_version=trained[1], author="eli", clock=clock)
    # Every stay with an input not measured is queued, whatever the budget.
    wider = EscalationPolicy.model_validate(
        {"review_on": ["missing_inputs"], "beyond_budget": "queue"}
    )
    b2 = build_bundle(ws, model_version=trained[1], author="eli", escalation=wider, clock=clock)
    r1, r2 = b1.report(), b2.report()
    assert r2.workload.threshold == 0.4
    assert r2.to_json()["escalation"] == b2.deployment["escalation"]
    assert r2.escalation is not None and r2.escalation.review_on == ["missing_inputs"]
    assert r2.workload.reviews_by_reason == {"missing_inputs": r2.workload.reviews_per_100}
    assert r2.workload.reviews_per_100 > r1.workload.reviews_per_100
    report = classify_change(b1, b2)
    assert report.change_class == "clinical-impacting"
    (note,) = [c.note for c in report.changes if c.what == "escalation policy"]
    assert b2.deployment["escalation"]["statement"] in note
    assert "clinician reviews per 100 patients" in note


def test_signing_refuses_evidence_for_another_threshold(
    fresh_workspace, trained, clock, monkeypatch
):
    ws = fresh_workspace("sign")
    # As if the training evidence (computed at 0.40) were taken for a release at 0.30.
    monkeypatch.setattr(bundle_module, "_needs_evidence", lambda *_: False, raising=False)
    with pytest.raises(ValueInvalid) as refused:
        build_bundle(ws, model_version=trained[1], author="eli", threshold=0.3, clock=clock)
    message = str(refused.value)
    assert "report.json: test.threshold is 0.4, the release's operating threshold is 0.3" in message
    assert "model_card.json: states the operating threshold 0.4" in message
    assert "report.json: escalation.threshold is 0.4, the release's is 0.3" in message
    # Same threshold, another policy: the report's policy is named.
    from clinical_mlops.tasks.spec import EscalationPolicy

    other = EscalationPolicy.model_validate({"review_on": ["missing_inputs"]})
    with pytest.raises(ValueInvalid, match=r"report\.json: escalation\.review_on is \["):
        build_bundle(ws, model_version=trained[1], author="eli", escalation=other, clock=clock)
    assert not [p for p in ws.bundles_dir.iterdir() if not p.name.startswith(".")]


def test_gate_1_fails_on_evidence_for_another_threshold(
    fresh_workspace, trained, clock, monkeypatch
):
    ws = fresh_workspace("gate")
    with monkeypatch.context() as m:  # a bundle built elsewhere, without the signing check
        m.setattr(bundle_module, "_needs_evidence", lambda *_: False, raising=False)
        m.setattr(bundle_module, "evidence_problems", lambda *_: [], raising=False)
        stale = build_bundle(ws, model_version=trained[1], author="eli", threshold=0.3, clock=clock)
    result = gate_schema_contract(stale)
    assert not result.passed
    assert any(
        "report.json: test.threshold is 0.4, the release's operating threshold is 0.3" in f
        for f in result.failures
    )
    assert any("model_card.json" in f for f in result.failures)
    fresh = build_bundle(ws, model_version=trained[1], author="eli", threshold=0.3, clock=clock)
    assert gate_schema_contract(fresh).passed


def test_gate_2_checks_reviews_per_100_against_the_acceptance_criterion(
    fresh_workspace, trained, clock, monkeypatch
):
    from clinical_mlops.governance.policy import gate_metrics
    from clinical_mlops.registry.bundle import Bundle
    from clinical_mlops.tasks.spec import EscalationPolicy

    ws = fresh_workspace("g2")
    wider = EscalationPolicy.model_validate(
        {"review_on": ["missing_inputs"], "beyond_budget": "queue"}
    )
    b = build_bundle(ws, model_version=trained[1], author="eli", escalation=wider, clock=clock)
    w = b.report().workload
    reviews = float(w.reviews_per_100)
    assert reviews > 1
    spec = b.spec()

    def with_budget(limit: float):
        acceptance = spec.acceptance.model_copy(update={"max_reviews_per_100": limit})
        return spec.model_copy(update={"acceptance": acceptance})

    monkeypatch.setattr(Bundle, "spec", lambda self: with_budget(reviews / 2))
    strict = gate_metrics(b)
    assert (
        f"clinician reviews per 100 test stays {reviews:.2f} > maximum {reviews / 2:g} "
        "(acceptance.max_reviews_per_100)" in strict.failures
    )
    assert strict.evidence["reviews_per_100"] == reviews
    assert strict.evidence["reviews_per_100_ci"] == w.reviews_per_100_ci
    assert strict.evidence["alerts_per_100"] == w.alerts_per_100
    assert strict.evidence["alerts_per_100_ci"] == w.alerts_per_100_ci
    monkeypatch.setattr(Bundle, "spec", lambda self: with_budget(reviews + 1))
    assert not [f for f in gate_metrics(b).failures if "reviews" in f]


def test_a_policy_file_with_a_bad_field_is_refused_naming_it(fresh_workspace, trained, tmp_path):
    from clinical_mlops.application.releases import build_release_bundle
    from clinical_mlops.errors import TaskSpecInvalid

    ws = fresh_workspace("bad")
    cases = {
        "escalation:\n  review_on: [out_of_scope, coin_flip]\n": "escalation.review_on.1",
        "near_threshold:\n  band: [0.2, 1.4]\n": "escalation.near_threshold.band",
        "max_reviews_per_100: 0\n": "escalation.max_reviews_per_100",
        "- near_threshold\n": "escalation",
    }
    for i, (text, field) in enumerate(cases.items()):
        path = tmp_path / f"policy{i}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(TaskSpecInvalid) as refused:
            build_release_bundle(ws, model_version=trained[1], author="eli", escalation=path)
        assert any(where == field for where, _ in refused.value.problems), refused.value
        assert str(path) in str(refused.value)
    assert not [p for p in ws.bundles_dir.iterdir() if not p.name.startswith(".")]


def test_gate_2_holds_a_release_to_its_own_budget_when_acceptance_declares_none(
    fresh_workspace, trained, clock
):
    from clinical_mlops.governance.policy import gate_metrics
    from clinical_mlops.tasks.spec import EscalationPolicy

    ws = fresh_workspace("g2-own")
    assert load_task("icu_mortality_48h").acceptance.max_reviews_per_100 is None
    tight = EscalationPolicy.model_validate(
        {"review_on": ["missing_inputs"], "max_reviews_per_100": 1, "beyond_budget": "queue"}
    )
    b = build_bundle(ws, model_version=trained[1], author="eli", escalation=tight, clock=clock)
    reviews = float(b.report().workload.reviews_per_100)
    assert reviews > 1  # queue keeps every case, so the measured load exceeds the budget
    assert (
        f"clinician reviews per 100 test stays {reviews:.2f} > maximum 1 "
        "(the release's escalation.max_reviews_per_100)" in gate_metrics(b).failures
    )
    roomy = tight.model_copy(update={"max_reviews_per_100": 100.0})
    b2 = build_bundle(ws, model_version=trained[1], author="eli", escalation=roomy, clock=clock)
    assert not [f for f in gate_metrics(b2).failures if "reviews" in f]
