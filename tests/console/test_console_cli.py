"""``clinical-mlops console``: users (password never an argument), the console run alone,
and the console mounted at /console by ``clinical-mlops serve``."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from clinical_mlops.cli import app
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.workspace import Workspace


def test_user_add_reads_the_password_from_stdin_and_stores_a_hash(tmp_path: Path) -> None:
    runner = CliRunner()
    ws = tmp_path / "ws"
    password = "a password read from stdin"
    r = runner.invoke(
        app,
        [
            "console",
            "user",
            "add",
            "dr.z",
            "--role",
            "clinician",
            "--role",
            "reviewer",
            "--password-stdin",
            "-w",
            str(ws),
            "--json",
        ],
        input=password + "\n",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["roles"] == ["clinician", "reviewer"]
    assert password not in r.output
    users = UserDirectory.open(Workspace.open(ws))
    assert users.authenticate("dr.z", password).name == "dr.z"
    assert password not in users.path.read_text()
    assert (ws / "console" / "session-key.json").exists()
    r = runner.invoke(app, ["console", "user", "list", "-w", str(ws), "--json"])
    assert json.loads(r.stdout)["users"][0]["name"] == "dr.z"
    assert "scrypt" not in r.stdout
    r = runner.invoke(
        app,
        [
            "console",
            "user",
            "add",
            "dr.y",
            "--role",
            "clinician",
            "--password-stdin",
            "-w",
            str(ws),
        ],
        input="short\n",
    )
    assert r.exit_code != 0
    r = runner.invoke(app, ["console", "user", "remove", "dr.z", "-w", str(ws)])
    assert r.exit_code == 0 and users.list() == []


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 120
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)


@pytest.mark.slow
def test_console_alone_and_mounted_by_serve(world: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "jwt.secret"
    secret.write_text(secrets.token_hex(32))
    serve_port, console_port = _port(), _port()
    root = str(world["root"])
    commands = {
        "serve": [
            sys.executable,
            "-m",
            "clinical_mlops",
            "serve",
            "--port",
            str(serve_port),
            "-w",
            root,
            "--jwt-secret-file",
            str(secret),
        ],
        "console": [
            sys.executable,
            "-m",
            "clinical_mlops",
            "console",
            "--port",
            str(console_port),
            "-w",
            root,
        ],
    }
    procs = {}
    for name, cmd in commands.items():
        with (tmp_path / f"{name}.log").open("wb") as sink:
            procs[name] = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env=os.environ | {"PYTHONWARNINGS": "ignore"},
            )
    try:
        for name, port in (("serve", serve_port), ("console", console_port)):
            base = f"http://127.0.0.1:{port}"
            r = _wait(f"{base}/console/login", procs[name], tmp_path / f"{name}.log")
            assert r.status_code == 200 and "Sign in" in r.text
            assert "cm_login=" in r.headers["set-cookie"]
            r = httpx.get(f"{base}/console/queue")
            assert r.status_code == 303
            assert r.headers["location"].startswith("/console/login?next=%2Fconsole%2Fqueue")
        assert httpx.get(f"http://127.0.0.1:{serve_port}/v1/models").status_code == 401
        r = httpx.get(f"http://127.0.0.1:{console_port}/")
        assert r.status_code == 307 and r.headers["location"] == "/console/"
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
