"""Key providers: the local keyring and the Vault provider pass one battery; plus the
keyring's file permissions and the bad-key errors (R-P2)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_vault import FakeVault

from clinical_mlops.errors import (
    KeyFileInsecure,
    KeyNotFound,
    KeyProviderUnavailable,
    WrongKey,
)
from clinical_mlops.privacy.keys import KeyProvider, LocalKeyring, VaultKeyProvider

TOKEN = "s.test-token-not-a-secret"


@pytest.fixture(params=["local", "vault"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyProvider]:
    if request.param == "local":
        yield LocalKeyring(tmp_path / "keys")
    else:
        with FakeVault(TOKEN) as vault:
            yield VaultKeyProvider(url=vault.url, token=TOKEN, index_ttl=0)


def test_wrap_unwrap_sign_and_rotate(provider: KeyProvider):
    kid, wrapped = provider.wrap(b"k" * 32, aad=b"owner-1")
    assert provider.unwrap(kid, wrapped, aad=b"owner-1") == b"k" * 32
    with pytest.raises(WrongKey, match="does not open"):
        provider.unwrap(kid, wrapped, aad=b"owner-2")  # bound to its associated data
    sign_id, signer = provider.signer()
    signature = signer.sign(b"message")
    old, new = provider.rotate(purpose="wrap")
    assert old == kid and new != kid and provider.active_key_id("wrap") == new
    kid2, _wrapped2 = provider.wrap(b"j" * 32, aad=b"x")
    assert kid2 == new
    assert provider.unwrap(kid, wrapped, aad=b"owner-1") == b"k" * 32  # old key still works
    _, new_sign = provider.rotate(purpose="sign")
    publics = provider.public_keys()
    publics[sign_id].verify(signature, b"message")  # old signatures still verify
    assert set(publics) == {sign_id, new_sign}
    listed = {k.key_id: k for k in provider.list_keys()}
    assert listed[new].active and not listed[kid].active and listed[kid].purpose == "wrap"
    assert listed[new_sign].public_key == publics[new_sign].public_bytes_raw().hex()
    with pytest.raises(KeyNotFound, match="no key with id 'wrap-nope'"):
        provider.unwrap("wrap-nope", wrapped, aad=b"owner-1")


def test_keyring_files_are_private_and_insecure_ones_refused(tmp_path: Path):
    ring = LocalKeyring(tmp_path / "keys")
    kid, _ = ring.wrap(b"x" * 32, aad=b"")
    files = sorted((tmp_path / "keys").iterdir())
    assert {f.name for f in files} >= {"keyring.json", f"{kid}.key"}
    for f in files:
        if f.name != ".lock":
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    os.chmod(tmp_path / "keys" / f"{kid}.key", 0o644)
    fresh = LocalKeyring(tmp_path / "keys")
    with pytest.raises(KeyFileInsecure, match=r"mode 0644.*chmod 600"):
        fresh.wrap(b"x" * 32, aad=b"")


def test_missing_and_replaced_key_files_give_clear_errors(tmp_path: Path):
    ring = LocalKeyring(tmp_path / "keys")
    kid, wrapped = ring.wrap(b"x" * 32, aad=b"a")
    key_file = tmp_path / "keys" / f"{kid}.key"
    original = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(KeyNotFound, match=f"{kid}.*is missing"):
        LocalKeyring(tmp_path / "keys").unwrap(kid, wrapped, aad=b"a")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, bytes(b ^ 0xFF for b in original))
    os.close(fd)
    with pytest.raises(WrongKey, match="material differs"):
        LocalKeyring(tmp_path / "keys").unwrap(kid, wrapped, aad=b"a")


def test_vault_errors_are_clear(tmp_path: Path):
    with FakeVault(TOKEN) as vault:
        with pytest.raises(KeyProviderUnavailable, match=r"Forbidden|permission denied"):
            VaultKeyProvider(url=vault.url, token="wrong").active_key_id("wrap")
        provider = VaultKeyProvider(url=vault.url, token=TOKEN, index_ttl=0)
        provider.active_key_id("wrap")
        assert any(method == "POST" for method, _ in vault.requests)
        stored = next(iter(vault.secrets.values()))[-1]["data"]
        assert set(stored) == {"keys", "active", "material"}
        vault.down = True
        with pytest.raises(KeyProviderUnavailable, match=r"sealed|Unavailable|503"):
            VaultKeyProvider(url=vault.url, token=TOKEN).active_key_id("wrap")
