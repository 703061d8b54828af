"""``clinical-mlops serve`` on loopback with TLS 1.3, and the container recipe."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / "tls.crt", folder / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_tls13_on_loopback(served: dict[str, Any], tmp_path: Path) -> None:
    crt, key = _self_signed(tmp_path)
    secret = tmp_path / "jwt.secret"
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "clinical_mlops",
        "serve",
        "--port",
        str(port),
        "-w",
        str(served["ws"].root),
        "--jwt-secret-file",
        str(secret),
        "--tls-cert",
        str(crt),
        "--tls-key",
        str(key),
    ]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ | {"PYTHONWARNINGS": "ignore"},
        )
    try:
        ctx = ssl.create_default_context(cafile=str(crt))
        ctx.check_hostname = False
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/cds-services", verify=ctx, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert r.status_code == 200 and r.json()["services"][0]["hook"] == "patient-view"
        assert httpx.get(f"https://127.0.0.1:{port}/v1/models", verify=ctx).status_code == 401
        old = ssl.create_default_context(cafile=str(crt))
        old.check_hostname = False
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/cds-services", verify=old, timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_refuses_to_start_without_a_servable_release(workspace, tmp_path: Path) -> None:
    secret = tmp_path / "jwt.secret"
    secret.write_text(secrets.token_hex(32))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinical_mlops",
            "serve",
            "-w",
            str(workspace.root),
            "--jwt-secret-file",
            str(secret),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 2 and "no active approved release" in " ".join(out.stderr.split())


def test_dockerfile_runs_non_root_and_read_only() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and all(u.split(":")[0] not in ("root", "0") for u in users)
    assert text.splitlines()[-1] and "--read-only" in text and "--cap-drop ALL" in text
    assert "--tls-cert" in text and "apt-get" not in text and "curl" not in text
    assert "ADD " not in text and ":latest" not in text
    # dependencies come from the hashed release lock, which covers the console serve mounts
    assert "--require-hashes -r requirements/lock.txt" in text and "--no-deps" in text
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    assert all(f"\n{pkg}==" in lock for pkg in ("itsdangerous", "python-multipart", "uvicorn"))


def test_auth_config_errors_name_the_file_and_what_is_expected(tmp_path: Path) -> None:
    from clinical_mlops.errors import ServiceConfigInvalid
    from clinical_mlops.serving.auth import AuthConfig

    with pytest.raises(ServiceConfigInvalid, match="--jwt-secret-file"):
        AuthConfig.from_files()
    secret = tmp_path / "secret"
    secret.write_text(secrets.token_hex(32))
    keys = tmp_path / "keys.json"
    for body, expected in (
        ("not json", "expected JSON"),
        ('{"keys": [{"name": "ehr"}]}', r"keys\[0\] must be an object with sha256, name, roles"),
        ('{"keys": [{"name": "ehr", "sha256": "ab", "roles": ["root"]}]}', r"keys\[0\]\.roles"),
        ('{"keys": [{"name": "ehr", "sha256": "ab", "roles": [], "sites": "a"}]}', r"\.sites"),
        ('{"keys": [{"name": "ehr", "sha256": "ab", "roles": [], "sites": ["*"]}]}', "wildcard"),
        ('{"keys": [{"name": "ehr", "sha256": "ab", "roles": [], "sites": [""]}]}', "non-empty"),
    ):
        keys.write_text(body)
        with pytest.raises(ServiceConfigInvalid, match=expected) as exc:
            AuthConfig.from_files(secret_file=secret, api_keys_file=keys)
        assert str(keys) in str(exc.value)
