"""Schemathesis against the live service: every check, all phases with stateful links.

Starts ``clinical-mlops serve`` as an operator would — one uvicorn process on loopback, an
HS256 secret file, an issuer (``--jwt-issuer``), an API-key file whose key declares its
sites, a rollout site — over a demo workspace, issues a token from that issuer holding
every role, and runs ``st run`` on the service's own OpenAPI document with
``--checks all`` and the phases examples, coverage, fuzzing and stateful (the document's
links chain a prediction to its override and outcome, the release list to a model card,
CDS discovery to the service and its feedback). Prints the cases, the failures and the
time taken; exits 1 when any check failed.

Run the full campaign (docs/RELIABILITY.md records its figures)::

    .venv/bin/python bench/api_fuzz.py --workspace /tmp/cm-bench-ws --max-examples 400

``tests/hardening/test_fuzz_api.py`` runs the same against the test workspace with fewer
cases on every ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

BIN = Path(sys.executable).parent
ISSUER = "https://idp.hospital.example"
#: what a request made only to fit the schema may get besides a 2xx: it is scored for a
#: patient the vault does not know (404), one without consent for the purpose (403), one
#: outside the intended use (422), a request id already served (409)
POSITIVE_STATUSES = ["2xx", "403", "404", "409", "422"]


@dataclass
class LiveService:
    """A running ``clinical-mlops serve`` and the credentials it accepts."""

    url: str
    secret: str
    api_key: str
    sites: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log: Path

    def token(self, roles: list[str], **claims: Any) -> str:
        """Return an HS256 token from the service's issuer for ``roles`` (an hour's life)."""
        now = int(time.time())
        body = {
            "sub": "fuzz",
            "aud": "clinical-mlops",
            "iss": ISSUER,
            "iat": now,
            "exp": now + 3600,
            "roles": roles,
        } | claims
        return jwt.encode(body, self.secret, algorithm="HS256")

    def rss_kib(self) -> int:
        """Return the server process's resident memory in KiB (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_service(workspace: Path, folder: Path, *, site: str = "icu-main") -> Iterator[LiveService]:
    """Run ``clinical-mlops serve`` over ``workspace`` until the block ends."""
    import httpx

    secret = secrets.token_hex(32)
    (folder / "jwt.secret").write_text(secret)
    (folder / "jwt.secret").chmod(0o600)
    key = "cmk_" + secrets.token_hex(16)
    sites = (site, "icu-annex")
    (folder / "keys.json").write_text(
        json.dumps(
            {
                "keys": [
                    {
                        "name": "ehr-interface",
                        "sha256": hashlib.sha256(key.encode()).hexdigest(),
                        "roles": ["system"],
                        "sites": list(sites),
                    }
                ]
            }
        )
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(BIN / "clinical-mlops"),
        "serve",
        "--port",
        str(port),
        "--workspace",
        str(workspace),
        "--jwt-secret-file",
        str(folder / "jwt.secret"),
        "--jwt-issuer",
        ISSUER,
        "--api-keys",
        str(folder / "keys.json"),
        "--site",
        site,
        "--base-url",
        url,
        "--no-console",
    ]
    log = folder / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ | {"PYTHONWARNINGS": "ignore"},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/cds-services", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield LiveService(url, secret, key, sites, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_schemathesis(
    service: LiveService, folder: Path, *, max_examples: int, seed: int = 7, workers: int = 1
) -> dict[str, Any]:
    """Run ``st run`` with every check against ``service``; return its figures and output."""
    from clinical_mlops.serving.auth import ROLES

    config = folder / "schemathesis.toml"
    config.write_text(
        f"[checks.positive_data_acceptance]\nexpected-statuses = {json.dumps(POSITIVE_STATUSES)}\n"
    )
    report = folder / "report"
    cmd = [
        str(BIN / "st"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{service.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--header",
        f"Authorization: Bearer {service.token(list(ROLES))}",
        # the token above is the credential; no made-up X-API-Key beside it
        "--generation-with-security-parameters",
        "false",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-dir",
        str(report),
    ]
    started = time.monotonic()
    # st keeps a cache in its working folder: the run's own folder, not the checkout
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=folder)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    figures = summary(output)
    return figures | {
        "exit_code": done.returncode,
        "seconds": round(seconds, 1),
        "output": output,
        "server_errors": output.count("Server error"),
        # the token is a credential: never printed
        "command": " ".join(
            "Authorization: Bearer <token>" if a.startswith("Authorization:") else a
            for a in cmd[1:]
        ),
    }


def summary(output: str) -> dict[str, int]:
    """Return the test-case and failure counts of an ``st run`` summary."""
    cases = re.search(r"Test cases:\s*\n?\s*(\d+) generated, (\d+) found (\d+) unique", output)
    plain = re.search(r"Test cases:\s*\n?\s*(\d+) generated, (\d+) passed", output)
    if cases:
        generated, unique_failures = int(cases.group(1)), int(cases.group(3))
    elif plain:
        generated, unique_failures = int(plain.group(1)), 0
    else:
        generated, unique_failures = 0, -1
    return {"cases": generated, "unique_failures": unique_failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=None, help="demo workspace (made if missing)")
    ap.add_argument("--max-examples", type=int, default=400, help="cases per operation and phase")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _workspace import ensure_workspace

    workspace = args.workspace or Path(tempfile.gettempdir()) / "cm-bench-ws"
    ensure_workspace(workspace)
    folder = Path(tempfile.mkdtemp(prefix="cm-api-fuzz-"))
    try:
        with live_service(workspace, folder) as service:
            figures = run_schemathesis(
                service,
                folder,
                max_examples=args.max_examples,
                seed=args.seed,
                workers=args.workers,
            )
        print(figures.pop("output")[-6000:])
        figures |= {
            "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
            "date": datetime.now(UTC).date().isoformat(),
        }
        print(json.dumps(figures, indent=1))
        sys.exit(0 if figures["exit_code"] == 0 and figures["unique_failures"] == 0 else 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
