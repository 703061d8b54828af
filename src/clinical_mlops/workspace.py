"""Where everything lives: the workspace folder and the settings that switch stores.

A workspace is a folder (default ``./.clinical-mlops``, or ``$CLINICAL_MLOPS_HOME``)
whose layout is declared once, in :data:`LAYOUT` (every module asks the workspace for
a path; backup and restore copy exactly what is declared)::

    ledger-checkpoints.jsonl   signed ledger checkpoints, kept outside the ledger database
    ledger-witnesses.json      the witnesses new checkpoints are sent to (optional)
    ledger-witness-log.jsonl   what each witness answered (cosigned, refused and why)
    ledger.db                  the audit ledger (SQLite by default)
    identity.db                the pseudonym vault and consent, kept apart so it can be erased
    meta.db                    registry, governance, alerts and monitoring windows
    mlflow.db                  MLflow tracking, when asked for
    keys/                      the local keyring (wrapping and signing keys)
    console/users.json         review-console users and password hashes
    console/session-key.json   the console's session-signing key (wrapped)
    console/sign-in.json       how the console signs people in (local users or OpenID Connect)
    artifacts/                 content-addressed outputs: snapshots/, models/, bundles/ ...
    sources/                   raw EHR sources made by generators (synthetic), one folder each
    alerting.yaml              who is told of monitoring alerts (owners, rotas, channels)
    demo-people/               the demo people's SSH signing keys (made by ``demo`` only)

Each store can be switched to a production part with one setting, read from the
environment (``CLINICAL_MLOPS_META_URL``, ``CLINICAL_MLOPS_LEDGER_URL``,
``CLINICAL_MLOPS_IDENTITY_URL`` take SQLAlchemy/PostgreSQL URLs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clinical_mlops.errors import WorkspaceError

__all__ = ["DEFAULT_HOME", "LAYOUT", "LayoutItem", "Workspace", "write_durably"]

DEFAULT_HOME = ".clinical-mlops"
_ENV_HOME = "CLINICAL_MLOPS_HOME"


Kind = Literal["database", "folder", "file"]


@dataclass(frozen=True)
class LayoutItem:
    """One declared part of a workspace: where it lives, what it is and whether it is secret.

    ``store`` names the database setting (``meta``, ``ledger``, ``identity``) whose URL may
    move the database out of the folder (to PostgreSQL, say). A ``secret`` item must be
    kept (and backed up) where only operators can read it.
    """

    name: str
    path: str
    kind: Kind
    holds: str
    secret: bool
    store: str | None = None


# In backup order: the checkpoint log before the ledger, so every checkpoint in a backup
# covers entries the backed-up ledger holds; databases before the keys that open them (a
# key rotated in between is in the copy, as keys are only ever added).
LAYOUT: tuple[LayoutItem, ...] = (
    LayoutItem(
        "checkpoint_log",
        "ledger-checkpoints.jsonl",
        "file",
        "signed ledger checkpoints, kept outside the ledger database",
        secret=False,
    ),
    LayoutItem(
        "witnesses",
        "ledger-witnesses.json",
        "file",
        "the witnesses each new checkpoint is sent to (URLs or directories)",
        secret=False,
    ),
    LayoutItem(
        "witness_log",
        "ledger-witness-log.jsonl",
        "file",
        "what each witness answered: cosigned, refused and why, unreachable",
        secret=False,
    ),
    LayoutItem("ledger", "ledger.db", "database", "the audit ledger", False, store="ledger"),
    LayoutItem(
        "identity",
        "identity.db",
        "database",
        "the identity vault: identifiers, pseudonyms, wrapped data keys, consent",
        secret=True,
        store="identity",
    ),
    LayoutItem(
        "meta",
        "meta.db",
        "database",
        "registry, people and roles, gates, approvals, reviews, incidents, alerts, windows",
        secret=False,
        store="meta",
    ),
    LayoutItem("mlflow", "mlflow.db", "database", "MLflow tracking (optional)", secret=False),
    LayoutItem("keys", "keys", "folder", "the local keyring: wrapping and signing keys", True),
    LayoutItem(
        "console_users",
        "console/users.json",
        "file",
        "review-console users, roles and password hashes",
        secret=True,
    ),
    LayoutItem(
        "session_key",
        "console/session-key.json",
        "file",
        "the review console's session-signing key, wrapped by the keyring",
        secret=True,
    ),
    LayoutItem(
        "console_sign_in",
        "console/sign-in.json",
        "file",
        "how the console signs people in: local users, or the OpenID provider (no secret)",
        secret=False,
    ),
    LayoutItem(
        "artifacts",
        "artifacts",
        "folder",
        "snapshots, models, reports, model cards and signed release bundles",
        secret=False,
    ),
    LayoutItem("sources", "sources", "folder", "raw EHR sources made in the workspace", False),
    LayoutItem(
        "alerting",
        "alerting.yaml",
        "file",
        "who is told of monitoring alerts: people, rotas, channels (secrets are not in it)",
        secret=False,
    ),
    # Only the demo's made-up people keep keys here, so a restored demo workspace can still
    # act; real people hold their own keys and the workspace keeps only the public halves.
    LayoutItem(
        "demo_people",
        "demo-people",
        "folder",
        "the demo people's SSH signing keys (made by the demo; real people keep their own)",
        secret=True,
    ),
)
_BY_NAME = {item.name: item for item in LAYOUT}


@dataclass(frozen=True)
class Workspace:
    """A workspace rooted at ``root``; creating the object creates nothing on disk."""

    root: Path

    @classmethod
    def locate(cls, root: str | Path | None = None) -> Workspace:
        """Return the workspace ``open`` would give, creating nothing (for read-only looks)."""
        chosen = root if root is not None else os.environ.get(_ENV_HOME, DEFAULT_HOME)
        return cls(Path(chosen).expanduser().resolve())

    @classmethod
    def open(cls, root: str | Path | None = None) -> Workspace:
        """Return the workspace at ``root``, ``$CLINICAL_MLOPS_HOME`` or ``./.clinical-mlops``."""
        path = cls.locate(root).root
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(
                f"workspace {path} cannot be used: {exc.strerror or exc} ({exc.filename})"
            ) from None
        return cls(path)

    # -- the declared layout -----------------------------------------------------------
    def path(self, name: str) -> Path:
        """Return where the declared item ``name`` (see :data:`LAYOUT`) lives; creates nothing."""
        try:
            item = _BY_NAME[name]
        except KeyError:
            raise ValueError(
                f"unknown workspace item {name!r}; expected one of {', '.join(_BY_NAME)}"
            ) from None
        return self.root / item.path

    # -- folders ---------------------------------------------------------------
    @property
    def sources_dir(self) -> Path:
        return self._dir("sources")

    @property
    def artifacts_dir(self) -> Path:
        return self._dir("artifacts")

    @property
    def snapshots_dir(self) -> Path:
        return self._dir("artifacts", "snapshots")

    @property
    def models_dir(self) -> Path:
        return self._dir("artifacts", "models")

    @property
    def bundles_dir(self) -> Path:
        return self._dir("artifacts", "bundles")

    @property
    def keys_dir(self) -> Path:
        return self._dir("keys")

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- database URLs -----------------------------------------------------------
    def database_url(self, store: str) -> str:
        """Return the SQLAlchemy URL of ``store`` (``meta``, ``ledger`` or ``identity``)."""
        if store not in ("meta", "ledger", "identity"):
            raise ValueError(f"unknown store {store!r}; expected meta, ledger or identity")
        setting = f"CLINICAL_MLOPS_{store.upper()}_URL"
        override = os.environ.get(setting)
        if override:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(override)
            except ArgumentError:
                raise WorkspaceError(
                    f"{setting} is not a database URL; expected one such as "
                    "postgresql+psycopg://user@host:5432/name or sqlite:////path/to/file.db"
                ) from None
            return override
        return f"sqlite:///{self.path(store)}"

    # -- atomic writes -----------------------------------------------------------
    @contextmanager
    def staging_dir(self, parent: Path) -> Iterator[Path]:
        """Yield a scratch folder inside ``parent``; it is removed when the block ends.

        Write an artifact there, then :meth:`publish` it under its final name: the
        rename is atomic (same file system), so a half-written artifact is never
        visible under a final name, and an error leaves nothing behind.
        """
        parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def publish(scratch: Path, final: Path) -> Path:
        """Move ``scratch`` to ``final`` atomically; an existing ``final`` (same content id) wins."""
        if not final.exists():
            os.replace(scratch, final)
        return final


def write_durably(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically, ``mode`` from the first byte, fsync'd.

    A crash leaves the old file or the new one, never a torn one; the directory is
    fsync'd too, so the rename itself survives a power cut.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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
