"""The Predictor: guards, flags, fallback, shadow mode, one ledger entry per inference, replay."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from clinical_mlops.application.privacy import erase_subject
from clinical_mlops.application.services import Services
from clinical_mlops.errors import BundleSignatureInvalid, DuplicateRequest, InputInvalid
from clinical_mlops.governance.board import Governance
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.replay import replay_inference, replay_many
from identities import console

R_A1 = (
    "model_version",
    "dataset_sha256",
    "inputs",
    "raw_score",
    "probability",
    "conformal_set",
    "explanation",
    "requester",
    "purpose",
)


def req(row: dict[str, Any], i: int = 0, **kw: Any) -> PredictionRequest:
    base = {"subject_id": f"MRN-{i}", "purpose": "direct_care", "setting": "icu", "features": row}
    return PredictionRequest(**(base | kw))


@pytest.fixture
def predictor(served: dict[str, Any]) -> Predictor:
    p = Predictor.open(served["ws"], site="demo-icu-north")
    yield p
    p.close()


def test_array_path_is_bit_identical_to_apply(predictor: Predictor, served: dict[str, Any]) -> None:
    import pandas as pd

    sc = predictor.scorer(predictor.default)
    frame = pd.DataFrame(served["rows"]).astype({"age": float})
    X = sc.schema.encode(served["rows"])
    assert np.array_equal(X, sc.model.preprocessor.transform(frame))
    fast = sc.model.apply_matrix(X)
    slow = sc.model.apply(frame)
    if sc.model.scorer.kind == "logistic_regression":
        # The linear margin is summed column by column (batch-invariant), not by BLAS.
        assert np.allclose(fast.margin, slow.margin, rtol=0, atol=1e-12)
    else:
        assert np.array_equal(fast.margin, slow.margin)
        assert np.array_equal(fast.p_cal, slow.p_cal)
    assert np.allclose(fast.contributions, slow.contributions.to_numpy(), rtol=0, atol=1e-12)
    # Explained (one DMatrix for margin and TreeSHAP) and unexplained (inplace) margins agree.
    bare = sc.model.apply_matrix(X, explain=False)
    assert np.array_equal(bare.margin, fast.margin) and np.array_equal(bare.p_cal, fast.p_cal)
    # One row alone gives exactly what it got inside the batch: replay depends on it.
    for i in (0, 7, len(X) - 1):
        alone = sc.model.apply_matrix(X[i : i + 1])
        assert alone.margin[0] == fast.margin[i] and alone.p_cal[0] == fast.p_cal[i]
        assert np.array_equal(alone.contributions[0], fast.contributions[i])


def test_tree_models_are_explained_from_tables_batch_invariant(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    """A boosted-tree release explains from compiled tables: XGBoost's numbers to float32
    rounding, each row bit-identical alone or in a batch, and pred_contribs on request."""
    import dataclasses

    import xgboost as xgb

    from clinical_mlops.modeling.model import TreeModel

    sc = predictor.scorer(predictor.default)
    X = sc.schema.encode(served["rows"])
    y = (X[:, 0] + np.random.default_rng(3).normal(0, 20, len(X)) > np.median(X[:, 0])).astype(int)
    booster = xgb.train(
        {"max_depth": 4, "eta": 0.3, "objective": "binary:logistic", "nthread": 1},
        xgb.DMatrix(X, label=y, feature_names=list(sc.model.preprocessor.columns)),
        num_boost_round=40,
    )
    tree = TreeModel(kind="xgboost", booster=booster, columns=list(sc.model.preprocessor.columns))
    model = dataclasses.replace(sc.model, scorer=tree)
    fast = model.apply_matrix(X)
    assert fast.explainer == "treeshap-tables"
    ref = model.apply_matrix(X, method="xgboost-pred-contribs")
    assert np.array_equal(ref.margin, fast.margin)
    assert np.allclose(fast.contributions, ref.contributions, rtol=0, atol=2e-5)
    assert np.allclose(fast.contributions.sum(axis=1), fast.margin, rtol=0, atol=2e-5)
    assert len(X) >= 64  # the batch takes XGBoost's margins, a lone row the tables' copy
    for i in (0, 5, len(X) - 1):
        alone = model.apply_matrix(X[i : i + 1])
        assert np.array_equal(alone.contributions[0], fast.contributions[i])
        assert alone.margin[0] == fast.margin[i] and alone.p_cal[0] == fast.p_cal[i]
        assert model.apply_matrix(X[i : i + 1], explain=False).margin[0] == fast.margin[i]


def test_a_record_from_before_the_method_was_recorded_replays_with_pred_contribs(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    """Older records carry no ``explanation.method``: replay recomputes them with XGBoost."""
    res = predictor.predict(req(served["rows"][11], 11), requester="t")
    sc = predictor.scorer(predictor.default)
    with Ledger.open(served["ws"]) as led:
        view = led.read(res.audit_seq)
        payload = dict(view.payload)
        assert payload["explanation"]["method"] == sc.model.scorer.explainer
        checked = sc.schema.check(payload["inputs"])
        legacy = "linear" if sc.model.scorer.explainer == "linear" else "xgboost-pred-contribs"
        core = sc.score([checked], [None], explain=True, method=legacy)[0]
        payload["explanation"] = {k: v for k, v in core["explanation"].items() if k != "method"}
        payload["explanation_shown"] = core["top"]
        payload["request_id"] += "-legacy"  # a request id is served once
        old = led.append(type="inference", actor="t", subject=view.entry.subject, payload=payload)
    replayed = replay_inference(served["ws"], old.seq)
    assert replayed.identical, replayed.differences


def test_one_inference_entry_with_every_r_a1_field(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    before = predictor.ledger.size()
    res = predictor.predict(req(served["rows"][0]), requester="user:dr.a")
    assert res.status == "scored" and 0.0 <= res.probability <= 1.0
    assert res.conformal_set in (["no"], ["yes"], ["no", "yes"], [])
    assert len(res.contributions) == 3 and all(c["phrase"] for c in res.contributions)
    view = predictor.ledger.read(res.audit_seq)
    assert view.entry.type == "inference" and view.entry.actor == "user:dr.a"
    assert view.entry.subject.startswith("psn_")
    assert all(k in view.payload for k in R_A1)
    assert "MRN-0" not in str(view.payload)
    added = predictor.ledger.size() - before
    assert added == 1 + (1 if res.escalated else 0)
    if res.escalated:
        assert predictor.ledger.read(res.audit_seq + 1).entry.type == "escalation"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"lactate": "4.1"}, "features.lactate", "expected a number"),
        ({"lactate": float("nan")}, "features.lactate", "NaN"),
        ({"heart_rate": float("inf")}, "features.heart_rate", "NaN and infinity"),
        ({"map": 900.0}, "features.map", "valid range"),
        ({"sex": "X"}, "features.sex", "not one of"),
        ({"potassium": 4.0}, "features.potassium", "undeclared"),
        ({"creatinine": {"value": 1.0, "unit": "mm[Hg]"}}, "features.creatinine", "not accepted"),
        ({"gcs": {"value": 9.0, "unit": "%"}}, "features.gcs", "annotation"),
        ({"ventilation": 2}, "features.ventilation", "flag"),
    ],
)
def test_invalid_inputs_refused_by_field_and_nothing_written(
    predictor: Predictor, served: dict[str, Any], change: dict, field: str, words: str
) -> None:
    before = predictor.ledger.size()
    with pytest.raises(InputInvalid) as info:
        predictor.predict(req(served["rows"][1] | change), requester="t")
    assert [p for p, m in info.value.problems if p == field and words in m]
    assert predictor.ledger.size() == before


def test_unit_conversion_and_unknown_purpose(predictor: Predictor, served: dict[str, Any]) -> None:
    row = served["rows"][2] | {"temperature": {"value": 98.6, "unit": "[degF]"}}
    res = predictor.predict(req(row, 2), requester="t")
    assert predictor.ledger.read(res.audit_seq).payload["inputs"]["temperature"] == pytest.approx(
        37.0
    )
    with pytest.raises(InputInvalid, match="unknown purpose"):
        predictor.predict(req(row, 2, purpose="marketing"), requester="t")


def test_any_ucum_unit_that_converts_is_accepted(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    # kPa for a pressure, mmol/L creatinine through its declared molar mass, K/uL platelets.
    row = served["rows"][3] | {
        "map": {"value": 9.0, "unit": "kPa"},
        "creatinine": {"value": 0.1, "unit": "mmol/L"},
        "platelets": {"value": 150.0, "unit": "K/uL"},
    }
    res = predictor.predict(req(row, 3), requester="t")
    inputs = predictor.ledger.read(res.audit_seq).payload["inputs"]
    assert inputs["map"] == pytest.approx(9.0 * 7.500617, rel=1e-6)
    assert inputs["creatinine"] == pytest.approx(0.1 * 113.12 / 10, rel=1e-9)
    assert inputs["platelets"] == pytest.approx(150.0)


def test_guards_refuse_with_reason_and_a_ledger_event(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    row = served["rows"][3]
    child = predictor.predict(req(row | {"age": 12.0}, 3), requester="t")
    assert child.status == "refused" and child.refusal["code"] == "outside_intended_use"
    assert "under 18" in child.refusal["message"] and child.http_status == 422
    assert predictor.ledger.read(child.audit_seq).entry.type == "inference_refused"
    ward = predictor.predict(req(row, 3, setting="ward"), requester="t")
    assert ward.refusal["code"] == "outside_intended_use" and "'ward'" in ward.refusal["message"]
    no_consent = predictor.predict(req(row, subject_id="MRN-NOCONSENT"), requester="t")
    assert no_consent.refusal["code"] == "consent_not_granted" and no_consent.http_status == 403
    assert predictor.ledger.read(no_consent.audit_seq).entry.type == "consent_refused"
    unknown = predictor.predict(req(row, subject_id="MRN-NEVER-SEEN"), requester="t")
    assert unknown.refusal["code"] == "unknown_subject"
    assert predictor.ledger.read(unknown.audit_seq).entry.subject is None


def test_duplicate_request_ids(predictor: Predictor, served: dict[str, Any]) -> None:
    row = served["rows"][4]
    with pytest.raises(InputInvalid, match="appears twice"):
        predictor.predict_many(
            [req(row, 4, request_id="r1"), req(row, 5, request_id="r1")], requester="t"
        )
    predictor.predict(req(row, 4, request_id="dup-1"), requester="t")
    with pytest.raises(DuplicateRequest, match="already served"):
        predictor.predict(req(row, 4, request_id="dup-1"), requester="t")


def test_shadow_of_the_live_release_is_refused_it_is_no_candidate(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    from clinical_mlops.errors import TransitionNotAllowed

    with Registry.open(served["ws"]) as reg, Governance(reg) as gov:
        with pytest.raises(TransitionNotAllowed, match="compares a candidate"):
            gov.set_rollout(
                served["release"],
                site="shadow-icu",
                mode="shadow",
                actor="demo.dr.lena.ortiz",
                identity=console("demo.dr.lena.ortiz"),
                why="test",
            )
        assert "shadow-icu" not in reg.deployment_manifest("icu_mortality_48h")["sites"]
    predictor.refresh()
    res = predictor.predict(req(served["rows"][5], 5, site="shadow-icu"), requester="t")
    assert res.status == "scored" and res.mode == "full"


def test_suspended_model_gives_the_baseline_fallback(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    v = served["release"]
    with Registry.open(served["ws"]) as reg, Governance(reg) as gov:
        gov.suspend(
            v,
            actor="demo.dr.lena.ortiz",
            why="test suspension",
            identity=console("demo.dr.lena.ortiz"),
        )
    try:
        predictor.refresh()
        res = predictor.predict(req(served["rows"][6], 6), requester="t")
        assert res.status == "fallback" and res.flags == ["suspended"]
        assert res.fallback["name"] == "SOFA-like score" and 0 <= res.fallback["score"] <= 24
        assert "not a probability" in res.fallback["note"] and res.probability is None
        assert predictor.ledger.read(res.audit_seq).entry.type == "fallback_served"
    finally:
        with Registry.open(served["ws"]) as reg, Governance(reg) as gov:
            gov.resume(
                v, actor="demo.sam.okafor", why="test over", identity=console("demo.sam.okafor")
            )
        predictor.refresh()
    assert predictor.predict(req(served["rows"][6], 6), requester="t").status == "scored"


def test_replay_of_100_random_inference_records_is_identical(
    predictor: Predictor, served: dict[str, Any]
) -> None:
    rng = random.Random(17)
    rows = served["rows"]
    reqs = [req(rows[rng.randrange(len(rows))], i) for i in range(100)]
    results = predictor.predict_many(reqs[:60], requester="t") + [
        predictor.predict(r, requester="t", explain=bool(i % 2)) for i, r in enumerate(reqs[60:])
    ]
    seqs = [r.audit_seq for r in results]
    assert len(set(seqs)) == 100
    replays = replay_many(served["ws"], rng.sample(seqs, 100))
    assert [r.status for r in replays] == ["identical"] * 100, [
        r.differences for r in replays if r.differences
    ][:1]
    assert all("probability" in r.compared and "explanation" in r.compared for r in replays)


def test_replay_after_erasure_says_why(predictor: Predictor, served: dict[str, Any]) -> None:
    with Ledger.open(served["ws"]) as led:
        psn = led.vault.pseudonym_for("MRN-ERASE")
        from datetime import UTC, datetime

        from clinical_mlops.privacy.consent import record_consent

        record_consent(
            led.vault,
            pseudonym=psn,
            purposes=["direct_care"],
            valid_from=datetime(2020, 1, 1, tzinfo=UTC),
            valid_until=None,
            recorded_by="t",
        )
    res = predictor.predict(req(served["rows"][7], subject_id="MRN-ERASE"), requester="t")
    assert replay_inference(served["ws"], res.audit_seq).identical
    with Ledger.open(served["ws"]) as led:
        erase_subject(
            Services.using(ledger=led),
            identifier="MRN-ERASE",
            actor="dpo",
            reason="art. 17 request",
        )
    after = replay_inference(served["ws"], res.audit_seq)
    assert after.status == "erased" and "erased" in after.reason and not after.identical


def test_tampered_bundle_refuses_to_start(served: dict[str, Any], tmp_path) -> None:
    with Registry.open(served["ws"]) as reg:
        path = reg.get(served["release"]).path
    from pathlib import Path

    target = Path(path) / "calibrator.json"
    original = target.read_bytes()
    try:
        target.write_bytes(original.replace(b'"n":', b'"n": ', 1))
        with pytest.raises(BundleSignatureInvalid, match="calibrator.json"):
            Predictor.open(served["ws"])
    finally:
        target.write_bytes(original)


def test_audit_replay_command(
    predictor: Predictor,
    served: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`clinical-mlops audit replay SEQ --json` recomputes a served prediction identically."""
    import json
    import sys

    from clinical_mlops.cli import app
    from clinical_mlops.cli._common import run_guarded

    res = predictor.predict(req(served["rows"][11], 11), requester="t")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args, "-w", str(served["ws"].root)])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("audit", "replay", str(res.audit_seq), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["status"] == "identical" and "probability" in doc["compared"]
    # a record that is not an inference is refused by name, exit code 2
    code, _, err = run("audit", "replay", "0")
    assert code == 2 and "inference" in err


def test_the_collector_pause_restores_what_it_found() -> None:
    """A batch pauses the cyclic collector; overlapping batches share the pause, and the
    collector resumes with the last of them only if it was running before."""
    import gc

    from clinical_mlops.serving.predictor import collector_paused

    was = gc.isenabled()
    try:
        gc.enable()
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():  # a second batch at the same time
                assert not gc.isenabled()
            assert not gc.isenabled()  # the first is still running
        assert gc.isenabled()
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before, so it stays off
        gc.enable()
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("a failing batch")
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
