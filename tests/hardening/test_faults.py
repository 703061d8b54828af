"""Fault injection: what the service and the ledger do when the ground gives way.

Each fault is produced by the real component failing, not by a mocked exception:
SQLite opening a file in a missing folder, psycopg connecting to a closed port,
SQLite in ``query_only`` mode (read-only), SQLite at its ``max_page_count`` (full),
the kernel's ``/dev/full`` (ENOSPC) under the checkpoint log, SIGKILL during a batch,
a clock set back, a key file deleted after rotation. The documented behaviour is
in docs/RELIABILITY.md; every test here checks it.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.errors import ClockBehindLedger, KeyNotFound, KeyProviderUnavailable
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.privacy.keys import LocalKeyring
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import ROLES, AuthConfig
from clinical_mlops.workspace import Workspace
from serving.test_api import one

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

WRITER = Path(__file__).with_name("batch_writer.py")


def copy_workspace(served: dict[str, Any], root: Path) -> Workspace:
    """Return a private copy of the served workspace (ledger, vault, registry, keys, bundles)."""
    shutil.copytree(served["ws"].root, root)
    return Workspace.open(root)


@pytest.fixture
def live(served: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A service over a private copy of the served workspace, with an all-roles token."""
    ws = copy_workspace(served, tmp_path / "ws")
    predictor = Predictor.open(ws, status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    headers = {"Authorization": "Bearer " + auth.issue(subject="dr.f", roles=list(ROLES))}
    client = TestClient(create_app(predictor, auth), raise_server_exceptions=False)
    yield {"ws": ws, "predictor": predictor, "client": client, "headers": headers} | {
        "rows": served["rows"]
    }
    predictor.close()


def inference_ids(ledger: Ledger) -> list[str]:
    """Return the request id of every inference record, in ledger order."""
    out = []
    for seq in range(ledger.size()):
        if ledger.entry(seq).type == "inference":
            payload = ledger.read(seq).payload
            assert payload is not None
            out.append(str(payload["request_id"]))
    return out


def assert_fails_closed(response: Any, code: str) -> dict[str, Any]:
    """The request failed with 503, a clear body, and nothing clinical in it."""
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and detail["message"]
    for clinical in ("probability", "conformal_set", "risk", "contributions", "fallback"):
        assert clinical not in response.text
    return dict(detail)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket closes


BROKEN_URLS = {
    "sqlite-missing-folder": lambda: "sqlite:////nonexistent-ledger-folder/ledger.db",
    "postgres-refused": lambda: (
        f"postgresql+psycopg://ledger@127.0.0.1:{closed_port()}/ledger?connect_timeout=2"
    ),
}


@pytest.mark.parametrize("where", sorted(BROKEN_URLS))
def test_ledger_unreachable_fails_closed_and_recovers(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    client, headers, ledger = live["client"], live["headers"], live["predictor"].ledger
    first = client.post("/v1/predict", headers=headers, json=one(live, 30))
    assert first.status_code == 200
    before = ledger.size()
    working = ledger.store.engine
    monkeypatch.setattr(ledger.store, "engine", sa.create_engine(BROKEN_URLS[where]()))
    single = client.post("/v1/predict", headers=headers, json=one(live, 31, request_id="f-1"))
    detail = assert_fails_closed(single, "StoreUnavailable")
    assert "nothing of it was written" in detail["message"]
    batch = {"items": [one(live, 32), one(live, 33)]}
    assert_fails_closed(client.post("/v1/predict", headers=headers, json=batch), "StoreUnavailable")
    override = {"prediction_id": first.json()["audit_seq"], "action": "accept"}
    assert client.post("/v1/overrides", headers=headers, json=override).status_code == 503
    monkeypatch.setattr(ledger.store, "engine", working)
    assert ledger.size() == before  # nothing was written while it was down
    again = client.post("/v1/predict", headers=headers, json=one(live, 31, request_id="f-1"))
    assert again.status_code == 200 and again.json()["audit_seq"] == before
    assert inference_ids(ledger).count("f-1") == 1
    assert ledger.verify().ok


def test_ledger_turning_read_only_mid_request_fails_closed(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers, predictor = live["client"], live["headers"], live["predictor"]
    ledger = predictor.ledger
    working = ledger.store.engine
    read_only = sa.create_engine(working.url)
    sa.event.listen(
        read_only, "connect", lambda c, _: c.execute("PRAGMA query_only=ON"), insert=True
    )
    scorer = predictor.scorer(predictor.default)
    score = scorer.score

    def score_then_lose_write_access(*args: Any, **kwargs: Any) -> Any:
        out = score(*args, **kwargs)  # the request is scored; then the database turns read-only
        monkeypatch.setattr(ledger.store, "engine", read_only)
        return out

    monkeypatch.setattr(scorer, "score", score_then_lose_write_access)
    before = ledger.size()
    response = client.post("/v1/predict", headers=headers, json=one(live, 34, request_id="ro"))
    detail = assert_fails_closed(response, "StoreUnavailable")
    assert "readonly" in detail["message"]
    monkeypatch.setattr(ledger.store, "engine", working)
    monkeypatch.setattr(scorer, "score", score)
    assert ledger.size() == before
    retry = client.post("/v1/predict", headers=headers, json=one(live, 34, request_id="ro"))
    assert retry.status_code == 200 and ledger.verify().ok


def test_disk_full_fails_closed_with_nothing_written(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers, ledger = live["client"], live["headers"], live["predictor"].ledger
    working = ledger.store.engine
    with working.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    full = sa.create_engine(working.url)
    # SQLite's own "database or disk is full" (SQLITE_FULL): the file may not grow any more
    sa.event.listen(
        full, "connect", lambda c, _: c.execute(f"PRAGMA max_page_count={pages}"), insert=True
    )
    monkeypatch.setattr(ledger.store, "engine", full)
    before = ledger.size()
    batch = {"items": [one(live, 40 + i, request_id=f"full-{i}") for i in range(40)]}
    detail = assert_fails_closed(
        client.post("/v1/predict", headers=headers, json=batch), "StoreUnavailable"
    )
    assert "full" in detail["message"]
    monkeypatch.setattr(ledger.store, "engine", working)
    assert ledger.size() == before
    assert not [i for i in inference_ids(ledger) if i.startswith("full-")]
    done = client.post("/v1/predict", headers=headers, json=batch)
    assert done.status_code == 200 and len(done.json()["results"]) == 40
    assert ledger.verify().ok


def test_checkpoint_log_on_a_full_disk_defers_the_checkpoint_not_the_answer(
    live: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client, headers, ledger = live["client"], live["headers"], live["predictor"].ledger
    log = ledger.checkpoint_log
    assert log is not None
    logged_before = len(log.read()[0])
    # The kernel's /dev/full answers every write with ENOSPC.
    monkeypatch.setattr(ledger, "checkpoint_log", CheckpointLog(Path("/dev/full")))
    monkeypatch.setattr(ledger, "checkpoint_every", 1)
    response = client.post("/v1/predict", headers=headers, json=one(live, 50, request_id="cp"))
    assert response.status_code == 200  # committed, so answered: the record exists
    assert "checkpoint deferred" in caplog.text and "No space left" in caplog.text
    assert ledger.read(response.json()["audit_seq"]).payload["request_id"] == "cp"  # type: ignore[index]
    monkeypatch.setattr(ledger, "checkpoint_log", log)
    client.post("/v1/predict", headers=headers, json=one(live, 51))
    assert len(log.read()[0]) > logged_before  # retried on the next append, once space is back
    assert ledger.verify().ok


def test_process_killed_during_batches_leaves_no_partial_batch(
    served: dict[str, Any], tmp_path: Path
) -> None:
    ws = copy_workspace(served, tmp_path / "ws")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(served["rows"][:60]), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(10)
    acked: dict[str, int] = {}
    kills = 0
    for trial in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(ws.root), str(rows), f"t{trial}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else ""
        assert proc.stdout.readline().startswith(b"ack ")  # at least one batch went through
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        for line in out.decode().split("\n")[:-1]:  # the last piece may be torn
            _, batch, size = line.split(" ")
            acked[batch] = int(size)
    with Ledger.open(ws) as ledger:
        assert ledger.verify(thorough=True).ok
        found: dict[str, int] = {}
        for rid in inference_ids(ledger):
            if re.fullmatch(r"t\d-b\d+-\d+", rid):
                batch = rid.rsplit("-", 1)[0]
                found[batch] = found.get(batch, 0) + 1
    assert kills == 3 and len(acked) >= 3
    for batch, n in acked.items():
        assert found.get(batch) == n  # every acknowledged batch, complete
    assert set(found.values()) == {25}  # and no batch partly written


def test_clock_going_backwards_is_refused_not_recorded(tmp_path: Path) -> None:
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    clock = FixedClock(t0)
    ledger = Ledger.open(Workspace.open(tmp_path / "ws"), clock=clock)
    try:
        ledger.append(type="alert", actor="t", payload={"kind": "k", "message": "at t0"})
        clock.set(t0 - timedelta(hours=1))  # e.g. an NTP step or a wrong manual setting
        size = ledger.size()
        with pytest.raises(ClockBehindLedger, match=re.escape(utc_iso(t0))):
            ledger.append(type="alert", actor="t", payload={"kind": "k", "message": "behind"})
        assert ledger.size() == size
        clock.set(t0)  # the same instant is allowed: times never decrease
        ledger.append(type="alert", actor="t", payload={"kind": "k", "message": "same"})
        clock.advance(timedelta(seconds=1))
        ledger.append(type="alert", actor="t", payload={"kind": "k", "message": "after"})
        times = [ledger.entry(s).time for s in range(ledger.size())]
        assert times == sorted(times)
        assert ledger.verify().ok
    finally:
        ledger.close()


def test_clock_behind_the_ledger_makes_the_service_fail_closed(served: dict[str, Any]) -> None:
    behind = FixedClock(datetime.now(UTC) - timedelta(days=1))
    with Predictor.open(served["ws"], clock=behind, status_ttl=0.0) as predictor:
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        headers = {"Authorization": "Bearer " + auth.issue(subject="dr.c", roles=["clinician"])}
        client = TestClient(create_app(predictor, auth), raise_server_exceptions=False)
        before = predictor.ledger.size()
        request = {
            "subject_id": "MRN-60",
            "purpose": "direct_care",
            "setting": "icu",
            "features": served["rows"][60],
        }
        response = client.post("/v1/predict", headers=headers, json=request)
        detail = assert_fails_closed(response, "ClockBehindLedger")
        assert "NTP" in detail["message"]
        assert predictor.ledger.size() == before


def test_a_key_missing_after_rotation_names_the_key(served: dict[str, Any], tmp_path: Path) -> None:
    ws = copy_workspace(served, tmp_path / "ws")
    runner = CliRunner()
    at = ["-w", str(ws.root)]
    with Ledger.open(ws) as ledger:
        subject = ledger.vault.pseudonym_for("MRN-70", create=False)
        old = ledger.append(
            type="review",
            actor="t",
            subject=subject,
            payload={"model_version": "m", "outcome": "o"},
        )
    rotated = runner.invoke(cli, ["keys", "rotate", "--purpose", "wrap", "--json", *at])
    assert rotated.exit_code == 0, rotated.output
    with Ledger.open(ws) as ledger:
        rotation = ledger.read(ledger.size() - 1).entry
        old_wrap = json.loads(rotation.public)["old_key_id"]
        new = ledger.append(
            type="review",
            actor="t",
            subject=subject,
            payload={"model_version": "m", "outcome": "n"},
        )
        assert ledger.read(old.seq).payload == {"model_version": "m", "outcome": "o"}
        assert ledger.read(new.seq).payload == {"model_version": "m", "outcome": "n"}
    (ws.root / "keys" / f"{old_wrap}.key").unlink()  # the old key was lost
    shown = runner.invoke(cli, ["audit", "show", str(old.seq), "--json", *at])
    assert shown.exit_code != 0
    assert isinstance(shown.exception, KeyNotFound)
    message = str(shown.exception)
    assert old_wrap in message and "restore it from the key backup" in message
    fresh = runner.invoke(cli, ["audit", "show", str(new.seq), "--json", *at])
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["payload"]["outcome"] == "n"
    verified = runner.invoke(cli, ["audit", "verify", "--json", *at])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"]  # no wrap key needed


def test_a_lost_signing_key_or_index_is_named(served: dict[str, Any], tmp_path: Path) -> None:
    ws = copy_workspace(served, tmp_path / "ws")
    runner = CliRunner()
    at = ["-w", str(ws.root)]
    keyring = LocalKeyring(ws.root / "keys")
    old_sign = keyring.active_key_id("sign")
    assert runner.invoke(cli, ["keys", "rotate", "--purpose", "sign", *at]).exit_code == 0
    (ws.root / "keys" / f"{old_sign}.key").unlink()
    verified = runner.invoke(cli, ["audit", "verify", "--json", *at])
    assert verified.exit_code != 0
    assert isinstance(verified.exception, KeyNotFound) and old_sign in str(verified.exception)
    index = ws.root / "keys" / "keyring.json"
    index.write_text(json.dumps({"keys": {}, "active": []}), encoding="utf-8")
    with pytest.raises(KeyProviderUnavailable, match="keyring.json is not a valid keyring index"):
        LocalKeyring(ws.root / "keys").active_key_id("wrap")
