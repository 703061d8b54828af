"""Key providers (R-P2): where the ledger's signing key and the key-encryption keys live.

A provider holds two kinds of keys, each with a key id:

- ``wrap`` keys (AES-256) that wrap per-subject data keys (envelope encryption);
- ``sign`` keys (Ed25519) that sign ledger entries and checkpoints.

Rotation adds a new key and makes it active; old keys stay available so that
what they wrapped or signed still opens and verifies, and new writes use the
new key. Three providers share one interface:

- :class:`LocalKeyring`: key files of mode 0600 in the workspace's ``keys/``
  folder (the default);
- :class:`TransitKeyProvider`: the Transit engine of OpenBao or HashiCorp Vault
  (through ``hvac``, the ``vault`` extra). Data keys are wrapped and unwrapped
  on the server and signatures are made there; key material never leaves it.
  Tested against a live ``bao server -dev`` that the tests start;
- :class:`VaultKeyProvider`: a KV v2 secret holding the key material, which this
  process reads (the keys leave the server). Kept for workspaces that already use
  it; tested against a small fake Vault HTTP server only.

A signer is anything with ``sign(data) -> bytes`` (:class:`Signer`): an
``Ed25519PrivateKey`` in memory, or a handle that asks Transit to sign.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
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

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinical_mlops.errors import (
    KeyFileInsecure,
    KeyNotFound,
    KeyProviderUnavailable,
    ValueInvalid,
    WrongKey,
)
from clinical_mlops.workspace import write_durably

__all__ = [
    "KeyInfo",
    "KeyProvider",
    "LocalKeyring",
    "Purpose",
    "Signer",
    "TransitKeyProvider",
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


class Signer(Protocol):
    """Makes Ed25519 signatures with one key: in memory, or on a key server."""

    def sign(self, data: bytes) -> bytes: ...


class KeyProvider(Protocol):
    """The interface every key provider implements."""

    name: str

    def active_key_id(self, purpose: Purpose) -> str: ...

    def wrap(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes: ...

    def signer(self) -> tuple[str, Signer]: ...

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
    write_durably(path, data, mode=0o600)


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


_TRANSIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
_TRANSIT_TYPES: dict[Purpose, str] = {"wrap": "aes256-gcm96", "sign": "ed25519"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _TransitSigner:
    """Signs with one version of a Transit Ed25519 key, on the server."""

    def __init__(self, provider: TransitKeyProvider, key_id: str):
        self._provider = provider
        self.key_id = key_id

    def sign(self, data: bytes) -> bytes:
        return self._provider.sign(self.key_id, data)

    def __repr__(self) -> str:
        return f"<Transit signer {self.key_id}>"


class TransitKeyProvider:
    """Keys that stay in the Transit engine of OpenBao or Vault: wrapped, unwrapped and
    signed on the server, through ``hvac``.

    Two Transit keys, created by the operator: an ``aes256-gcm96`` key that wraps data
    keys (the associated data is bound as Transit ``associated_data``) and an
    ``ed25519`` key that signs ledger entries, checkpoints and release bundles. A key id
    is ``<key name>:v<version>``; a Transit rotation adds a version, new writes use it,
    and older versions still unwrap and verify. Keys marked exportable (or allowing a
    plaintext backup) are refused: their material could leave the server.

    Anything the server does not answer, or refuses (a revoked or expired token, a
    policy that does not allow the call), raises :class:`KeyProviderUnavailable`: the
    caller writes and returns nothing. The token is held in memory only, never logged.
    """

    def __init__(
        self,
        *,
        url: str,
        token: str | None = None,
        token_file: str | Path | None = None,
        mount: str = "transit",
        wrap_key: str = "clinical-mlops-wrap",
        sign_key: str = "clinical-mlops-sign",
        timeout: float = 5.0,
        key_ttl: float = 5.0,
    ):
        try:
            import hvac
        except ImportError:
            raise KeyProviderUnavailable(
                "the Transit key provider needs hvac: pip install 'clinical-mlops[vault]'"
            ) from None
        for field, value in (("mount", mount), ("wrap key", wrap_key), ("sign key", sign_key)):
            if not _TRANSIT_NAME.fullmatch(value):
                raise ValueInvalid(
                    f"Transit {field}: expected 1-48 letters, digits, '_', '.' or '-', "
                    f"got {value!r}"
                )
        self._token_file = Path(token_file) if token_file else None
        if self._token_file is not None:
            token = _read_token_file(self._token_file)
        if not token:
            raise KeyProviderUnavailable(f"Transit at {url}: no token was given")
        self._client = hvac.Client(url=url, token=token, timeout=timeout)
        self._mount = mount
        self._names: dict[Purpose, str] = {"wrap": wrap_key, "sign": sign_key}
        self._key_ttl = key_ttl
        self._lock = threading.Lock()
        self._keys: dict[Purpose, tuple[float, dict[str, Any]]] = {}
        # A key version's public half never changes, so it is kept once read.
        self._publics: dict[str, Ed25519PublicKey] = {}
        self.name = f"transit {url.rstrip('/')}/{mount}"

    def __repr__(self) -> str:
        return f"<TransitKeyProvider {self.name}>"

    # -- talking to the server ----------------------------------------------------------------
    def _request(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> Any:
        import hvac.exceptions
        import requests

        url = f"/v1/{self._mount}/{path}"
        try:
            try:
                return self._send(method, url, body)
            except hvac.exceptions.Forbidden:
                # An agent renews the token by rewriting the file: use the new one, once.
                if self._token_file is None:
                    raise
                token = _read_token_file(self._token_file)
                if not token or token == self._client.token:
                    raise
                self._client.token = token
                return self._send(method, url, body)
        except hvac.exceptions.Forbidden:
            raise KeyProviderUnavailable(
                f"{self.name}: {what} was refused (permission denied): the token is revoked, "
                "expired or not allowed this call by its policy"
            ) from None
        except hvac.exceptions.InvalidPath:
            raise KeyNotFound(f"{self.name}: {what}: no such path {self._mount}/{path}") from None
        except hvac.exceptions.InvalidRequest:
            raise  # the caller knows what a refused input means
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise KeyProviderUnavailable(
                f"{self.name}: {what} failed ({type(exc).__name__}: {_first_line(exc)}); "
                "nothing was written"
            ) from None

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        if method == "GET":
            return self._client.adapter.get(url)
        return self._client.adapter.post(url, json=body or {})

    def _key(self, purpose: Purpose, *, fresh: bool = False) -> dict[str, Any]:
        """Return the Transit key record (versions, latest) of ``purpose``, cached briefly."""
        # A short cache keeps a round trip off every append; a rotation made elsewhere is
        # picked up within the TTL (the older version keeps working meanwhile).
        now = time.monotonic()
        with self._lock:
            hit = self._keys.get(purpose)
        if not fresh and hit is not None and now - hit[0] < self._key_ttl:
            return hit[1]
        name = self._names[purpose]
        try:
            data = self._request("GET", f"keys/{name}", f"reading key {name!r}")["data"]
        except KeyNotFound:
            raise KeyNotFound(
                f"{self.name}: no Transit key {name!r}; create it with: bao write -f "
                f"{self._mount}/keys/{name} type={_TRANSIT_TYPES[purpose]}"
            ) from None
        if data.get("type") != _TRANSIT_TYPES[purpose]:
            raise KeyProviderUnavailable(
                f"{self.name}: key {name!r} is of type {data.get('type')!r}; the {purpose} key "
                f"must be {_TRANSIT_TYPES[purpose]}"
            )
        if data.get("exportable") or data.get("allow_plaintext_backup"):
            raise KeyProviderUnavailable(
                f"{self.name}: key {name!r} is exportable or allows a plaintext backup, so its "
                "material can leave the server; refusing to use it (create a key without them)"
            )
        with self._lock:
            self._keys[purpose] = (now, data)
        return dict(data)

    def _version(self, purpose: Purpose, key_id: str) -> int:
        name = self._names[purpose]
        head, sep, version = key_id.rpartition(":v")
        if head != name or not sep or not version.isdigit():
            known = [f"{name}:v{v}" for v in sorted(self._key(purpose)["keys"], key=int)]
            raise KeyNotFound(
                f"{self.name}: no key with id {key_id!r}; known {purpose} keys: {known}"
            )
        return int(version)

    # -- the KeyProvider interface ------------------------------------------------------------
    def active_key_id(self, purpose: Purpose) -> str:
        """Return the id (``<key name>:v<latest version>``) new writes use for ``purpose``."""
        if purpose not in _PURPOSES:
            raise ValueInvalid(f"purpose: expected one of {_PURPOSES}, got {purpose!r}")
        return f"{self._names[purpose]}:v{int(self._key(purpose)['latest_version'])}"

    def wrap(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]:
        """Return (key id, Transit ciphertext) of ``plaintext``, encrypted on the server."""
        import hvac.exceptions

        key_id = self.active_key_id("wrap")
        name = self._names["wrap"]
        body = {
            "plaintext": _b64(plaintext),
            "associated_data": _b64(aad),
            "key_version": self._version("wrap", key_id),
        }
        try:
            data = self._request("POST", f"encrypt/{name}", f"wrapping under {key_id}", body)
        except hvac.exceptions.InvalidRequest as exc:
            raise KeyProviderUnavailable(
                f"{self.name}: wrapping under {key_id} was refused: {_first_line(exc)}"
            ) from None
        used = f"{name}:v{int(data['data']['key_version'])}"
        return used, str(data["data"]["ciphertext"]).encode("ascii")

    def unwrap(self, key_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        """Return the plaintext wrapped under ``key_id``, decrypted on the server; WrongKey if
        the server cannot authenticate it with that key and ``aad``."""
        import hvac.exceptions

        version = self._version("wrap", key_id)
        try:
            ciphertext = wrapped.decode("ascii")
        except UnicodeDecodeError:
            ciphertext = ""
        if not ciphertext.startswith(f"vault:v{version}:"):
            raise WrongKey(
                f"{self.name}: this wrapped data key is not a Transit ciphertext of {key_id}"
            )
        body = {"ciphertext": ciphertext, "associated_data": _b64(aad)}
        try:
            data = self._request(
                "POST", f"decrypt/{self._names['wrap']}", f"unwrapping under {key_id}", body
            )
        except hvac.exceptions.InvalidRequest as exc:
            raise WrongKey(
                f"{self.name}: key {key_id!r} does not open this wrapped data key "
                f"({_first_line(exc)}); it was wrapped for other data or altered"
            ) from None
        return base64.b64decode(data["data"]["plaintext"])

    def sign(self, key_id: str, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data`` made on the server by ``key_id``."""
        import hvac.exceptions

        version = self._version("sign", key_id)
        body = {"input": _b64(data), "key_version": version}
        try:
            answer = self._request(
                "POST", f"sign/{self._names['sign']}", f"signing with {key_id}", body
            )
        except hvac.exceptions.InvalidRequest as exc:
            raise KeyProviderUnavailable(
                f"{self.name}: signing with {key_id} was refused: {_first_line(exc)}"
            ) from None
        prefix, _, encoded = str(answer["data"]["signature"]).rpartition(":")
        signature = base64.b64decode(encoded)
        # Checked here so that a signature the ledger could never verify is never written.
        try:
            self._public(key_id).verify(signature, data)
        except InvalidSignature:
            raise KeyProviderUnavailable(
                f"{self.name}: the server's signature ({prefix}) does not verify with the "
                f"public key of {key_id}; nothing was signed"
            ) from None
        return signature

    def _public(self, key_id: str) -> Ed25519PublicKey:
        with self._lock:
            hit = self._publics.get(key_id)
        if hit is not None:
            return hit
        publics = self.public_keys()
        if key_id not in publics:
            raise KeyNotFound(f"{self.name}: no signing key {key_id!r}; known: {sorted(publics)}")
        return publics[key_id]

    def signer(self) -> tuple[str, Signer]:
        """Return (key id, signer) of the active signing key; the signer signs on the server."""
        key_id = self.active_key_id("sign")
        return key_id, _TransitSigner(self, key_id)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Return every signing key version's public half by key id (old ones included)."""
        name = self._names["sign"]
        out = {}
        for version, info in self._key("sign", fresh=True)["keys"].items():
            out[f"{name}:v{int(version)}"] = Ed25519PublicKey.from_public_bytes(
                base64.b64decode(info["public_key"])
            )
        with self._lock:
            self._publics.update(out)
        return out

    def rotate(self, *, purpose: Purpose = "wrap") -> tuple[str, str]:
        """Return (old id, new id) after the server adds a new version of ``purpose``'s key."""
        if purpose not in _PURPOSES:
            raise ValueInvalid(f"purpose: expected one of {_PURPOSES}, got {purpose!r}")
        self._key(purpose, fresh=True)
        old = self.active_key_id(purpose)
        name = self._names[purpose]
        self._request("POST", f"keys/{name}/rotate", f"rotating {name!r}")
        self._key(purpose, fresh=True)
        return old, self.active_key_id(purpose)

    def list_keys(self) -> list[KeyInfo]:
        """Return every key version's id, purpose, creation time and whether it is active."""
        out = []
        for purpose in _PURPOSES:
            data = self._key(purpose, fresh=True)
            name, latest = self._names[purpose], int(data["latest_version"])
            for version, info in sorted(data["keys"].items(), key=lambda kv: int(kv[0])):
                if isinstance(info, dict):  # asymmetric keys: creation time and public key
                    created = _iso_seconds(str(info.get("creation_time", "")))
                    public = base64.b64decode(info["public_key"]).hex()
                else:  # symmetric keys: the creation time in Unix seconds
                    created = datetime.fromtimestamp(int(info), UTC).isoformat()
                    public = None
                out.append(
                    KeyInfo(
                        key_id=f"{name}:v{int(version)}",
                        purpose=purpose,
                        created=created,
                        active=int(version) == latest,
                        public_key=public,
                    )
                )
        return out


def _iso_seconds(value: str) -> str:
    """Return a server's RFC 3339 time (nanoseconds, ``Z``) as this module writes times."""
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d+)?Z$", "+00:00", value)).isoformat()
    except ValueError:
        return value


def _first_line(exc: BaseException) -> str:
    """Return the server's message on one line (hvac's errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_token_file(file: Path) -> str:
    """Return the token in ``file``; KeyFileInsecure if group or others may read it."""
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            raise KeyFileInsecure(
                f"{file} has mode {mode:04o}; a token file must be readable by the owner "
                f"only (run: chmod 600 {file})"
            )
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyProviderUnavailable(
            f"cannot read the token file {file} ({exc.strerror})"
        ) from None


def provider_for_workspace(workspace: Any) -> KeyProvider:
    """Return the workspace's key provider, chosen by ``CLINICAL_MLOPS_KEY_PROVIDER``.

    ``transit``: OpenBao/Vault Transit at ``BAO_ADDR`` (or ``VAULT_ADDR``), token from the
    file ``CLINICAL_MLOPS_VAULT_TOKEN_FILE`` or ``BAO_TOKEN``/``VAULT_TOKEN``, mount and
    key names from ``CLINICAL_MLOPS_TRANSIT_MOUNT``, ``..._WRAP_KEY``, ``..._SIGN_KEY``.
    ``vault``: the KV v2 keyring (keys leave the server). ``local`` (default): ``keys/``.
    """
    choice = os.environ.get("CLINICAL_MLOPS_KEY_PROVIDER", "local")
    if choice == "transit":
        addr = os.environ.get("BAO_ADDR") or os.environ.get("VAULT_ADDR")
        token_file = os.environ.get("CLINICAL_MLOPS_VAULT_TOKEN_FILE") or None
        token = os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN")
        if not addr or not (token_file or token):
            raise KeyProviderUnavailable(
                "CLINICAL_MLOPS_KEY_PROVIDER=transit needs BAO_ADDR (or VAULT_ADDR) and a token "
                "in CLINICAL_MLOPS_VAULT_TOKEN_FILE or BAO_TOKEN (or VAULT_TOKEN)"
            )
        return TransitKeyProvider(
            url=addr,
            token=None if token_file else token,
            token_file=token_file,
            mount=os.environ.get("CLINICAL_MLOPS_TRANSIT_MOUNT", "transit"),
            wrap_key=os.environ.get("CLINICAL_MLOPS_TRANSIT_WRAP_KEY", "clinical-mlops-wrap"),
            sign_key=os.environ.get("CLINICAL_MLOPS_TRANSIT_SIGN_KEY", "clinical-mlops-sign"),
        )
    if choice == "vault":
        kv_addr, kv_token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
        if not kv_addr or not kv_token:
            raise KeyProviderUnavailable(
                "CLINICAL_MLOPS_KEY_PROVIDER=vault needs VAULT_ADDR and VAULT_TOKEN"
            )
        return VaultKeyProvider(
            url=kv_addr,
            token=kv_token,
            mount=os.environ.get("CLINICAL_MLOPS_VAULT_MOUNT", "secret"),
            path=os.environ.get("CLINICAL_MLOPS_VAULT_PATH", "clinical-mlops/keyring"),
        )
    if choice != "local":
        raise KeyProviderUnavailable(
            f"unknown key provider {choice!r} in CLINICAL_MLOPS_KEY_PROVIDER; "
            "use local, transit or vault"
        )
    # Not ``workspace.keys_dir``: that creates the folder, and reading must write nothing.
    return LocalKeyring(workspace.path("keys"))
