"""Uniqueness under concurrency, through the HTTP service, on SQLite and on PostgreSQL.

One served prediction per request id, one decision per case from any front end (API,
CDS Hooks feedback, console), one outcome per prediction — under real threads and real
processes racing. The losers get 409 naming the rule and the record that holds it,
nothing of theirs is written, the service stays up and the ledger verifies.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import clinical_mlops
from clinical_mlops.application.governance import decide_case
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.governance.queue import case
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.monitoring.records import read_ledger_records
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.cds_hooks import card_uuid
from clinical_mlops.tasks import load_task
from clinical_mlops.vocabulary import OVERRIDE_REASONS, REASON_SYSTEM
from clinical_mlops.workspace import Workspace
from evidence_helpers import race
from postgres_cluster import create_database
from serving.conftest import rows_of

# The CDS service the served (ICU) task declares in its spec's presentation section.
SERVICE_ID = load_task("icu_mortality_48h").words().service_id

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PATIENTS = 60
WRITER = Path(__file__).with_name("race_writer.py")
STORES = ("META", "LEDGER", "IDENTITY")


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest,
    trained: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """A governed workspace of its own on the backend, served over HTTP."""
    backend = str(request.param)
    root = tmp_path_factory.mktemp(f"unique-{backend}")
    env: dict[str, str] = {}
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        env = {f"CLINICAL_MLOPS_{s}_URL": create_database(server) for s in STORES}
    with pytest.MonkeyPatch.context() as mp:
        for s in STORES:
            mp.delenv(f"CLINICAL_MLOPS_{s}_URL", raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        ws = Workspace.open(root / "ws")
        shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
        shown = govern_demo_release(ws, model_version=trained[1])
        with Ledger.open(ws) as led:
            for i in range(PATIENTS):
                record_consent(
                    led.vault,
                    pseudonym=led.vault.pseudonym_for(f"MRN-{i}"),
                    purposes=["direct_care"],
                    valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                    valid_until=None,
                    recorded_by="test",
                )
        rows = rows_of(ws, shown["lineage"]["snapshot"]["id"])
        rows_file = root / "rows.json"
        rows_file.write_text(json.dumps(rows), encoding="utf-8")
        predictor = Predictor.open(ws, status_ttl=0.0)
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        key = "cmk_" + secrets.token_hex(16)
        auth.add_api_key(key, name="lab-interface", roles=["system"])
        try:
            with TestClient(create_app(predictor, auth)) as client:
                yield {
                    "backend": backend,
                    "ws": ws,
                    "env": env,
                    "rows": rows,
                    "rows_file": rows_file,
                    "client": client,
                    "predictor": predictor,
                    "ledger": predictor.ledger,
                    "clinician": {
                        "Authorization": "Bearer "
                        + auth.issue(subject="dr.race", roles=["clinician"])
                    },
                    "lab": {"X-API-Key": key},
                }
        finally:
            predictor.close()


def item(live: dict[str, Any], i: int, **extra: Any) -> dict[str, Any]:
    return {
        "subject_id": f"MRN-{i % PATIENTS}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": live["rows"][i],
    } | extra


def served_ids(ledger: Ledger, since: int) -> list[str]:
    """Return the request id of every inference entry from seq ``since``."""
    with ledger.store.engine.connect() as conn:
        seqs = conn.execute(
            sa.select(entries.c.seq).where(entries.c.type == "inference", entries.c.seq >= since)
        ).scalars()
        return [str(ledger.read(int(s)).payload["request_id"]) for s in seqs]  # type: ignore[index]


def of_type(ledger: Ledger, entry_type: str, prediction: int) -> list[int]:
    """Return the seqs of ``entry_type`` entries naming ``prediction``."""
    with ledger.store.engine.connect() as conn:
        seqs = conn.execute(sa.select(entries.c.seq).where(entries.c.type == entry_type)).scalars()
        return [
            int(s)
            for s in seqs
            if ledger.read(int(s)).payload["prediction_seq"] == prediction  # type: ignore[index]
        ]


def shown_prediction(live: dict[str, Any], i: int, tag: str) -> int:
    r = live["client"].post(
        "/v1/predict", headers=live["clinician"], json=item(live, i, request_id=tag)
    )
    assert r.status_code == 200 and r.json()["status"] == "scored", r.text
    return int(r.json()["audit_seq"])


def still_serving(live: dict[str, Any], tag: str) -> None:
    """The service answers a fresh request, and the ledger verifies."""
    r = live["client"].post(
        "/v1/predict", headers=live["clinician"], json=item(live, 59, request_id=tag)
    )
    assert r.status_code == 200, r.text
    report = live["ledger"].verify()
    assert report.ok, report.problems[:3]


def conflicts(responses: list[Any], code: str) -> list[str]:
    """Return the messages of the 409s, after checking each names ``code``."""
    out = []
    for r in responses:
        if r.status_code == 409:
            assert r.json()["detail"]["code"] == code, r.text
            out.append(r.json()["detail"]["message"])
    return out


def test_concurrent_batches_sharing_a_request_id_serve_exactly_one(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    before = ledger.size()
    shared = f"shared-{live['backend']}"

    def post(i: int) -> Any:
        body = {"items": [item(live, i, request_id=f"own-{i}"), item(live, 10, request_id=shared)]}
        return client.post("/v1/predict", headers=live["clinician"], json=body)

    got = race(4, post)
    assert sorted(r.status_code for r in got) == [200, 409, 409, 409], [r.text for r in got]
    winner = next(r.json()["results"] for r in got if r.status_code == 200)
    held = winner[1]["audit_seq"]
    for message in conflicts(got, "DuplicateRequest"):
        assert f"request id {shared!r} was already served (audit seq {held})" in message
        assert "nothing of this request was recorded" in message
    ids = served_ids(ledger, before)
    assert ids.count(shared) == 1
    # a refused batch is refused whole: its other item was not recorded either
    assert sorted(ids) == sorted([shared, winner[0]["request_id"]])
    still_serving(live, f"after-batches-{live['backend']}")


def test_eight_parallel_one_item_batches_over_ten_rounds_serve_ten(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    before = ledger.size()
    accepted = 0
    for rnd in range(10):

        def post(i: int, rnd: int = rnd) -> Any:
            body = {"items": [item(live, 20 + i, request_id=f"round-{rnd}")]}
            return client.post("/v1/predict", headers=live["clinician"], json=body)

        got = race(8, post)
        assert sorted(r.status_code for r in got) == [200] + [409] * 7, [r.text for r in got]
        assert len(conflicts(got, "DuplicateRequest")) == 7
        accepted += sum(r.status_code == 200 for r in got)
    assert accepted == 10
    assert sorted(served_ids(ledger, before)) == sorted(f"round-{r}" for r in range(10))
    still_serving(live, f"after-rounds-{live['backend']}")


def test_processes_sharing_the_ledger_serve_a_request_id_once(live: dict[str, Any]) -> None:
    """Three service processes on one ledger: the store, not a process's memory, decides."""
    ledger = live["ledger"]
    before = ledger.size()
    shared = f"across-processes-{live['backend']}"
    package = str(Path(clinical_mlops.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parents[1])
    env = os.environ | live["env"] | {"PYTHONPATH": os.pathsep.join([package, tests])}
    procs = []
    for p in range(3):
        batch = [[f"MRN-{30 + p}", 30 + p, f"proc-own-{p}"], ["MRN-33", 33, shared]]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(WRITER),
                    str(live["ws"].root),
                    str(live["rows_file"]),
                    json.dumps(batch),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:  # all loaded; now they send together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [json.loads(proc.communicate(timeout=300)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    served = [o for o in outs if "served" in o]
    refused = [o for o in outs if "refused" in o]
    assert len(served) == 1 and len(refused) == 2, outs
    held = served[0]["served"][1]
    for o in refused:
        assert o["refused"] == "DuplicateRequest"
        assert f"request id {shared!r} was already served (audit seq {held})" in o["message"]
    own = str(ledger.read(served[0]["served"][0]).payload["request_id"])  # type: ignore[index]
    assert sorted(served_ids(ledger, before)) == sorted([shared, own])
    still_serving(live, f"after-processes-{live['backend']}")


def test_concurrent_overrides_on_one_prediction_record_one(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    pred = shown_prediction(live, 40, f"to-override-{live['backend']}")

    def post(i: int) -> Any:
        body = {"prediction_id": pred, "action": "override", "comment": f"tab {i}"}
        return client.post("/v1/overrides", headers=live["clinician"], json=body)

    got = race(5, post)
    assert sorted(r.status_code for r in got) == [201, 409, 409, 409, 409], [r.text for r in got]
    made = next(r.json() for r in got if r.status_code == 201)
    for message in conflicts(got, "CaseAlreadyDecided"):
        assert message.startswith(
            f"prediction {pred} was already decided: override by user:dr.race"
        )
        assert f"(audit seq {made['seq']})" in message
    assert of_type(ledger, "override", pred) == [made["seq"]]
    # later, one more: still refused, still naming the decision
    again = client.post(
        "/v1/overrides", headers=live["clinician"], json={"prediction_id": pred, "action": "accept"}
    )
    assert again.status_code == 409 and f"audit seq {made['seq']}" in again.text
    still_serving(live, f"after-overrides-{live['backend']}")


def test_concurrent_cds_feedback_on_one_card_records_one(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    pred = shown_prediction(live, 41, f"to-feedback-{live['backend']}")
    card = card_uuid(ledger.origin, pred)

    def post(i: int) -> Any:
        item: dict[str, Any] = {"card": card, "outcomeTimestamp": "2026-03-02T09:00:00Z"}
        if i % 2:
            item["outcome"] = "accepted"
        else:  # an override names a reason the card offered (CDS Hooks 2.0)
            code = next(iter(OVERRIDE_REASONS))
            reason = {"system": REASON_SYSTEM, "code": code, "display": OVERRIDE_REASONS[code]}
            item |= {"outcome": "overridden", "overrideReason": {"reason": reason}}
        body = {"feedback": [item]}
        return client.post(
            f"/cds-services/{SERVICE_ID}/feedback", headers=live["clinician"], json=body
        )

    got = race(5, post)
    assert sorted(r.status_code for r in got) == [200, 409, 409, 409, 409], [r.text for r in got]
    made = next(r.json()["override_seqs"] for r in got if r.status_code == 200)
    for message in conflicts(got, "CaseAlreadyDecided"):
        assert f"prediction {pred} was already decided" in message
        assert f"(audit seq {made[0]})" in message
    assert of_type(ledger, "override", pred) == made
    still_serving(live, f"after-feedback-{live['backend']}")


def test_console_api_and_cds_feedback_decide_a_case_once(live: dict[str, Any]) -> None:
    """The three front ends race on one case: one decision, whichever arrives first."""
    client, ledger = live["client"], live["ledger"]
    pred = shown_prediction(live, 42, f"three-doors-{live['backend']}")

    def door(i: int) -> Any:
        if i == 0:
            return decide_case(ledger, pred, action="accept", actor="user:dr.console")
        if i == 1:
            return client.post(
                "/v1/overrides",
                headers=live["clinician"],
                json={"prediction_id": pred, "action": "override"},
            )
        body = {"feedback": [{"card": card_uuid(ledger.origin, pred), "outcome": "accepted"}]}
        return client.post(
            f"/cds-services/{SERVICE_ID}/feedback", headers=live["clinician"], json=body
        )

    got = race(3, door)
    recorded = [
        g for g in got if not isinstance(g, Exception) and getattr(g, "status_code", 200) < 300
    ]
    assert len(recorded) == 1, got
    assert len(of_type(ledger, "override", pred)) == 1
    decided = case(ledger, pred, now=datetime.now(UTC)).decision
    assert decided is not None and decided.seq == of_type(ledger, "override", pred)[0]


def test_a_decision_is_changed_only_by_an_explicit_correction(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    pred = shown_prediction(live, 43, f"to-correct-{live['backend']}")
    first = client.post(
        "/v1/overrides", headers=live["clinician"], json={"prediction_id": pred, "action": "accept"}
    )
    assert first.status_code == 201
    no_reason = client.post(
        "/v1/overrides",
        headers=live["clinician"],
        json={"prediction_id": pred, "action": "override", "correction": True},
    )
    assert no_reason.status_code == 422 and "correction_reason" in no_reason.text

    def correct(i: int) -> Any:
        body = {
            "prediction_id": pred,
            "action": "override",
            "correction": True,
            "correction_reason": f"wrong button ({i})",
        }
        return client.post("/v1/overrides", headers=live["clinician"], json=body)

    got = race(3, correct)
    made = sorted((r.json() for r in got if r.status_code == 201), key=lambda d: d["seq"])
    # each value is corrected once: the corrections that went through form one chain
    assert [d["corrects"] for d in made] == [first.json()["seq"]] + [d["seq"] for d in made[:-1]]
    for message in conflicts(got, "CaseAlreadyDecided"):
        assert f"on prediction {pred} was already corrected" in message
    assert len(made) + len(conflicts(got, "CaseAlreadyDecided")) == 3
    decided = case(ledger, pred, now=datetime.now(UTC)).decision
    assert decided is not None and (decided.seq, decided.action) == (made[-1]["seq"], "override")
    assert decided.correction_reason is not None and decided.correction_reason.startswith(
        "wrong button"
    )


def test_concurrent_outcomes_record_one_and_a_correction_replaces_it(live: dict[str, Any]) -> None:
    client, ledger = live["client"], live["ledger"]
    pred = shown_prediction(live, 44, f"to-outcome-{live['backend']}")
    other = shown_prediction(live, 45, f"to-outcome-too-{live['backend']}")

    def post(i: int) -> Any:
        return client.post(
            "/v1/outcomes", headers=live["lab"], json={"prediction_ids": [pred], "outcome": 1}
        )

    got = race(5, post)
    assert sorted(r.status_code for r in got) == [201, 409, 409, 409, 409], [r.text for r in got]
    held = next(r.json()["outcome_seqs"][0] for r in got if r.status_code == 201)
    for message in conflicts(got, "OutcomeAlreadyRecorded"):
        assert f"prediction {pred} already has an outcome (audit seq {held}, outcome 1" in message
    assert of_type(ledger, "outcome", pred) == [held]
    # a batch naming a prediction that has its outcome is refused whole
    both = client.post(
        "/v1/outcomes", headers=live["lab"], json={"prediction_ids": [other, pred], "outcome": 0}
    )
    assert both.status_code == 409 and of_type(ledger, "outcome", other) == []
    unexplained = client.post(
        "/v1/outcomes",
        headers=live["lab"],
        json={"prediction_ids": [pred], "outcome": 0, "correction": True},
    )
    assert unexplained.status_code == 422 and "correction_reason" in unexplained.text
    nothing_to_correct = client.post(
        "/v1/outcomes",
        headers=live["lab"],
        json={
            "prediction_ids": [other],
            "outcome": 0,
            "correction": True,
            "correction_reason": "lab re-run",
        },
    )
    assert (
        nothing_to_correct.status_code == 422 and "no outcome to correct" in nothing_to_correct.text
    )

    def correct(i: int) -> Any:
        body = {
            "prediction_ids": [pred],
            "outcome": 0,
            "correction": True,
            "correction_reason": "death certificate was for another stay",
        }
        return client.post("/v1/outcomes", headers=live["lab"], json=body)

    got = race(3, correct)
    fixed = sorted(r.json()["outcome_seqs"][0] for r in got if r.status_code == 201)
    stored = [ledger.read(seq).payload for seq in fixed]
    # each value is corrected once: the corrections that went through form one chain
    assert [p["corrects"] for p in stored] == [held, *fixed[:-1]]  # type: ignore[index]
    assert {p["outcome"] for p in stored} == {0}  # type: ignore[index]
    assert {p["correction_reason"] for p in stored} == {  # type: ignore[index]
        "death certificate was for another stay"
    }
    refused = conflicts(got, "OutcomeAlreadyRecorded")
    assert len(fixed) + len(refused) == 3
    assert all(f"of prediction {pred} was already corrected" in m for m in refused)
    # monitoring uses the corrected value, in the original's place
    outcomes = read_ledger_records(ledger)["outcomes"]
    mine = [float(y) for s, y in zip(outcomes.seq, outcomes.outcome, strict=True) if s == pred]
    assert mine == [0.0]
    still_serving(live, f"after-outcomes-{live['backend']}")


def test_the_ledger_verifies_with_the_cli_after_the_races(live: dict[str, Any]) -> None:
    package = str(Path(clinical_mlops.__file__).resolve().parents[1])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinical_mlops",
            "audit",
            "verify",
            "--thorough",
            "--json",
            "-w",
            str(live["ws"].root),
        ],
        capture_output=True,
        text=True,
        env=os.environ | live["env"] | {"PYTHONPATH": package},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
