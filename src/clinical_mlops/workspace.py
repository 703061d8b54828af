"""Where everything lives: the workspace folder and the settings that switch stores.

A workspace is a folder (default ``./.clinical-mlops``, or ``$CLINICAL_MLOPS_HOME``)::

    sources/      raw EHR sources made by generators (synthetic), one folder each
    artifacts/    content-addressed outputs: snapshots/<id>/, models/<version>/ ...
    meta.db       registry, governance and consent metadata (SQLite by default)
    ledger.db     the audit ledger (SQLite by default)
    identity.db   the pseudonym vault, kept apart so it can be erased
    keys/         the local keyring

Each store can be switched to a production part with one setting, read from the
environment (``CLINICAL_MLOPS_META_URL``, ``CLINICAL_MLOPS_LEDGER_URL``,
``CLINICAL_MLOPS_IDENTITY_URL`` take SQLAlchemy/PostgreSQL URLs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clinical_mlops.errors import WorkspaceError

__all__ = ["DEFAULT_HOME", "Workspace"]

DEFAULT_HOME = ".clinical-mlops"
_ENV_HOME = "CLINICAL_MLOPS_HOME"


@dataclass(frozen=True)
class Workspace:
    """A workspace rooted at ``root``; creating the object creates nothing on disk."""

    root: Path

    @classmethod
    def open(cls, root: str | Path | None = None) -> Workspace:
        """Return the workspace at ``root``, ``$CLINICAL_MLOPS_HOME`` or ``./.clinical-mlops``."""
        chosen = root if root is not None else os.environ.get(_ENV_HOME, DEFAULT_HOME)
        path = Path(chosen).expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(
                f"workspace {path} cannot be used: {exc.strerror or exc} ({exc.filename})"
            ) from None
        return cls(path)

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
        return f"sqlite:///{self.root / f'{store}.db'}"

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
