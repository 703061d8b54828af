"""Health probes: liveness and readiness open to container probes, saying nothing sensitive;
the detailed view for operators behind any role."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.http.app import create_app
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from serving.test_serve import ROOT, _free_port, _self_signed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

READY = {
    "status": "ready",
    "checks": {"ledger": "ok", "identity": "ok", "keys": "ok", "metadata": "ok", "release": "ok"},
}


@pytest.fixture(scope="module")
def probes(served: dict[str, Any]) -> Iterator[dict[str, Any]]:
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth))
    yield {"client": client, "auth": auth} | served
    predictor.close()


def test_liveness_and_readiness_answer_without_credentials(probes: dict[str, Any]) -> None:
    c = probes["client"]
    live = c.get("/healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json() == READY
    for body in (live.text, ready.text):
        # no workspace path, database URL, release or patient data for an anonymous caller
        for secret in (str(probes["ws"].root), "sqlite", probes["release"], "MRN-", "psn_"):
            assert secret not in body


def test_the_detailed_health_view_needs_a_role(probes: dict[str, Any]) -> None:
    c = probes["client"]
    assert c.get("/v1/health").status_code == 401
    token = probes["auth"].issue(subject="ops", roles=["auditor"])
    detail = c.get("/v1/health", headers={"Authorization": f"Bearer {token}"})
    assert detail.status_code == 200
    assert detail.json() == READY | {
        "task": "icu_mortality_48h",
        "site": "demo-icu-north",
        "release": probes["release"],
        "release_status": "approved",
        "mode": "pilot",
    }


def _healthcheck(port: int) -> list[str]:
    """Return the Dockerfile's HEALTHCHECK command, pointed at ``port`` and this interpreter."""
    lines = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines()
    (line,) = [line for line in lines if line.startswith("HEALTHCHECK ")]
    command = json.loads(line.split(" CMD ", 1)[1])
    assert command[0] == "python" and "8443" in command[-1]
    return [sys.executable, *command[1:-1], command[-1].replace("8443", str(port))]


def test_the_container_health_check_asks_readiness(served: dict[str, Any], tmp_path: Path) -> None:
    """The image's health check fails while the ledger is gone and passes once it is back."""
    ws = tmp_path / "ws"
    shutil.copytree(served["ws"].root, ws)
    crt, key = _self_signed(tmp_path)
    secret = tmp_path / "jwt.secret"
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clinical_mlops",
                "serve",
                "--port",
                str(port),
                "-w",
                str(ws),
                "--jwt-secret-file",
                str(secret),
                "--tls-cert",
                str(crt),
                "--tls-key",
                str(key),
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ | {"PYTHONWARNINGS": "ignore"},
        )
    probe = _healthcheck(port)

    def healthy() -> bool:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    try:
        deadline = time.monotonic() + 90
        while not healthy():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        kept = tmp_path / "kept.db"
        os.link(ws / "ledger.db", kept)
        (ws / "ledger.db").unlink()
        assert not healthy()  # the process answers, but cannot record: not ready
        os.link(kept, ws / "ledger.db")
        assert healthy()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
