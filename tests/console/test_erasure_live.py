"""Erasure reaches a running service and console (R-A4): after ``clinical-mlops privacy erase``
in another process, the running service refuses overrides, outcomes and case decisions for
the patient's predictions (410), shows no inputs on the case page, opens none of the
patient's payloads, and seals nothing more under the patient's destroyed keys."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from console_world import CLINICIAN, SITE, form_token, sign_in

from clinical_mlops.console import create_console_app
from clinical_mlops.errors import KeyNotFound
from clinical_mlops.governance.queue import identifier_of
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger.store import entries
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.serving.predictor import Predictor
from clinical_mlops.tasks import load_task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

#: how long the test waits for the service to learn of the erasure: far beyond the 2 s bound,
#: so a loaded machine does not fail the test; the loop ends as soon as the page changes
PATIENCE_S = 60.0


@pytest.fixture
def service(fresh_world: dict[str, Any]) -> Any:
    """The service with the console mounted, as ``clinical-mlops serve`` runs it."""
    predictor = Predictor.open(fresh_world["ws"], site=SITE)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    app = create_app(predictor, auth)
    app.mount(
        "/console",
        create_console_app(
            predictor.workspace,
            ledger=predictor.ledger,
            registry=predictor.registry,
            clock=predictor.clock,
        ),
    )
    yield TestClient(app), predictor, auth
    predictor.close()


def _bearer(auth: AuthConfig, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.issue(subject="dr.t", roles=list(roles))}


def _erase(root: Any, identifier: str) -> dict[str, Any]:
    """Return the receipt of ``clinical-mlops privacy erase`` run as its own process."""
    out = subprocess.run(
        [
            *(sys.executable, "-m", "clinical_mlops", "privacy", "erase", identifier),
            *("--reason", "art. 17 request 12", "--json", "-w", str(root)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr
    receipt: dict[str, Any] = json.loads(out.stdout)
    return receipt


def test_erasure_in_another_process_reaches_the_running_service(
    fresh_world: dict[str, Any], service: Any
) -> None:
    client, predictor, auth = service
    ledger = predictor.ledger
    clinician = _bearer(auth, "clinician")
    # A patient of the world and another one, each with a prediction already served.
    first, other = fresh_world["escalated"][0], fresh_world["escalated"][1]
    psn = ledger.entry(first).subject
    assert psn is not None and ledger.entry(other).subject != psn
    identifier = identifier_of(ledger, psn)
    assert identifier is not None
    inputs = ledger.read(first).payload["inputs"]  # type: ignore[index]

    # The running service scores the patient again: their data key is now in its memory.
    scored = client.post(
        "/v1/predict",
        headers=clinician,
        json={
            "subject_id": identifier,
            "purpose": "direct_care",
            "setting": "icu",
            "features": inputs,
        },
    )
    assert scored.status_code == 200 and scored.json()["status"] == "scored", scored.text
    seq = scored.json()["audit_seq"]
    keys = {ledger.entry(s).key_id for s in (first, seq)}
    # The clinician has the case open in the console, inputs and identifier on screen.
    sign_in(client, CLINICIAN)
    page = client.get(f"/console/cases/{seq}")
    labels = [f.label for f in load_task("icu_mortality_48h").features if inputs.get(f.name)]
    assert page.status_code == 200 and "Inputs the model used" in page.text
    assert identifier in page.text and labels[0] in page.text
    token = form_token(page.text, f"/console/cases/{seq}/decision")

    receipt = _erase(fresh_world["root"], identifier)
    assert receipt["pseudonym"] == psn

    # The page a clinician reloads: within the bound it tells that the data were erased.
    deadline = time.monotonic() + PATIENCE_S
    while True:
        page = client.get(f"/console/cases/{seq}")
        if page.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert page.status_code == 410, page.text[:500]
    assert "Patient data erased" in page.text and "was erased" in page.text
    assert "Inputs the model used" not in page.text
    assert identifier not in page.text and psn not in page.text

    # Nothing more is recorded against the patient's predictions, whatever the front end.
    for body in (
        {"prediction_id": seq, "action": "override", "reason_code": "clinical-judgement"},
        {"prediction_id": first, "action": "accept"},
    ):
        r = client.post("/v1/overrides", headers=clinician, json=body)
        assert r.status_code == 410, r.text
        assert r.json()["detail"]["code"] == "SubjectErased"
        assert identifier not in r.text and psn not in r.text
    reviewer = _bearer(auth, "reviewer")
    for ids in ([seq], [other, seq]):  # one erased patient refuses the whole outcome
        r = client.post(
            "/v1/outcomes", headers=reviewer, json={"prediction_ids": ids, "outcome": 1}
        )
        assert r.status_code == 410 and r.json()["detail"]["code"] == "SubjectErased", r.text
    decided = client.post(
        f"/console/cases/{seq}/decision",
        data={"csrf_token": token, "choice": "override:clinical-judgement"},
        follow_redirects=False,
    )
    assert decided.status_code == 410 and "Nothing was recorded" in decided.text
    # A new request for the patient is refused as for anyone unknown.
    again = client.post(
        "/v1/predict",
        headers=clinician,
        json={
            "subject_id": identifier,
            "purpose": "direct_care",
            "setting": "icu",
            "features": inputs,
        },
    )
    assert again.status_code == 404 and again.json()["detail"]["code"] == "unknown_subject"

    # The running process opens none of the patient's payloads, nor their keys.
    for s in (first, seq):
        assert ledger.read(s).status == "erased"
    for key_id in keys:
        with pytest.raises(KeyNotFound):
            predictor.vault.data_key(key_id, provider=ledger.provider)
    # The ledger: after the erasure, nothing for the patient, nothing under their keys,
    # no outcome for the other patient either; only the refused request (no subject).
    with ledger.store.engine.connect() as conn:
        later = list(conn.execute(sa.select(entries).where(entries.c.seq > receipt["seq"])))
    assert [(e.type, e.subject) for e in later] == [("inference_refused", None)]
    assert not keys & {e.key_id for e in later}
    # The other patient is served as before.
    ok = client.post(
        "/v1/outcomes", headers=reviewer, json={"prediction_ids": [other], "outcome": 0}
    )
    assert ok.status_code == 201, ok.text


def test_a_patient_erased_while_their_request_is_scored_is_refused_as_unknown(
    fresh_world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure commits after the service looked the batch's patients up and before it
    sealed their records: the patient is refused as unknown, the others are served."""
    from clinical_mlops.serving import predictor as serving

    monkeypatch.setenv("CLINICAL_MLOPS_ERASURE_TTL", "0")  # look before every use
    with Predictor.open(fresh_world["ws"], site=SITE) as predictor:
        ledger = predictor.ledger
        people = []
        for seq in fresh_world["escalated"][2:4]:
            identifier = identifier_of(ledger, str(ledger.entry(seq).subject))
            assert identifier is not None
            people.append((identifier, ledger.read(seq).payload["inputs"]))  # type: ignore[index]
        erased = people[0][0]
        requests = [
            serving.PredictionRequest(
                subject_id=who, purpose="direct_care", setting="icu", features=inputs
            )
            for who, inputs in people
        ]
        first = predictor.predict_many(requests, requester="system:ehr")
        assert [r.status for r in first] == ["scored", "scored"]  # both keys now in memory
        psn = ledger.entry(first[0].audit_seq).subject  # type: ignore[arg-type]
        receipts: list[dict[str, Any]] = []
        look_up = serving.subjects_with_consents

        def looked_up_then_erased(vault: Any, *, identifiers: Any) -> Any:
            found = look_up(vault, identifiers=identifiers)
            if not receipts:
                receipts.append(_erase(fresh_world["root"], erased))
            return found

        monkeypatch.setattr(serving, "subjects_with_consents", looked_up_then_erased)
        again = predictor.predict_many(requests, requester="system:ehr")
        assert receipts and receipts[0]["pseudonym"] == psn
        assert again[0].status == "refused" and again[0].refusal["code"] == "unknown_subject"  # type: ignore[index]
        assert again[1].status == "scored"
        with ledger.store.engine.connect() as conn:
            later = list(conn.execute(sa.select(entries).where(entries.c.seq > receipts[0]["seq"])))
        assert psn not in {e.subject for e in later}
        assert {e.type for e in later} >= {"inference_refused", "inference"}
