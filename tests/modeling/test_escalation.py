"""Escalation policies resolved on held-out stays: band, budget, guarantee, bad declarations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinical_mlops.errors import TaskSpecInvalid, ValueInvalid
from clinical_mlops.modeling.escalation import (
    EscalationReference,
    ResolvedEscalation,
    input_flags,
    resolve,
)
from clinical_mlops.tasks.spec import EscalationPolicy, load_task, task_from_mapping


def _reference(rng: np.random.Generator, n: int, *, missing_share: float = 0.0):
    p = rng.beta(0.8, 6.0, size=n)
    # Sets as a Mondrian conformal predictor would give them for these scores.
    sets = np.column_stack([p <= 0.3, p >= 0.05])
    missing = (rng.random(n) < missing_share).astype(int) * 9
    return EscalationReference.build(p, sets, missing_count=missing, n_features=10, max_missing=0.5)


def test_the_sized_band_holds_at_most_its_share_of_calibration_stays():
    ref = _reference(np.random.default_rng(0), 2000)
    policy = EscalationPolicy(review_on=("near_threshold",))
    r = resolve(policy, threshold=0.4, reference=ref)
    lo, hi = r.band
    assert lo < 0.4 < hi
    inside = int(((ref.probabilities >= lo) & (ref.probabilities <= hi)).sum())
    assert inside == r.calibration["band_stays"]
    assert (inside + 1) / (2000 + 1) <= 0.04
    # the next calibration stay out would break the share: the band is as wide as it may be
    d = np.sort(np.abs(ref.probabilities - 0.4))
    assert (inside + 2) / 2001 > 0.04 or d[inside] == d[inside - 1]


def test_the_rank_bound_holds_for_new_exchangeable_stays():
    """Over many calibration draws, new stays fall in the band at most b per 100 on average."""
    rng = np.random.default_rng(1)
    shares = []
    for _ in range(200):
        ref = _reference(rng, 400)
        r = resolve(EscalationPolicy(review_on=("near_threshold",)), threshold=0.3, reference=ref)
        new = rng.beta(0.8, 6.0, size=400)
        lo, hi = r.band or (1.0, 0.0)
        shares.append(float(((new >= lo) & (new <= hi)).mean()))
    assert np.mean(shares) <= 0.04
    assert np.mean(shares) > 0.02  # and the band is not needlessly narrow


def test_the_budget_defers_the_lowest_ranked_cases_beyond_it():
    ref = _reference(np.random.default_rng(2), 3000, missing_share=0.03)
    policy = EscalationPolicy(review_on=("out_of_scope", "ambiguous_set"), max_reviews_per_100=5.0)
    r = resolve(policy, threshold=0.4, reference=ref)
    routing = r.route(ref.probabilities, ref.all_flags())
    assert routing.eligible.mean() > 0.05  # the conditions alone exceed the budget
    assert routing.queued.sum() <= np.floor(0.05 * 3001)  # ties at the cutoff aside
    assert np.array_equal(routing.deferred, routing.eligible & ~routing.queued)
    # every out-of-scope case (first in precedence) is queued before any ambiguous one
    oos = ref.flags["out_of_scope"]
    assert routing.queued[oos].all()
    amb_queued = ref.probabilities[routing.queued & ~oos]
    amb_deferred = ref.probabilities[routing.deferred]
    assert amb_queued.min() >= amb_deferred.max()  # the higher risks are reviewed
    assert r.calibration["reviews_per_100"] <= 5.0


def test_queue_keeps_every_eligible_case_and_reports_the_load():
    ref = _reference(np.random.default_rng(3), 1000)
    r = resolve(
        EscalationPolicy(review_on=("ambiguous_set",), beyond_budget="queue"),
        threshold=0.4,
        reference=ref,
    )
    assert r.cutoff is None
    routing = r.route(ref.probabilities, ref.all_flags())
    assert np.array_equal(routing.queued, routing.eligible)
    assert r.calibration["reviews_per_100"] == pytest.approx(100 * routing.eligible.mean())


def test_drift_alert_routes_flagged_cases_and_is_never_deferred():
    ref = _reference(np.random.default_rng(4), 1000)
    r = resolve(
        EscalationPolicy(review_on=("near_threshold", "drift_alert"), max_reviews_per_100=1),
        threshold=0.4,
        reference=ref,
    )
    p = np.array([0.05, 0.6, 0.9])
    flags = input_flags(
        p,
        np.array([[1, 0], [0, 1], [0, 1]], bool),
        missing_count=np.zeros(3),
        n_features=5,
        max_missing=0.5,
    )
    calm = r.route(p, flags)
    alert = r.route(p, flags, drift_alert=True)
    assert not calm.queued[[0, 2]].any()
    assert alert.queued.tolist() == [False, True, True]
    assert alert.reasons(2) == ["drift_alert"]


def test_resolution_is_deterministic_and_round_trips_through_json():
    ref = _reference(np.random.default_rng(5), 1500)
    again = EscalationReference.from_json(json.loads(json.dumps(ref.to_json())))
    a = resolve(EscalationPolicy(), threshold=0.35, reference=ref)
    b = resolve(EscalationPolicy(), threshold=0.35, reference=again)
    assert a.to_json() == b.to_json()
    assert ResolvedEscalation.from_json(json.loads(json.dumps(a.to_json()))) == a
    assert "rank bound" in a.statement()


def test_input_flags_follow_the_prediction_rules():
    p = np.array([0.1, 0.5, 0.9, 0.2])
    sets = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=bool)
    f = input_flags(p, sets, missing_count=np.array([0, 1, 0, 6]), n_features=10, max_missing=0.5)
    assert f["ambiguous_set"].tolist() == [False, True, False, False]
    assert f["empty_set"].tolist() == [False, False, True, False]
    assert f["low_confidence"].tolist() == [False, True, True, False]
    assert f["missing_inputs"].tolist() == [False, True, False, True]
    assert f["out_of_scope"].tolist() == [False, False, False, True]


def test_a_declared_band_must_hold_the_threshold():
    ref = _reference(np.random.default_rng(6), 500)
    policy = EscalationPolicy(near_threshold={"band": (0.1, 0.2)})
    with pytest.raises(ValueInvalid, match=r"escalation\.near_threshold\.band"):
        resolve(policy, threshold=0.4, reference=ref)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"review_on": ["out_of_scope", "gut_feeling"]}, "escalation.review_on.1"),
        ({"near_threshold": {"band": [0.2, 1.3]}}, "escalation.near_threshold.band"),
        ({"near_threshold": {"band": [0.5, 0.2]}}, "escalation.near_threshold.band"),
        ({"max_reviews_per_100": 0}, "max_reviews_per_100"),
        ({"max_reviews_per_100": -3}, "max_reviews_per_100"),
        ({"near_threshold": {"reviews_per_100": 9}}, "escalation.near_threshold.reviews_per_100"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(section, field):
    spec = load_task("icu_mortality_48h").model_dump(mode="json")
    spec["escalation"] = section
    with pytest.raises(TaskSpecInvalid, match=field.replace(".", r"\.")):
        task_from_mapping(spec, source="spec.yaml")
