"""A real FHIR R4 server on loopback for the tests (imported by tests/conftest.py).

``tests/fhir_server/server.js`` serves Medplum's FHIR router (``@medplum/fhir-router``,
pinned in ``tests/fhir_server/package-lock.json``) over its in-memory repository: FHIR
REST read, search with the standard search parameters (``Observation?patient=...&code=
a,b&date=ge...``), paging links, update and transaction, behind a bearer token. The
Makefile's ``sysdeps`` installs Node.js and npm, and its ``fhir-server`` step runs
``npm ci`` there. A session fixture starts it on a free loopback port; resources are
loaded through its REST API. When Node.js or the packages are missing the tests that
need it FAIL, never skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["FhirServer", "fhir_server"]

HERE = Path(__file__).parent / "fhir_server"


@dataclass(frozen=True)
class FhirServer:
    """A running loopback FHIR server: its base URL and the bearer token it accepts."""

    base: str
    token: str

    def put(self, resources: Sequence[dict[str, Any]]) -> None:
        """Store ``resources`` (each with its id) in one transaction through the REST API."""
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in resources
            ],
        }
        r = httpx.post(
            self.base,
            json=bundle,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        r.raise_for_status()
        failed = [
            e["response"] for e in r.json()["entry"] if not e["response"]["status"].startswith("2")
        ]
        assert not failed, failed

    def get(self, path: str) -> dict[str, Any]:
        """Return the JSON the server answers to GET ``path`` (relative to the base)."""
        r = httpx.get(
            f"{self.base}/{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """Yield a fresh FHIR server on 127.0.0.1 (session-wide), stopped at the end."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.fail(
            "the test FHIR server needs Node.js and its pinned packages; run `make sysdeps "
            "fhir-server` (apt-get install nodejs npm; npm ci in tests/fhir_server). These "
            "tests never skip."
        )
    token = secrets.token_urlsafe(24)
    proc = subprocess.Popen(
        [node, str(HERE / "server.js")],
        cwd=HERE,
        env={"PATH": os.environ.get("PATH", ""), "FHIR_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            pytest.fail(f"the test FHIR server did not start: {proc.stderr.read()[-2000:]}")
        yield FhirServer(base=json.loads(line)["base"], token=token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
