"""Key providers (R-P2): where the ledger's signing key and the key-encryption keys live.

A provider holds two kinds of keys, each with a key id:

- ``wrap`` keys (AES-256) that wrap per-subject data keys (envelope encryption);
- ``sign`` keys (Ed25519) that sign ledger entries and checkpoints.

Rotation adds a new key and makes it active; old keys stay available so that
what they wrapped or signed still opens and verifies, and new writes use the
new key. Two providers share one interface: :class:`LocalKeyring` (key files of
mode 0600 in the workspace's ``keys/`` folder, the default) and
:class:`VaultKeyProvider` (a HashiCorp Vault KV v2 secret, through ``hvac``,
installed with the ``vault`` extra). The Vault provider is tested against a
small fake Vault HTTP server only; no real Vault server runs in the test suite.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinical_mlops.errors import (
    KeyFileInsecure,
    KeyNotFound,
    KeyProviderUnavailable,
    ValueInvalid,
    WrongKey,
)

__all__ = [
    "KeyInfo",
    "KeyProvider",
    "LocalKeyring",
    "Purpose",
    "VaultKeyProvider",
    "provider_for_workspace",
    "public_key_hex",
]

Purpose = Literal["wrap", "sign"]
_PURPOSES: tuple[Purpose, ...] = ("wrap", "sign")
_NONCE = 12


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its material."""

    key_id: str
    purpose: Purpose
    created: str
    active: bool
    public_key: str | None = None  # hex, for signing keys

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "purpose": self.purpose,
            "created": self.created,
            "active": self.active,
            "public_key": self.public_key,
        }


class KeyProvider(Protocol):
    """The interface every key provider implements."""

    name: str

    def active_key_id(self, purpose: Purpose) -> str: ...

    def wrap(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes: ...

    def signer(self) -> tuple[str, Ed25519PrivateKey]: ...

    def public_keys(self) -> dict[str, Ed25519PublicKey]: ...

    def rotate(self, *, purpose: Purpose = "wrap") -> tuple[str, str]: ...

    def list_keys(self) -> list[KeyInfo]: ...


def public_key_hex(key: Ed25519PublicKey) -> str:
    """Return the raw 32-byte Ed25519 public key as hex."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _new_key_id(purpose: Purpose) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return f"{purpose}-{stamp}-{secrets.token_hex(4)}"


def _new_material(purpose: Purpose) -> bytes:
    # Ed25519 private keys are 32 random bytes (RFC 8032 seed); AES-256 keys likewise.
    return os.urandom(32)


class _MaterialProvider:
    """Shared logic: key material by id plus an index of purposes and active ids."""

    name = "abstract"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._seen_index: tuple[tuple[int, int, int, int], dict[str, Any]] | None = None

    # -- to implement -------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        raise NotImplementedError

    def _read_material(self, key_id: str) -> bytes:
        raise NotImplementedError

    @contextmanager
    def _mutate(self) -> Iterator[dict[str, Any]]:
        """Yield the index for changes under an exclusive lock; persist keys + index after."""
        raise NotImplementedError
        yield {}

    def _store_material(self, state: dict[str, Any], key_id: str, material: bytes) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def _ensure(self) -> dict[str, Any]:
        index = self._read_index()
        if all(index.get("active", {}).get(p) for p in _PURPOSES):
            return index
        with self._mutate() as state:
            for purpose in _PURPOSES:
                if not state["active"].get(purpose):
                    self._add_key(state, purpose)
        return self._read_index()

    def _add_key(self, state: dict[str, Any], purpose: Purpose) -> str:
        key_id = _new_key_id(purpose)
        material = _new_material(purpose)
        self._store_material(state, key_id, material)
        state["keys"].append(
            {"key_id": key_id, "purpose": purpose, "created": datetime.now(UTC).isoformat()}
        )
        state["active"][purpose] = key_id
        return key_id

    def _material(self, key_id: str, purpose: Purpose) -> bytes:
        with self._lock:
            if key_id in self._cache:
                return self._cache[key_id]
        index = self._read_index()
        known = {k["key_id"]: k for k in index.get("keys", [])}
        if key_id not in known:
            raise KeyNotFound(
                f"{self.name}: no key with id {key_id!r}; known {purpose} keys: "
                f"{sorted(k for k, v in known.items() if v['purpose'] == purpose)}"
            )
        if known[key_id]["purpose"] != purpose:
            raise KeyNotFound(f"{self.name}: key {key_id!r} is a {known[key_id]['purpose']} key")
        material = self._read_material(key_id)
        if len(material) != 32:
            raise WrongKey(f"{self.name}: key {key_id!r} is {len(material)} bytes, expected 32")
        with self._lock:
            self._cache[key_id] = material
        return material

    def active_key_id(self, purpose: Purpose) -> str:
        """Return the id of the key new writes use for ``purpose``."""
        return str(self._ensure()["active"][purpose])

    def wrap(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]:
        """Return (key id, nonce + AES-256-GCM ciphertext) of ``plaintext``, active wrap key."""
        key_id = self.active_key_id("wrap")
        nonce = os.urandom(_NONCE)
        return key_id, nonce + AESGCM(self._material(key_id, "wrap")).encrypt(nonce, plaintext, aad)

    def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        """Return the plaintext wrapped under ``key_id``; WrongKey if it does not authenticate."""
        key = AESGCM(self._material(key_id, "wrap"))
        try:
            return key.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise WrongKey(
                f"{self.name}: key {key_id!r} does not open this wrapped data key; the key "
                "material differs from the one that wrapped it (replaced or corrupted key)"
            ) from None

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        """Return (key id, private key) of the active signing key."""
        key_id = self.active_key_id("sign")
        return key_id, Ed25519PrivateKey.from_private_bytes(self._material(key_id, "sign"))

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Return every signing key's public half by key id (old ones included)."""
        index = self._read_index()
        out = {}
        for k in index["keys"]:
            if k["purpose"] == "sign":
                private = Ed25519PrivateKey.from_private_bytes(self._material(k["key_id"], "sign"))
                out[k["key_id"]] = private.public_key()
        return out

    def rotate(self, *, purpose: Purpose = "wrap") -> tuple[str, str]:
        """Return (old id, new id) after adding a new active key for ``purpose``."""
        if purpose not in _PURPOSES:
            raise ValueInvalid(f"purpose: expected one of {_PURPOSES}, got {purpose!r}")
        self._ensure()
        with self._mutate() as state:
            old = state["active"][purpose]
            new = self._add_key(state, purpose)
        return old, new

    def list_keys(self) -> list[KeyInfo]:
        """Return every key's id, purpose, creation time and whether it is active."""
        index = self._read_index()
        publics = self.public_keys()
        return [
            KeyInfo(
                key_id=k["key_id"],
                purpose=k["purpose"],
                created=k["created"],
                active=index["active"].get(k["purpose"]) == k["key_id"],
                public_key=public_key_hex(publics[k["key_id"]]) if k["key_id"] in publics else None,
            )
            for k in index["keys"]
        ]


class LocalKeyring(_MaterialProvider):
    """Key files in a folder: ``<key id>.key`` (32 raw bytes) and ``keyring.json``, all 0600.

    Files readable by group or others are refused (:class:`KeyFileInsecure`),
    as ssh does. Creation and rotation take an exclusive ``flock`` so that
    processes sharing the folder never create two active keys.
    """

    name = "local keyring"

    def __init__(self, directory: str | Path):
        super().__init__()
        self.directory = Path(directory)

    @property
    def index_path(self) -> Path:
        return self.directory / "keyring.json"

    def _check_mode(self, path: Path) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileInsecure(
                f"{path} has mode {mode:04o}; key files must be readable by the owner only "
                f"(run: chmod 600 {path})"
            )

    def _read_index(self) -> dict[str, Any]:
        path = self.index_path
        try:
            st = path.stat()
        except FileNotFoundError:
            return {"keys": [], "active": {}}
        # Re-read only when the file changed (a rotation by any process replaces it), so the
        # hot path pays one stat() per call instead of a read and a parse.
        seen = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        with self._lock:
            cached = self._seen_index
        if cached is not None and cached[0] == seen:
            return _copy_index(cached[1])
        self._check_mode(path)
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            valid = isinstance(index["keys"], list) and isinstance(index["active"], dict)
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:  # not an assert: python -O would skip the check
            raise KeyProviderUnavailable(f"{path} is not a valid keyring index")
        with self._lock:
            self._seen_index = (seen, index)
        return _copy_index(index)

    def _read_material(self, key_id: str) -> bytes:
        path = self.directory / f"{key_id}.key"
        if not path.exists():
            raise KeyNotFound(
                f"key {key_id!r} is listed in {self.index_path} but its file {path} is missing; "
                "restore it from the key backup"
            )
        self._check_mode(path)
        return path.read_bytes()

    @contextmanager
    def _mutate(self) -> Iterator[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        lock_path = self.directory / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._read_index()
            yield state
            _write_private(self.index_path, json.dumps(state, indent=2).encode("utf-8"))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _store_material(self, state: dict[str, Any], key_id: str, material: bytes) -> None:
        _write_private(self.directory / f"{key_id}.key", material)


def _copy_index(index: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a keyring index a caller may change without touching the cached one."""
    return {**index, "keys": list(index["keys"]), "active": dict(index["active"])}


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 from the first byte, fsync'd."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class VaultKeyProvider(_MaterialProvider):
    """Keys kept in one HashiCorp Vault KV v2 secret, read and written through ``hvac``.

    The secret at ``<mount>/<path>`` holds the index and base64 key material;
    updates use check-and-set so concurrent rotations cannot lose a key. Key
    material is cached in process memory only. Tested against a fake Vault HTTP
    server (tests/privacy/fake_vault.py), not against a real Vault.
    """

    name = "vault"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        mount: str = "secret",
        path: str = "clinical-mlops/keyring",
        timeout: float = 10.0,
        index_ttl: float = 5.0,
    ):
        super().__init__()
        try:
            import hvac
        except ImportError:
            raise KeyProviderUnavailable(
                "the Vault key provider needs hvac: pip install 'clinical-mlops[vault]'"
            ) from None
        self._client = hvac.Client(url=url, token=token, timeout=timeout)
        self._mount = mount
        self._path = path
        self._index_ttl = index_ttl
        self._index_cache: tuple[float, dict[str, Any]] | None = None
        self.name = f"vault {url}/{mount}/{path}"

    def _read_secret(self) -> tuple[dict[str, Any], int]:
        import hvac.exceptions
        import requests

        try:
            resp = self._client.secrets.kv.v2.read_secret_version(
                path=self._path, mount_point=self._mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return {"keys": [], "active": {}, "material": {}}, 0
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise KeyProviderUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from None
        data = resp["data"]
        return dict(data["data"]), int(data["metadata"]["version"])

    def _read_index(self) -> dict[str, Any]:
        # A short cache keeps one HTTP round trip off every append; a rotation made
        # elsewhere is picked up within the TTL (old keys keep working meanwhile).
        now = time.monotonic()
        if self._index_cache is not None and now - self._index_cache[0] < self._index_ttl:
            return self._index_cache[1]
        secret, _ = self._read_secret()
        index = {"keys": secret.get("keys", []), "active": secret.get("active", {})}
        self._index_cache = (now, index)
        return index

    def _read_material(self, key_id: str) -> bytes:
        secret, _ = self._read_secret()
        encoded = secret.get("material", {}).get(key_id)
        if encoded is None:
            raise KeyNotFound(f"{self.name}: key {key_id!r} is listed but has no material")
        return base64.b64decode(encoded)

    @contextmanager
    def _mutate(self) -> Iterator[dict[str, Any]]:
        import hvac.exceptions
        import requests

        secret, version = self._read_secret()
        state = {
            "keys": secret.get("keys", []),
            "active": secret.get("active", {}),
            "material": dict(secret.get("material", {})),
        }
        yield state
        self._index_cache = None
        try:
            self._client.secrets.kv.v2.create_or_update_secret(
                path=self._path, mount_point=self._mount, secret=state, cas=version
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise KeyProviderUnavailable(
                f"{self.name}: could not store the keyring ({type(exc).__name__}: {exc}); "
                "another process may have rotated at the same time, retry"
            ) from None

    def _store_material(self, state: dict[str, Any], key_id: str, material: bytes) -> None:
        state["material"][key_id] = base64.b64encode(material).decode("ascii")


def provider_for_workspace(workspace: Any) -> KeyProvider:
    """Return the workspace's key provider: Vault when ``CLINICAL_MLOPS_KEY_PROVIDER=vault``
    (with ``VAULT_ADDR`` and ``VAULT_TOKEN``), else the local keyring in ``keys/``."""
    choice = os.environ.get("CLINICAL_MLOPS_KEY_PROVIDER", "local")
    if choice == "vault":
        addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
        if not addr or not token:
            raise KeyProviderUnavailable(
                "CLINICAL_MLOPS_KEY_PROVIDER=vault needs VAULT_ADDR and VAULT_TOKEN"
            )
        return VaultKeyProvider(
            url=addr,
            token=token,
            mount=os.environ.get("CLINICAL_MLOPS_VAULT_MOUNT", "secret"),
            path=os.environ.get("CLINICAL_MLOPS_VAULT_PATH", "clinical-mlops/keyring"),
        )
    if choice != "local":
        raise KeyProviderUnavailable(
            f"unknown key provider {choice!r} in CLINICAL_MLOPS_KEY_PROVIDER; use local or vault"
        )
    # Not ``workspace.keys_dir``: that creates the folder, and reading must write nothing.
    return LocalKeyring(workspace.path("keys"))
