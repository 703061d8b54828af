"""Escalation at the bedside follows the release's declared policy, one rule for every front end.

A release built with a declared review band around its threshold and a review budget
of 7 per 100: band cases above the budget's risk cutoff are queued (flag
``near_threshold``), band cases below it are flagged ``review_deferred`` and never
reach the queue, a case outside the validated scope is queued first whatever its risk;
while a drift alert is open on the release, cases above the threshold are queued too.
``/v1/predict``, ``/v1/fhir/predict`` and CDS Hooks record the same routing as the
library, and a replay recomputes it from the record.
"""

from __future__ import annotations

import secrets
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from clinical_mlops.application.monitoring import resolve_alert
from clinical_mlops.application.scoring import open_predictor
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.clock import utc_iso
from clinical_mlops.governance.queue import escalated_cases
from clinical_mlops.http.app import create_app
from clinical_mlops.modeling.escalation import input_flags
from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.replay import replay_many
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import EscalationPolicy, NearThreshold
from clinical_mlops.vocabulary import REVIEW_REASONS
from clinical_mlops.workspace import Workspace

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

ICU_SPEC = load_task("icu_mortality_48h")
THRESHOLD = 0.30
POLICY = EscalationPolicy(
    review_on=("out_of_scope", "empty_set", "near_threshold", "drift_alert"),
    near_threshold=NearThreshold(band=(0.20, 0.32)),
    max_reviews_per_100=7,
    beyond_budget="defer",
)
CONSENTED = 120  # the served fixture's patients MRN-0 .. MRN-119
NEAR = REVIEW_REASONS["near_threshold"]
DRIFT = REVIEW_REASONS["drift_alert"]
SCOPE = REVIEW_REASONS["out_of_scope"]


def _req(world: dict[str, Any], i: int, **kw: Any) -> PredictionRequest:
    base = {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": world["rows"][i],
    }
    return PredictionRequest(**(base | kw))


@pytest.fixture(scope="module")
def world(
    served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A copy of the served workspace with a second release under ``POLICY``, served pinned."""
    root = tmp_path_factory.mktemp("escalation") / "ws"
    shutil.copytree(served["ws"].root, root)
    ws = Workspace.open(root)
    with Registry.open(ws) as reg:
        model = reg.get(served["release"]).model_version
    shown = govern_demo_release(ws, model_version=model, escalation=POLICY, threshold=THRESHOLD)
    release = shown["version"]
    predictor = open_predictor(ws, release=release, status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
    baseline = predictor.predict_many(
        [_req({"rows": served["rows"]}, i) for i in range(CONSENTED)], requester="system:probe"
    )
    yield {
        "ws": ws,
        "release": release,
        "predictor": predictor,
        "client": client,
        "auth": auth,
        "rows": served["rows"],
        "probe": baseline,
    }
    predictor.close()


def _policy(world: dict[str, Any]) -> Any:
    return world["predictor"].scorer(world["release"]).policy


def _pick(world: dict[str, Any], what: str) -> int:
    """Return a patient whose probe prediction is ``what``: queued_band | deferred | above_band."""
    pol = _policy(world)
    lo, hi = pol.band
    floor = pol.cutoff["min_probability"]
    for i, r in enumerate(world["probe"]):
        p = r.probability
        if r.status != "scored" or "empty_set" in r.flags or "out_of_scope" in r.flags:
            continue
        if what == "queued_band" and lo <= p <= hi and p >= floor:
            return i
        if what == "deferred" and lo <= p <= hi and p < floor:
            return i
        if what == "above_band" and p > hi and p >= pol.threshold:
            return i
    pytest.fail(f"the test model gives no {what} patient among MRN-0..{CONSENTED - 1}")


def _records_since(world: dict[str, Any], before: int) -> list[Any]:
    led = world["predictor"].ledger
    return [led.read(s) for s in range(before, led.size())]


def test_the_release_signs_its_policy_with_a_band_and_a_budget_cutoff(
    world: dict[str, Any],
) -> None:
    pol = _policy(world)
    assert pol.threshold == THRESHOLD and pol.band == (0.20, 0.32)
    assert pol.review_on == POLICY.review_on
    # the budget bites on the calibration stays: band cases rank by risk, highest first
    assert pol.cutoff is not None and pol.cutoff["condition"] == "near_threshold"
    assert pol.band[0] <= pol.cutoff["min_probability"] <= pol.band[1]


def test_band_cases_above_the_cutoff_are_queued_and_below_it_deferred(
    world: dict[str, Any],
) -> None:
    pol = _policy(world)
    floor = pol.cutoff["min_probability"]
    lo, hi = pol.band
    queued = deferred = 0
    for r in world["probe"]:
        in_band = lo <= r.probability <= hi
        scope = "out_of_scope" in r.flags or "empty_set" in r.flags
        assert ("near_threshold" in r.flags) == in_band
        if scope:
            continue
        if in_band and r.probability >= floor:
            queued += 1
            assert r.escalated and r.escalation == [NEAR], r
            assert "review_deferred" not in r.flags
        elif in_band:
            deferred += 1
            assert not r.escalated and r.escalation == [], r
            assert r.flags[-1] == "review_deferred"
        else:
            assert not r.escalated and "review_deferred" not in r.flags
    assert queued and deferred
    # the queue holds the queued cases and none of the deferred ones
    led = world["predictor"].ledger
    in_queue = {c.prediction_seq for c in escalated_cases(led, now=world["predictor"].clock.now())}
    for r in world["probe"]:
        assert (r.audit_seq in in_queue) == r.escalated
        nxt = led.read(r.audit_seq + 1) if r.audit_seq + 1 < led.size() else None
        escalation_entry = nxt is not None and nxt.entry.type == "escalation"
        assert escalation_entry == r.escalated
        if escalation_entry:
            assert nxt.payload["reason"] == "; ".join(r.escalation)


def test_a_case_outside_the_validated_scope_is_queued_first_even_below_the_cutoff(
    world: dict[str, Any],
) -> None:
    i = _pick(world, "deferred")
    early = ICU_SPEC.prediction_time_hours / 4
    r = world["predictor"].predict(_req(world, i, hours_since_admission=early), requester="t")
    assert r.escalated and r.escalation == [SCOPE, NEAR]
    assert "out_of_scope" in r.flags and "review_deferred" not in r.flags


def test_served_routing_is_the_policy_applied_to_the_served_scores(
    world: dict[str, Any],
) -> None:
    sc = world["predictor"].scorer(world["release"])
    idx = list(range(CONSENTED))
    X = sc.schema.encode([world["rows"][i] for i in idx])
    pred = sc.model.apply_matrix(X, explain=False)
    checked = [sc.schema.check(world["rows"][i]) for i in idx]
    flags = input_flags(
        pred.p_cal,
        pred.sets,
        missing_count=np.array([len(c.missing) for c in checked]),
        n_features=len(sc.model.preprocessor.features),
        max_missing=ICU_SPEC.cohort.max_missing_feature_fraction,
        out_of_range=np.array([c.out_of_profile for c in checked]),
    )
    routing = sc.policy.route(pred.p_cal, flags)
    served = world["probe"]
    assert [r.escalated for r in served] == routing.queued.tolist()
    assert ["review_deferred" in r.flags for r in served] == routing.deferred.tolist()
    for k, r in enumerate(served):
        want = [REVIEW_REASONS[c] for c in routing.reasons(k)] if routing.queued[k] else []
        assert r.escalation == want


def _open_drift_alert(world: dict[str, Any]) -> str:
    predictor = world["predictor"]
    with AlertStore.open(world["ws"], clock=predictor.clock) as store:
        alert, created = store.raise_alert(
            AlertSignal(
                rule="input_psi",
                kind="data",
                severity="warning",
                owner_role="ml_engineer",
                action="escalate",
                at=utc_iso(predictor.clock.now()),
                summary="PSI of lactate above 0.2",
                quantity="psi",
                value=0.31,
                threshold=0.2,
                release=world["release"],
                model_version=predictor.scorer(world["release"]).model_version,
                subgroup="lactate",
            ),
            actor="system:monitor",
        )
    assert alert is not None and created
    return alert.id


def test_while_a_drift_alert_is_open_cases_above_the_threshold_are_queued(
    world: dict[str, Any],
) -> None:
    i = _pick(world, "above_band")
    low = next(k for k, r in enumerate(world["probe"]) if r.probability < THRESHOLD / 2)
    predictor = world["predictor"]
    before = predictor.predict_many([_req(world, i), _req(world, low)], requester="t")
    assert [r.escalated for r in before] == [False, False]
    alert_id = _open_drift_alert(world)
    during = predictor.predict_many([_req(world, i), _req(world, low)], requester="t")
    assert during[0].escalated and during[0].escalation == [DRIFT]
    assert DRIFT.startswith("drift alert open")
    assert "drift_alert" in during[0].flags
    assert not during[1].escalated  # below the threshold: not routed by drift
    record = predictor.ledger.read(during[0].audit_seq)
    assert record.payload["drift_alert"] is True
    resolve_alert(world["ws"], alert_id, actor="user:eng", comment="feed fixed")
    after = predictor.predict(_req(world, i), requester="t")
    assert not after.escalated and "drift_alert" not in after.flags
    assert predictor.ledger.read(after.audit_seq).payload["drift_alert"] is False
    # a replay routes each record as it was routed, with the drift state it records
    replays = replay_many(world["ws"], [during[0].audit_seq, after.audit_seq])
    assert [r.status for r in replays] == ["identical", "identical"]
    assert all("escalation" in r.compared and "flags" in r.compared for r in replays)


def test_replay_recomputes_queued_and_deferred_routing(world: dict[str, Any]) -> None:
    seqs = [world["probe"][_pick(world, w)].audit_seq for w in ("queued_band", "deferred")]
    replays = replay_many(world["ws"], seqs)
    assert [r.status for r in replays] == ["identical", "identical"], [
        r.differences for r in replays
    ]


def _bearer(world: dict[str, Any], *roles: str) -> dict[str, str]:
    token = world["auth"].issue(subject="dr.t", roles=list(roles))
    return {"Authorization": f"Bearer {token}"}


def _inference_since(world: dict[str, Any], before: int) -> tuple[Any, Any | None]:
    views = _records_since(world, before)
    k = next(n for n, v in enumerate(views) if v.entry.type == "inference")
    nxt = views[k + 1] if k + 1 < len(views) else None
    return views[k], nxt if nxt is not None and nxt.entry.type == "escalation" else None


@pytest.mark.parametrize("what", ["queued_band", "deferred"])
def test_every_front_end_records_the_same_routing(world: dict[str, Any], what: str) -> None:
    from serving.fhir_bundles import ehr_bundle, ehr_prefetch

    i = _pick(world, what)
    want = world["probe"][i]
    led = world["predictor"].ledger
    client = world["client"]
    calls = {
        "/v1/predict": lambda: client.post(
            "/v1/predict",
            headers=_bearer(world, "system"),
            json={
                "subject_id": f"MRN-{i}",
                "purpose": "direct_care",
                "setting": "icu",
                "features": world["rows"][i],
            },
        ),
        "/v1/fhir/predict": lambda: client.post(
            "/v1/fhir/predict",
            headers=_bearer(world, "system"),
            json={
                "purpose": "direct_care",
                "setting": "icu",
                "bundle": ehr_bundle(ICU_SPEC, world["rows"][i], f"MRN-{i}"),
            },
        ),
        "cds-hooks": lambda: client.post(
            "/cds-services/icu-mortality-48h",
            headers=_bearer(world, "clinician"),
            json={
                "hook": "patient-view",
                "hookInstance": f"h-route-{what}",
                "context": {"patientId": f"MRN-{i}", "userId": "Practitioner/1"},
                "prefetch": ehr_prefetch(ICU_SPEC, world["rows"][i], f"MRN-{i}"),
            },
        ),
    }
    for name, call in calls.items():
        before = led.size()
        answer = call()
        assert answer.status_code == 200, (name, answer.text)
        inference, escalation = _inference_since(world, before)
        p = inference.payload
        assert p["flags"] == want.flags, name
        assert p["escalation"] == want.escalation, name
        assert (escalation is not None) == want.escalated, name
        if name == "/v1/predict":
            body = answer.json()
            assert body["escalated"] == want.escalated and body["flags"] == want.flags


def test_a_bundle_without_a_policy_is_not_servable(world: dict[str, Any]) -> None:
    """A bundle whose deployment.json names no policy is not servable: nothing is guessed."""
    import json

    from clinical_mlops.errors import ReleaseNotServable
    from clinical_mlops.registry.bundle import load_bundle
    from clinical_mlops.serving.predictor import ReleaseScorer

    with Registry.open(world["ws"]) as reg:
        path = reg.get(world["release"]).path
    bundle = load_bundle(world["ws"], path)
    copy = world["ws"].root / "unsigned-copy"
    shutil.copytree(bundle.path, copy)
    deployment = json.loads((copy / "deployment.json").read_text())
    deployment.pop("escalation")
    (copy / "deployment.json").write_text(json.dumps(deployment))
    # the signed bundle's own files, but deployment.json without its policy (no signature
    # check here: the Predictor verifies before this point; this is the scorer's own rule)
    unsigned = replace(bundle, path=copy)
    with pytest.raises(ReleaseNotServable, match="declares no escalation policy"):
        ReleaseScorer(unsigned, world["release"])
