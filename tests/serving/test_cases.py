"""One case per patient and encounter: an EHR scoring the same encounter again and again
(the library, ``POST /v1/predict`` with ``encounter``, ``POST /v1/fhir/predict`` with an
Encounter) leaves one open case; deciding it by any of its predictions decides it once;
after the decision a new escalation opens a new case; erasure removes the case."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from clinical_mlops.application.governance import decide_case
from clinical_mlops.errors import CaseAlreadyDecided, OverrideInvalid
from clinical_mlops.governance.queue import case as open_case
from clinical_mlops.governance.queue import escalated_cases
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

SITE = "demo-icu-north"
ICU_SPEC = load_task("icu_mortality_48h")


@pytest.fixture(scope="module")
def world(
    served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A copy of the served workspace (this module erases a patient), its service and the
    patients whose predictions are escalated."""
    root = tmp_path_factory.mktemp("cases") / "ws"
    shutil.copytree(served["ws"].root, root)
    ws = Workspace.open(root)
    predictor = Predictor.open(ws, site=SITE, status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
    rows = served["rows"]
    # patients (MRN-i, rows[i]) whose prediction the model escalates: scored without an
    # encounter once, so each is also a case of its own
    probe = predictor.predict_many(
        [
            PredictionRequest(
                subject_id=f"MRN-{i}", purpose="direct_care", setting="icu", features=rows[i]
            )
            for i in range(60, 120)
        ],
        requester="system:test",
    )
    escalated = [60 + k for k, r in enumerate(probe) if r.escalated]
    if len(escalated) < 8:
        pytest.fail(f"the test model should escalate at least 8 of 60 patients: {escalated}")
    yield {
        "root": root,
        "predictor": predictor,
        "client": client,
        "auth": auth,
        "rows": rows,
        "escalated": escalated,
    }
    predictor.close()


def _bearer(w: dict[str, Any], *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + w["auth"].issue(subject="dr.t", roles=list(roles))}


def _score(w: dict[str, Any], i: int, encounter: str | None, times: int = 1) -> list[int]:
    """Return the audit seqs of ``times`` escalated predictions of MRN-i in ``encounter``."""
    out = []
    for _ in range(times):
        r = w["predictor"].predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{i}",
                    purpose="direct_care",
                    setting="icu",
                    features=w["rows"][i],
                    encounter=encounter,
                )
            ],
            requester="system:test",
        )[0]
        assert r.escalated, r
        out.append(r.audit_seq)
    return out


def _open_cases(w: dict[str, Any], seqs: list[int], now: Any = None) -> list[Any]:
    """Return the open cases holding any of ``seqs``."""
    now = now or w["predictor"].clock.now()
    found = escalated_cases(w["predictor"].ledger, now=now, limit=10_000)
    return [c for c in found if {c.prediction_seq, *getattr(c, "predictions", [])} & set(seqs)]


def test_repeated_scoring_of_one_encounter_is_one_open_case(world: dict[str, Any]) -> None:
    i = world["escalated"][0]
    seqs = _score(world, i, "ENC-1", times=3)
    other = _score(world, i, "ENC-2")  # another encounter of the same patient: its own case
    alone = _score(world, i, None, times=2)  # no encounter: one case per prediction
    now = item_now(world)
    [item] = _open_cases(world, seqs, now)
    assert item.prediction_seq == seqs[0] and item.predictions == seqs
    assert item.prediction_count == 3 and item.latest_seq == seqs[-1]
    newest = world["predictor"].ledger.read(seqs[-1]).payload
    assert item.probability == newest["probability"] and item.flags == newest["flags"]
    first_escalation = world["predictor"].ledger.read(seqs[0] + 1)
    assert first_escalation.entry.type == "escalation"
    assert item.escalation_seq == seqs[0] + 1
    assert item.escalated_at == first_escalation.entry.time
    assert [c.predictions for c in _open_cases(world, other)] == [other]
    assert sorted(c.predictions[0] for c in _open_cases(world, alone)) == alone
    for seq in seqs:  # any of its predictions gives the case
        assert open_case(world["predictor"].ledger, seq, now=now) == item


def item_now(w: dict[str, Any]) -> Any:
    return w["predictor"].clock.now()


def test_deciding_by_an_older_prediction_decides_the_case_once(world: dict[str, Any]) -> None:
    led = world["predictor"].ledger
    i = world["escalated"][1]
    seqs = _score(world, i, "ENC-1", times=3)
    made = decide_case(led, seqs[1], action="accept", actor="user:dr.a")
    assert made.record["case_seq"] == seqs[0] and made.record["prediction_seq"] == seqs[1]
    size = led.size()
    for seq in (seqs[0], seqs[2], seqs[1]):
        with pytest.raises(CaseAlreadyDecided, match="already decided: accept by user:dr.a"):
            decide_case(led, seq, action="override", actor="user:dr.b")
    assert led.size() == size
    assert _open_cases(world, seqs) == []
    decided = open_case(led, seqs[2], now=item_now(world))
    assert decided.state == "decided" and decided.decision is not None
    assert decided.decision.seq == made.seq
    # after the decision, the same encounter escalated again opens a new case
    again = _score(world, i, "ENC-1", times=2)
    [fresh] = _open_cases(world, again)
    assert fresh.prediction_seq == again[0] and fresh.predictions == again
    assert (
        decide_case(led, again[1], action="escalate", actor="user:dr.a").record["case_seq"]
        == again[0]
    )
    # one request naming two predictions of one case: one decision, refused whole
    with pytest.raises(OverrideInvalid, match="named twice"):
        world_decide_two(led, again)
    assert led.size() == size + 2 * 2 + 1  # two predictions with their escalations, one referral


def world_decide_two(led: Any, seqs: list[int]) -> None:
    from clinical_mlops.application.governance import decide_cases
    from clinical_mlops.governance.oversight import OverrideRequest

    decide_cases(
        led,
        [OverrideRequest(seqs[0], "accept"), OverrideRequest(seqs[1], "override")],
        actor="user:dr.a",
        source="api",
    )


def test_http_scoring_with_an_encounter_gives_one_case_decided_once(world: dict[str, Any]) -> None:
    c, i = world["client"], world["escalated"][2]
    body = {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": world["rows"][i],
        "encounter": "VISIT-77",
    }
    seqs = []
    for _ in range(3):
        r = c.post("/v1/predict", headers=_bearer(world, "system"), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["escalated"]
        seqs.append(r.json()["audit_seq"])
    # newest first: the module's other cases may outrank this one by risk
    listed = c.get(
        "/v1/cases",
        headers=_bearer(world, "clinician"),
        params={"limit": 1000, "sort": "newest"},
    )
    assert listed.status_code == 200, listed.text
    page = listed.json()
    # the module's other tests escalate too: the page holds the newest 1000, the total all
    assert len(page["cases"]) == min(page["total"], 1000) and page["total"] >= 1
    [row] = [x for x in page["cases"] if set(x["predictions"]) & set(seqs)]
    assert row["prediction_seq"] == seqs[0] and row["predictions"] == seqs
    assert row["prediction_count"] == 3 and row["latest_prediction_seq"] == seqs[2]
    assert row["encounter"] is not None and row["encounter"] != "VISIT-77"  # a pseudonym
    short = c.get("/v1/cases", headers=_bearer(world, "reviewer"), params={"limit": 1}).json()
    assert short["total"] == page["total"] and len(short["cases"]) == 1
    one = c.get(f"/v1/cases/{seqs[1]}", headers=_bearer(world, "clinician")).json()
    assert one["prediction_seq"] == seqs[0] and one["state"] == "open"
    first = c.post(
        "/v1/overrides",
        headers=_bearer(world, "clinician"),
        json={"prediction_id": seqs[0], "action": "override", "reason_code": "clinical-judgement"},
    )
    assert first.status_code == 201, first.text
    second = c.post(
        "/v1/overrides",
        headers=_bearer(world, "clinician"),
        json={"prediction_id": seqs[2], "action": "accept"},
    )
    assert second.status_code == 409, second.text
    assert second.json()["detail"]["code"] == "CaseAlreadyDecided"
    after = c.get("/v1/cases", headers=_bearer(world, "clinician"), params={"limit": 1000})
    assert after.json()["total"] == page["total"] - 1
    decided = c.get(
        "/v1/cases",
        headers=_bearer(world, "clinician"),
        params={"state": "decided", "sort": "newest"},
    ).json()
    assert [x["predictions"] for x in decided["cases"] if x["prediction_seq"] == seqs[0]] == [seqs]
    bad = c.get("/v1/cases", headers=_bearer(world, "clinician"), params={"reason": "bored"})
    assert bad.status_code == 422 and "reason" in bad.text


def _escalated_since(w: dict[str, Any], before: int) -> list[int]:
    """Return the seqs of the predictions escalated in the entries written since ``before``."""
    led = w["predictor"].ledger
    views = [led.read(s) for s in range(before, led.size())]
    return [
        v.entry.seq
        for v, nxt in itertools.pairwise(views)
        if v.entry.type == "inference" and nxt.entry.type == "escalation"
    ]


def test_fhir_bundles_of_one_encounter_give_one_case(world: dict[str, Any]) -> None:
    """The Encounter in each Bundle an EHR sends names the case: one Bundle scored twice."""
    from serving.fhir_bundles import ehr_bundle  # FHIR input postdates one case per encounter

    c, led = world["client"], world["predictor"].ledger
    for i in world["escalated"][6:]:
        body = {
            "purpose": "direct_care",
            "setting": "icu",
            "bundle": ehr_bundle(ICU_SPEC, world["rows"][i], f"MRN-{i}"),
        }
        before = led.size()
        for _ in range(2):
            r = c.post("/v1/fhir/predict", headers=_bearer(world, "system"), json=body)
            assert r.status_code == 200, r.text
        seqs = _escalated_since(world, before)
        if len(seqs) == 2:
            break
    else:
        pytest.fail("no patient's Bundle was escalated")
    assert led.read(seqs[0]).payload["encounter"] == led.read(seqs[1]).payload["encounter"]
    [item] = _open_cases(world, seqs)
    assert item.predictions == seqs and item.encounter is not None


def test_two_writers_escalating_one_encounter_at_once_make_one_case(
    world: dict[str, Any],
) -> None:
    i = world["escalated"][4]
    second = Predictor.open(Workspace.open(world["root"]), site=SITE, status_ttl=0.0)
    barrier = threading.Barrier(2)
    made: dict[str, list[int]] = {}

    def run(name: str, predictor: Predictor) -> None:
        barrier.wait()
        made[name] = [
            predictor.predict_many(
                [
                    PredictionRequest(
                        subject_id=f"MRN-{i}",
                        purpose="direct_care",
                        setting="icu",
                        features=world["rows"][i],
                        encounter="RACE-1",
                    )
                ],
                requester=f"system:{name}",
            )[0].audit_seq
            for _ in range(4)
        ]

    try:
        threads = [
            threading.Thread(target=run, args=("a", world["predictor"])),
            threading.Thread(target=run, args=("b", second)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        second.close()
    seqs = sorted(made["a"] + made["b"])
    [item] = _open_cases(world, seqs)
    assert item.predictions == seqs and item.prediction_seq == seqs[0]
    # two clinicians deciding it at once by different predictions: one decision
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def decide(seq: int) -> None:
        barrier.wait()
        try:
            decide_case(world["predictor"].ledger, seq, action="accept", actor=f"user:{seq}")
            outcomes.append("recorded")
        except CaseAlreadyDecided:
            outcomes.append("refused")

    threads = [threading.Thread(target=decide, args=(s,)) for s in (seqs[1], seqs[-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["recorded", "refused"]


def test_erasure_removes_the_case_from_the_queue(world: dict[str, Any]) -> None:
    i = world["escalated"][5]
    seqs = _score(world, i, "ENC-ERASE", times=2)
    assert len(_open_cases(world, seqs)) == 1
    out = subprocess.run(
        [
            *(sys.executable, "-m", "clinical_mlops", "privacy", "erase", f"MRN-{i}"),
            *("--reason", "art. 17 request 3", "--json", "-w", str(world["root"])),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)
    # a process opening the ledger now no longer lists the case ...
    with Ledger.open(Workspace.open(world["root"])) as fresh:
        listed = escalated_cases(fresh, now=item_now(world), limit=10_000)
    assert [c for c in listed if set(c.predictions) & set(seqs)] == []
    # ... and the running service learns of the erasure within its bound (ERASURE_TTL)
    deadline = time.monotonic() + 30
    while True:
        gone = world["client"].get(f"/v1/cases/{seqs[1]}", headers=_bearer(world, "clinician"))
        if gone.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gone.status_code == 410, gone.text
    assert _open_cases(world, seqs) == []
