"""Stores failing under a running service, and coming back: fail closed, say which, recover.

Each fault is real: the ledger file unlinked while the service holds it open (SQLite goes
on writing to the unlinked file), a service started on a workspace whose ledger is gone or
empty, SQLite connections opened while the database was read-only (``query_only``, which is
what a file SQLite cannot write gives: the connection stays read-only for good), and a
metadata database that cannot be opened. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.errors import LedgerNotFound
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger, record
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import ROLES, AuthConfig
from clinical_mlops.workspace import Workspace
from hardening.test_faults import (
    assert_fails_closed,
    copy_workspace,
    inference_ids,
    live,  # noqa: F401
)
from serving.test_api import one

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

STORE_FILES = ("ledger.db", "ledger.db-wal", "ledger.db-shm")


def checks(client: Any) -> tuple[int, dict[str, str]]:
    """Return the readiness status code and its per-component checks, asked without credentials."""
    response = client.get("/readyz")
    body = response.json()
    assert set(body) == {"status", "checks"}
    assert body["status"] == ("ready" if response.status_code == 200 else "not_ready")
    return response.status_code, body["checks"]


def test_the_ledger_removed_while_serving_fails_closed_and_is_not_recreated(
    live: dict[str, Any],  # noqa: F811
) -> None:
    client, headers, ws = live["client"], live["headers"], live["ws"]
    ledger = live["predictor"].ledger
    path = ws.root / "ledger.db"
    first = client.post("/v1/predict", headers=headers, json=one(live, 60, request_id="before"))
    assert first.status_code == 200
    size = ledger.size()
    kept = ws.root / "kept.db"  # the file lives on under another name, as after a `mv`
    os.link(path, kept)
    path.unlink()
    for i in range(8):  # the attack report: 8 predictions acknowledged with seqs nowhere
        response = client.post(
            "/v1/predict", headers=headers, json=one(live, 61 + i, request_id=f"gone-{i}")
        )
        assert_fails_closed(response, "StoreUnavailable")
    batch = {"items": [one(live, 70, request_id="gone-b1"), one(live, 71, request_id="gone-b2")]}
    assert_fails_closed(client.post("/v1/predict", headers=headers, json=batch), "StoreUnavailable")
    assert not path.exists()  # nothing made an empty ledger in its place
    assert client.get("/healthz").json() == {"status": "ok"}  # the process itself is alive
    code, state = checks(client)
    assert code == 503 and state["ledger"] != "ok"
    assert {k: v for k, v in state.items() if k != "ledger"} == {
        "identity": "ok",
        "keys": "ok",
        "metadata": "ok",
        "release": "ok",
    }
    assert str(ws.root) not in client.get("/readyz").text
    # The file is put back: the service carries on by itself, no restart.
    os.link(kept, path)
    kept.unlink()
    assert checks(client) == (
        200,
        dict.fromkeys(("ledger", "identity", "keys", "metadata", "release"), "ok"),
    )
    assert ledger.size() == size  # nothing was written while it was gone
    again = client.post("/v1/predict", headers=headers, json=one(live, 61, request_id="gone-0"))
    assert again.status_code == 200 and again.json()["audit_seq"] == size
    ids = inference_ids(ledger)
    assert ids.count("before") == 1 and ids.count("gone-0") == 1
    assert not [i for i in ids if i.startswith("gone-") and i != "gone-0"]
    assert ledger.verify().ok


def _move(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    for name in STORE_FILES:
        if (src / name).exists():
            os.replace(src / name, dst / name)


def test_a_service_never_starts_on_a_ledger_its_checkpoint_log_says_is_lost(
    served: dict[str, Any], tmp_path: Path
) -> None:
    ws = copy_workspace(served, tmp_path / "ws")
    path, log = ws.root / "ledger.db", ws.root / "ledger-checkpoints.jsonl"
    aside = tmp_path / "aside"
    _move(ws.root, aside)  # the ledger is gone; its checkpoint log is not
    for opening in (
        lambda: Predictor.open(ws),
        lambda: Ledger.open(ws),  # even where creating one is allowed
        lambda: record(ws, type="training_run", actor="pipeline", payload={"run_id": "x"}),
    ):
        with pytest.raises(LedgerNotFound) as refused:
            opening()
        message = " ".join(str(refused.value).split())
        assert str(path) in message and str(log) in message
        assert "docs/OPERATIONS.md" in message and "nothing was created" in message
        assert not path.exists()
    # An empty ledger in its place (made by mistake, or by a service of the past) is refused too.
    LedgerStore.open(f"sqlite:///{path}").close()
    with pytest.raises(LedgerNotFound, match="missing or empty"):
        Predictor.open(ws)
    for name in STORE_FILES:
        (ws.root / name).unlink(missing_ok=True)
    _move(aside, ws.root)  # restored: the service starts and scores
    with Predictor.open(ws) as predictor:
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        token = auth.issue(subject="dr.r", roles=["clinician"])
        client = TestClient(create_app(predictor, auth))
        scored = client.post(
            "/v1/predict",
            headers={"Authorization": f"Bearer {token}"},
            json=one(served, 5, request_id="restored"),
        )
        assert scored.status_code == 200
        assert predictor.ledger.verify().ok


@pytest.fixture
def read_only_while() -> Iterator[dict[str, Any]]:
    """While ``state["files"]`` names a database file, SQLite connections opened to it are
    read-only (``query_only``), as when SQLite opens a file it cannot write."""
    state: dict[str, Any] = {"files": set()}

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            file = dbapi_conn.execute("PRAGMA database_list").fetchone()[2]
            if file in state["files"]:
                dbapi_conn.execute("PRAGMA query_only=ON")

    sa.event.listen(sa.engine.Engine, "connect", on_connect)
    try:
        yield state
    finally:
        sa.event.remove(sa.engine.Engine, "connect", on_connect)


@pytest.mark.parametrize("when", ["at start", "while running"])
@pytest.mark.parametrize("store", ["ledger", "identity"])
def test_a_store_read_only_then_writable_again_recovers_without_a_restart(
    served: dict[str, Any],
    tmp_path: Path,
    read_only_while: dict[str, Any],
    store: str,
    when: str,
) -> None:
    ws = copy_workspace(served, tmp_path / "ws")
    unwritable = {str((ws.root / f"{store}.db").resolve())}
    if when == "at start":
        read_only_while["files"] = unwritable
    predictor = Predictor.open(ws, status_ttl=0.0)
    try:
        if when == "while running":
            # Connections opened from now on (after a reconnect, or as the pool grows under
            # load) find the store read-only.
            read_only_while["files"] = unwritable
            (predictor.ledger.store if store == "ledger" else predictor.vault).engine.dispose()
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        headers = {"Authorization": "Bearer " + auth.issue(subject="dr.f", roles=list(ROLES))}
        client = TestClient(create_app(predictor, auth), raise_server_exceptions=False)
        body = one(served, 80, request_id="ro-1")
        engine = predictor.ledger.store.engine if store == "ledger" else predictor.vault.engine
        if store == "ledger":
            for _ in range(3):
                detail = assert_fails_closed(
                    client.post("/v1/predict", headers=headers, json=body), "StoreUnavailable"
                )
                assert "readonly" in detail["message"]
            read_only_while["files"] = set()  # writable again (permissions fixed, remounted)
            response = client.post("/v1/predict", headers=headers, json=body)
            assert response.status_code == 200, response.text  # by itself, no restart
        # The probes through an outage: liveness stays up, readiness names the store, then
        # clears once it is writable again.
        read_only_while["files"] = unwritable
        engine.dispose()
        assert client.get("/healthz").status_code == 200
        code, state = checks(client)
        assert code == 503 and state[store] == "read-only"
        assert all(v == "ok" for k, v in state.items() if k != store)
        read_only_while["files"] = set()
        assert checks(client) == (
            200,
            dict.fromkeys(("ledger", "identity", "keys", "metadata", "release"), "ok"),
        )
        if store == "identity":
            assert client.post("/v1/predict", headers=headers, json=body).status_code == 200
        assert inference_ids(predictor.ledger).count("ro-1") == 1
        assert predictor.ledger.verify().ok
    finally:
        predictor.close()


def test_readiness_names_unreadable_metadata(
    live: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, registry = live["client"], live["predictor"].registry
    working = registry.engine
    monkeypatch.setattr(
        registry, "engine", sa.create_engine("sqlite:////nonexistent-meta-folder/meta.db")
    )
    code, state = checks(client)
    assert code == 503 and state["metadata"] == "cannot be read"
    assert state["ledger"] == state["identity"] == "ok" and state["release"] != "ok"
    monkeypatch.setattr(registry, "engine", working)
    assert checks(client)[0] == 200


def test_a_workspace_without_a_checkpoint_log_still_makes_its_first_ledger(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "new")
    receipt = record(ws, type="training_run", actor="pipeline", payload={"run_id": "first"})
    assert receipt.seq == 0 and (ws.root / "ledger.db").exists()


def test_an_override_of_a_damaged_prediction_record_is_refused_not_built_on(
    live: dict[str, Any],  # noqa: F811
) -> None:
    client, headers, ws = live["client"], live["headers"], live["ws"]
    ledger = live["predictor"].ledger
    scored = client.post("/v1/predict", headers=headers, json=one(live, 90, request_id="dmg"))
    seq = scored.json()["audit_seq"]
    with sqlite3.connect(ws.root / "ledger.db") as db:  # its payload re-stored as TEXT
        db.execute(f"UPDATE ledger_entries SET payload = CAST(payload AS TEXT) WHERE seq = {seq}")
    size = ledger.size()
    override = {"prediction_id": seq, "action": "accept"}
    response = client.post("/v1/overrides", headers=headers, json=override)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert (
        detail["code"] == "LedgerCorrupted"
        and f"ledger entry {seq} is damaged" in detail["message"]
    )
    assert "payload is stored as text" in detail["message"]
    assert ledger.size() == size  # nothing recorded
    assert client.get("/healthz").status_code == 200
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == seq
