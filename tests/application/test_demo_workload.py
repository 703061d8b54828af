"""The demo's bedside workload: reviews per 100 beside alerts per 100, under the default policy.

The default ICU release is built and served as ``make demo`` does (the test suite's
model, at its usual scale); every locked test stay is scored through the Predictor.
The stays queued for review stay within the task's budget of 5 per 100, the served
routing is the release's policy applied to the same stays, and the demo prints both
figures with the policy and the conformal sets' coverage guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from clinical_mlops.application.walkthrough import PILOT_SITE, govern_demo_release, score_test_set
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.bundle import load_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

ICU = load_task("icu_mortality_48h")


def test_the_demo_queues_at_most_the_budget_and_routes_by_the_release_policy(
    fresh_workspace: Callable[[str], Workspace],
    trained: tuple,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clinical_mlops.cli.demo import render_serving
    from clinical_mlops.modeling.escalation import ResolvedEscalation, input_flags

    ws = fresh_workspace("demo-workload")
    shown = govern_demo_release(ws, model_version=trained[1])
    summary = score_test_set(ws, site=PILOT_SITE, requester="system:demo-ehr")
    work = summary["workload"]
    assert work["scored"] == summary["by_status"]["scored"] == summary["n"]
    # gate 2 holds the release to its policy's budget: the spec declares no other ceiling
    budget = ICU.escalation.max_reviews_per_100
    assert budget == 5 and ICU.acceptance.max_reviews_per_100 is None
    assert work["reviews_per_100"] == round(100 * summary["escalated"] / work["scored"], 2)
    assert work["reviews_per_100"] <= budget

    with Registry.open(ws) as reg:
        bundle = load_bundle(ws, reg.get(shown["version"]).path)
    policy = ResolvedEscalation.from_json(bundle.deployment["escalation"])
    assert policy.review_on == tuple(ICU.escalation.review_on)
    # the same stays, scored by the release's model outside the service
    model = bundle.model()
    test = locked_test_stays(open_snapshot(ws, shown["lineage"]["snapshot"]["id"]))
    names = list(ICU.feature_names)
    pred = model.apply(test[names], explain=False)
    missing = test[names].isna().sum(axis=1).to_numpy()
    flags = input_flags(
        pred.p_cal,
        pred.sets,
        missing_count=missing,
        n_features=len(names),
        max_missing=ICU.cohort.max_missing_feature_fraction,
    )
    routing = policy.route(pred.p_cal, flags)
    with Ledger.open(ws, create=False) as ledger:
        views = list(ledger.read_from(summary["first_seq"]))
    served_queued = [
        v.entry.type == "inference"
        and k + 1 < len(views)
        and views[k + 1].entry.type == "escalation"
        for k, v in enumerate(views)
        if v.entry.type == "inference"
    ]
    probabilities = [v.payload["probability"] for v in views if v.entry.type == "inference"]
    assert np.allclose(probabilities, pred.p_cal, rtol=0, atol=1e-12)
    assert served_queued == routing.queued.tolist()
    assert work["alerts_per_100"] == round(100 * float(np.mean(pred.p_cal >= bundle.threshold)), 2)

    render_serving(summary)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert f"{work['alerts_per_100']:.1f} alerts per 100" in out
    assert f"{work['reviews_per_100']:.1f} reviews per 100" in out
    assert "Review budget: 5 per 100 stays" in out
    assert "P(true label in set | true label = k) >= 0.90 for each class k" in out
