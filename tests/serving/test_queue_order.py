"""A queue a clinician can work: ``GET /v1/cases`` sorted by risk (the default), waiting
time or reason; ``GET /v1/cases/next`` the next open case nobody has taken on; and each
contribution of a prediction carrying the reference it is compared with."""

from __future__ import annotations

import secrets
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.governance.queue import ESCALATION_REASONS, case_queue
from clinical_mlops.http.app import create_app
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.workspace import Workspace

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

#: the world's own ward: the served workspace it copies is shared by other test modules, whose
#: cases (at their sites) must not enter the listings compared here
SITE = "icu-queue-order"


@pytest.fixture(scope="module")
def world(
    served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A copy of the served workspace whose queue holds cases of several risks."""
    root = tmp_path_factory.mktemp("queue-order") / "ws"
    shutil.copytree(served["ws"].root, root)
    predictor = Predictor.open(Workspace.open(root), site=SITE, status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
    rows = served["rows"]
    results = []
    for i in range(40):  # one batch per patient: each escalation is later than the last
        results += predictor.predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{i}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[i],
                    encounter=f"ENC-{i}",
                )
            ],
            requester="system:test",
        )
    escalated = [r for r in results if r.escalated]
    risks = {round(r.probability or 0.0, 9) for r in escalated}
    if len(escalated) < 6 or len(risks) < 4:
        pytest.fail(f"the test model should escalate cases of several risks: {len(escalated)}")
    yield {"predictor": predictor, "client": client, "auth": auth, "rows": rows}
    predictor.close()


def _bearer(w: dict[str, Any], *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + w["auth"].issue(subject="dr.q", roles=list(roles))}


def _listed(w: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = w["client"].get(
        "/v1/cases", headers=_bearer(w, "clinician"), params={"limit": 1000, "site": SITE, **params}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_the_queue_sorts_by_risk_by_default_and_by_waiting_time_or_reason(
    world: dict[str, Any],
) -> None:
    default = _listed(world)
    by_risk = _listed(world, sort="risk")
    assert default["sort"] == "risk"
    assert [c["prediction_seq"] for c in default["cases"]] == [
        c["prediction_seq"] for c in by_risk["cases"]
    ]
    risks = [c["probability"] for c in by_risk["cases"]]
    assert len(risks) == by_risk["total"] >= 6
    assert risks == sorted(risks, reverse=True) and risks[0] > risks[-1]
    newest = _listed(world, sort="newest")
    assert [c["escalation_seq"] for c in newest["cases"]] == sorted(
        (c["escalation_seq"] for c in newest["cases"]), reverse=True
    )
    # the scoring order is not the risk order: sorting changed something
    assert [c["prediction_seq"] for c in newest["cases"]] != [
        c["prediction_seq"] for c in by_risk["cases"]
    ]
    waiting = _listed(world, sort="waiting")
    firsts = [c["escalation_seq"] for c in waiting["cases"]]
    assert firsts == sorted(firsts) and waiting["cases"][0]["age_seconds"] >= max(
        c["age_seconds"] for c in waiting["cases"]
    )
    by_reason = _listed(world, sort="reason")
    order = list(ESCALATION_REASONS)
    keys = [
        (min(order.index(f) for f in c["reason_flags"]), -c["probability"])
        for c in by_reason["cases"]
    ]
    assert keys == sorted(keys)
    for listing in (by_risk, newest, waiting, by_reason):
        assert listing["total"] == by_risk["total"]
        assert {c["prediction_seq"] for c in listing["cases"]} == {
            c["prediction_seq"] for c in by_risk["cases"]
        }


def test_an_unknown_sort_is_refused_naming_sort_and_the_orders(world: dict[str, Any]) -> None:
    r = world["client"].get(
        "/v1/cases", headers=_bearer(world, "clinician"), params={"sort": "alphabetical"}
    )
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["query", "sort"]
    for key in ("risk", "waiting", "reason", "newest"):
        assert key in problem["msg"]
    with pytest.raises(ValueInvalid, match=r"sort: unknown queue order 'alphabetical'; use one of "
                       r"risk, waiting, reason, newest"):  # fmt: skip
        case_queue(
            world["predictor"].ledger, now=world["predictor"].clock.now(), sort="alphabetical"
        )


def test_next_case_is_the_first_open_case_nobody_took_on(world: dict[str, Any]) -> None:
    c, clinician = world["client"], _bearer(world, "clinician")
    for sort in ("risk", "waiting"):
        listed = [x for x in _listed(world, sort=sort)["cases"] if not x["sent_to_senior_review"]]
        r = c.get("/v1/cases/next", headers=clinician, params={"sort": sort, "site": SITE})
        assert r.status_code == 200, r.text
        assert r.json()["prediction_seq"] == listed[0]["prediction_seq"]
    listed = [x for x in _listed(world)["cases"] if not x["sent_to_senior_review"]]
    top, second, third = (x["prediction_seq"] for x in listed[:3])
    # sent to senior review: taken on, so the next case is the one after it
    sent = c.post(
        "/v1/overrides",
        headers=clinician,
        json={"prediction_id": top, "action": "escalate"},
    )
    assert sent.status_code == 201, sent.text
    assert (
        c.get("/v1/cases/next", headers=clinician, params={"site": SITE}).json()["prediction_seq"]
        == second
    )
    # a case passed over is skipped too; a decided case leaves the queue
    skipped = c.get("/v1/cases/next", headers=clinician, params={"skip": [second], "site": SITE})
    assert skipped.json()["prediction_seq"] == third
    done = c.post(
        "/v1/overrides", headers=clinician, json={"prediction_id": second, "action": "accept"}
    )
    assert done.status_code == 201, done.text
    assert (
        c.get("/v1/cases/next", headers=clinician, params={"site": SITE}).json()["prediction_seq"]
        == third
    )
    # nothing waits: 404 saying so
    none = c.get("/v1/cases/next", headers=clinician, params={"site": "no-such-ward"})
    assert none.status_code == 404, none.text
    assert none.json()["detail"]["code"] == "NoCaseWaiting"
    assert "no open case waits" in none.json()["detail"]["message"]
    refused = c.get("/v1/cases/next", headers=_bearer(world, "system"))
    assert refused.status_code == 403


def test_each_contribution_of_a_prediction_carries_its_reference(world: dict[str, Any]) -> None:
    """The reference is the training median the model also imputes: stated, not implied."""
    predictor = world["predictor"]
    r = world["client"].post(
        "/v1/predict",
        headers=_bearer(world, "system"),
        json={
            "subject_id": "MRN-3",
            "purpose": "direct_care",
            "setting": "icu",
            "features": world["rows"][3],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["contributions"]
    scorer = predictor.scorer(body["release"])
    medians = scorer.model.preprocessor.medians  # fitted on the training stays
    for item in body["contributions"]:
        ref = item["reference"]
        if scorer.spec.feature(item["feature"]).kind == "categorical":
            assert ref is None
            continue
        assert ref["statistic"] == "training median"
        assert ref["value"] == pytest.approx(medians[item["feature"]])
        if world["rows"][3].get(item["feature"]) is not None:
            assert f"(training median {ref['shown']})" in item["phrase"]
