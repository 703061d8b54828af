"""The Transit key provider against a live OpenBao (R-P2): data keys wrapped and unwrapped on
the server, signatures made there, key material never readable, rotation, a revoked token,
and the ledger and its checkpoints signed in Transit verifying with ``audit verify``."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path

import hvac.exceptions
import pytest

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.errors import KeyProviderUnavailable, WrongKey
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.keys import provider_for_workspace
from clinical_mlops.workspace import Workspace
from openbao_server import SIGN_KEY, WRAP_KEY, OpenBao


def audit_verify(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object], str]:
    """Return (exit code, JSON report, all output) of ``clinical-mlops audit verify --json``."""
    monkeypatch.setattr(
        sys, "argv", ["clinical-mlops", "audit", "verify", "--json", "-w", str(ws.root)]
    )
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    try:
        report = json.loads(out.out)
    except ValueError:
        report = {}
    return code, report, out.out + out.err


def use_transit(
    monkeypatch: pytest.MonkeyPatch, server: OpenBao, token: str, tmp_path: Path
) -> Path:
    """Point the workspace setting at ``server``; the token is given in a 0600 file."""
    token_file = tmp_path / "bao-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, token.encode() + b"\n")
    os.close(fd)
    monkeypatch.setenv("CLINICAL_MLOPS_KEY_PROVIDER", "transit")
    monkeypatch.setenv("BAO_ADDR", server.url)
    monkeypatch.setenv("CLINICAL_MLOPS_VAULT_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    return token_file


def test_data_keys_are_wrapped_and_unwrapped_on_the_server(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    use_transit(monkeypatch, openbao, openbao.product_token(), tmp_path)
    provider = provider_for_workspace(Workspace.open(tmp_path / "ws"))
    data_key = os.urandom(32)
    kid, wrapped = provider.wrap(data_key, aad=b"owner-1")
    assert kid == f"{WRAP_KEY}:v1" == provider.active_key_id("wrap")
    for form in (data_key, data_key.hex().encode(), base64.b64encode(data_key)):
        assert form not in wrapped
    assert wrapped.startswith(b"vault:v1:")
    assert provider.unwrap(kid, wrapped, aad=b"owner-1") == data_key
    with pytest.raises(WrongKey, match="does not open"):
        provider.unwrap(kid, wrapped, aad=b"owner-2")  # bound to its associated data
    # The server decrypted it: the same ciphertext opens through the operator's own client.
    opened = openbao.root().write_data(
        f"transit/decrypt/{WRAP_KEY}",
        data={
            "ciphertext": wrapped.decode(),
            "associated_data": base64.b64encode(b"owner-1").decode(),
        },
    )
    assert base64.b64decode(opened["data"]["plaintext"]) == data_key
    # Nothing of the key landed in the workspace.
    assert not (tmp_path / "ws" / "keys").exists()


def test_key_material_is_never_readable_from_the_server(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    token = openbao.product_token()
    use_transit(monkeypatch, openbao, token, tmp_path)
    provider = provider_for_workspace(Workspace.open(tmp_path / "ws"))
    provider.signer()[1].sign(b"x")
    root = openbao.root()
    for name, kind in ((WRAP_KEY, "encryption-key"), (SIGN_KEY, "signing-key")):
        info = root.secrets.transit.read_key(name)["data"]
        assert info["exportable"] is False and info["allow_plaintext_backup"] is False
        with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
            root.secrets.transit.export_key(name, key_type=kind)
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=openbao.url, token=token).secrets.transit.export_key(
                name, key_type=kind
            )
    # A key that could be exported is refused before it is used.
    root.secrets.transit.create_key("leaky-wrap", key_type="aes256-gcm96", exportable=True)
    monkeypatch.setenv("CLINICAL_MLOPS_TRANSIT_WRAP_KEY", "leaky-wrap")
    monkeypatch.setenv("CLINICAL_MLOPS_VAULT_TOKEN_FILE", "")
    monkeypatch.setenv("BAO_TOKEN", openbao.root_token)
    leaky = provider_for_workspace(Workspace.open(tmp_path / "ws"))
    with pytest.raises(KeyProviderUnavailable, match="exportable"):
        leaky.wrap(b"k" * 32, aad=b"a")


def test_rotation_keeps_old_data_open_and_new_data_on_the_new_version(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    use_transit(monkeypatch, openbao, openbao.product_token(), tmp_path)
    provider = provider_for_workspace(Workspace.open(tmp_path / "ws"))
    kid, wrapped = provider.wrap(b"k" * 32, aad=b"owner-1")
    sign_id, signer = provider.signer()
    signature = signer.sign(b"message")
    assert sign_id == f"{SIGN_KEY}:v1"
    old, new = provider.rotate(purpose="wrap")
    assert (old, new) == (kid, f"{WRAP_KEY}:v2")
    assert openbao.root().secrets.transit.read_key(WRAP_KEY)["data"]["latest_version"] == 2
    kid2, wrapped2 = provider.wrap(b"j" * 32, aad=b"owner-2")
    assert kid2 == new and wrapped2.startswith(b"vault:v2:")
    assert provider.unwrap(kid, wrapped, aad=b"owner-1") == b"k" * 32
    assert provider.unwrap(kid2, wrapped2, aad=b"owner-2") == b"j" * 32
    with pytest.raises(WrongKey, match="not a Transit ciphertext"):
        provider.unwrap(kid2, wrapped, aad=b"owner-1")  # the id must name the version used
    _, new_sign = provider.rotate(purpose="sign")
    new_id, new_signer = provider.signer()
    assert new_id == new_sign == f"{SIGN_KEY}:v2"
    publics = provider.public_keys()
    assert set(publics) == {sign_id, new_sign}
    publics[sign_id].verify(signature, b"message")  # old signatures still verify
    publics[new_sign].verify(new_signer.sign(b"later"), b"later")
    listed = {k.key_id: k for k in provider.list_keys()}
    assert listed[new].active and not listed[kid].active and listed[kid].purpose == "wrap"
    assert listed[new_sign].public_key == publics[new_sign].public_bytes_raw().hex()
    assert listed[kid].public_key is None
    for info in listed.values():
        assert datetime.fromisoformat(info.created).tzinfo is not None


def test_a_revoked_token_is_refused_until_the_token_file_holds_a_new_one(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    token = openbao.product_token()
    token_file = use_transit(monkeypatch, openbao, token, tmp_path)
    provider = provider_for_workspace(Workspace.open(tmp_path / "ws"))
    kid, wrapped = provider.wrap(b"k" * 32, aad=b"a")
    _, signer = provider.signer()
    openbao.revoke(token)
    for act in (
        lambda: provider.wrap(b"k" * 32, aad=b"a"),
        lambda: provider.unwrap(kid, wrapped, aad=b"a"),
        lambda: signer.sign(b"entry"),
    ):
        with pytest.raises(KeyProviderUnavailable, match="permission denied") as caught:
            act()
        assert token not in str(caught.value)
    # An agent writes a renewed token into the file: the running provider takes it up.
    renewed = tmp_path / "renewed"
    fd = os.open(renewed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, openbao.product_token().encode())
    os.close(fd)
    os.replace(renewed, token_file)
    assert provider.unwrap(kid, wrapped, aad=b"a") == b"k" * 32
    signature = signer.sign(b"entry")
    provider.public_keys()[provider.active_key_id("sign")].verify(signature, b"entry")


def test_a_token_file_others_can_read_is_refused(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    token_file = use_transit(monkeypatch, openbao, openbao.product_token(), tmp_path)
    os.chmod(token_file, 0o644)
    with pytest.raises(Exception, match=r"mode 0644.*chmod 600"):
        provider_for_workspace(Workspace.open(tmp_path / "ws"))
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o644


def test_ledger_and_checkpoints_signed_in_transit_verify_with_audit_verify(
    openbao: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    token = openbao.product_token()
    use_transit(monkeypatch, openbao, token, tmp_path)
    ws = Workspace.open(tmp_path / "ws")
    with Ledger.open(ws) as led:
        for i in range(3):
            led.append(
                type="alert", actor="test", payload={"kind": "test", "message": f"before {i}"}
            )
        first = led.checkpoint()
        led.rotate_key(purpose="sign", actor="test")
        led.append(type="alert", actor="test", payload={"kind": "test", "message": "after"})
        second = led.checkpoint()
        signed_by = {v.entry.sig_key_id for v in led.read_from(0) if v.entry.signature}
        size = led.size()
    assert first.key_id == f"{SIGN_KEY}:v1" and second.key_id == f"{SIGN_KEY}:v2"
    assert signed_by == {f"{SIGN_KEY}:v1", f"{SIGN_KEY}:v2"}
    assert not (ws.root / "keys").exists()  # no key material on this machine
    code, report, output = audit_verify(ws, monkeypatch, capsys)
    assert code == 0 and report["ok"] is True, output
    assert report["entries"] == size and report["checkpoints"] >= 2
    assert token not in output + caplog.text
    # The same ledger checked against a server that never made these signatures fails.
    other = OpenBao()
    try:
        other.start()
        other.setup_transit()
        monkeypatch.setenv("BAO_ADDR", other.url)
        monkeypatch.setenv("CLINICAL_MLOPS_VAULT_TOKEN_FILE", "")
        monkeypatch.setenv("BAO_TOKEN", other.product_token())
        code, report, output = audit_verify(ws, monkeypatch, capsys)
        assert code == 1 and report["ok"] is False, output
    finally:
        other.stop()
