"""Back up a whole workspace, and restore one, from its declared layout.

:func:`backup` copies every item of :data:`~clinical_mlops.workspace.LAYOUT` that exists:
the checkpoint log first, then each SQLite database through SQLite's online backup API
(consistent while services keep writing), then the keyring, the console's users and
session key, the artifacts and the sources. It writes ``backup.json`` last, listing
each item with the SHA-256 of every file copied and the row count of every table, so a
backup without it is unfinished. A database whose URL points at PostgreSQL is not
copied: the backup says so and names it (``pg_dump`` is the operator's job); a backup
never leaves a store out without saying.

:func:`restore` copies a finished backup into a new workspace folder, checks every file
against its SHA-256 and every table's row count, and verifies the restored ledger.
Backups hold secrets (keys, the identity vault, console password hashes): keep them
where only operators can read them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinical_mlops.application.services import Services
from clinical_mlops.database import display_url, sqlite_path
from clinical_mlops.errors import WorkspaceError
from clinical_mlops.hashing import sha256_file
from clinical_mlops.workspace import LAYOUT, LayoutItem, Workspace

__all__ = ["MANIFEST", "BackupReport", "RestoreReport", "backup", "restore"]

MANIFEST = "backup.json"
FORMAT = "clinical-mlops/workspace-backup/v1"
# Not workspace content: SQLite's companions of a database, and half-written artifacts.
_TRANSIENT = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class BackupReport:
    """What a backup holds: each item copied, and each store left to the operator."""

    dest: Path
    items: list[dict[str, Any]]
    external: list[dict[str, str]]
    undeclared: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "items": self.items,
            "external": self.external,
            "undeclared": self.undeclared,
        }


@dataclass
class RestoreReport:
    """What a restore did, and what it found: the ledger check and any mismatch."""

    root: Path
    items: list[str]
    external: list[dict[str, str]]
    ledger_ok: bool | None = None
    ledger_entries: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.ledger_ok is not False

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "items": self.items,
            "external": self.external,
            "ledger_ok": self.ledger_ok,
            "ledger_entries": self.ledger_entries,
            "problems": self.problems,
        }


def _workspace_of(source: Services | Workspace | str | Path) -> Workspace:
    if isinstance(source, Services):
        return source.workspace
    if isinstance(source, Workspace):
        return source
    return Workspace.open(source)


def _database_file(ws: Workspace, item: LayoutItem) -> tuple[Path | None, str | None]:
    """Return (the SQLite file, None) of a database item, or (None, its external URL)."""
    if item.store is None:
        return ws.path(item.name), None
    url = ws.database_url(item.store)
    path = sqlite_path(url)
    if path is None:
        return None, display_url(url)
    return path, None


def _online_backup(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to ``target`` with SQLite's online backup API."""
    uri = f"file:{urllib.parse.quote(str(source.resolve()))}?mode=ro"
    src = sqlite3.connect(uri, uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _row_counts(path: Path) -> dict[str, int]:
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # table names come from the database's own catalogue
        return {n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}  # noqa: S608
    finally:
        conn.close()


def _files(root: Path) -> dict[str, str]:
    """Return relative path -> SHA-256 of every file under ``root`` (a file or a folder)."""
    if root.is_file():
        return {"": sha256_file(root)}
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".staging-") for part in rel.parts) or not path.is_file():
            continue
        out[rel.as_posix()] = sha256_file(path)
    return out


def _copy_folder(source: Path, target: Path) -> None:
    shutil.copytree(
        source,
        target,
        copy_function=shutil.copy2,  # keeps modes: key files stay 0600
        ignore=shutil.ignore_patterns(".staging-*"),
    )


def _undeclared(ws: Workspace) -> list[str]:
    declared = {Path(item.path).parts[0] for item in LAYOUT}
    found = []
    for path in sorted(ws.root.iterdir()):
        name = path.name
        if name in declared or any(name.endswith(t) for t in _TRANSIENT):
            continue
        if any(name == Path(item.path).name + t for item in LAYOUT for t in _TRANSIENT):
            continue
        found.append(name)
    return found


def backup(source: Services | Workspace | str | Path, dest: str | Path) -> BackupReport:
    """Return what was backed up after copying every declared item of the workspace to ``dest``.

    ``dest`` must not exist yet, or be an empty folder (nothing is overwritten). Safe
    while services run: databases are copied through SQLite's online backup. Stores on
    PostgreSQL are listed under ``external``: back them up with ``pg_dump`` at the same
    time. Files found in the workspace that the layout does not declare are listed under
    ``undeclared`` and not copied.
    """
    ws = _workspace_of(source)
    if not any((ws.root / item.path).exists() for item in LAYOUT):
        # a mistyped --workspace must not give a "successful" backup of nothing
        raise WorkspaceError(
            f"workspace {ws.root} holds nothing to back up (no ledger, registry, keys or "
            "artifacts): name the workspace with --workspace or $CLINICAL_MLOPS_HOME"
        )
    target = Path(dest).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise WorkspaceError(f"backup destination {target} exists and is not an empty folder")
    if target == ws.root or target.is_relative_to(ws.root):
        raise WorkspaceError(f"backup destination {target} is inside the workspace {ws.root}")
    target.mkdir(parents=True, exist_ok=True)
    items: list[dict[str, Any]] = []
    external: list[dict[str, str]] = []
    for item in LAYOUT:
        entry: dict[str, Any] = {
            "name": item.name,
            "path": item.path,
            "kind": item.kind,
            "secret": item.secret,
        }
        copy = target / item.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        if item.kind == "database":
            path, url = _database_file(ws, item)
            if path is None:
                external.append({"name": item.name, "url": url or "", "holds": item.holds})
                continue
            if not path.exists():
                continue
            _online_backup(path, copy)
            entry["tables"] = _row_counts(copy)
        else:
            path = ws.path(item.name)
            if not path.exists():
                continue
            if item.kind == "folder":
                _copy_folder(path, copy)
            else:
                shutil.copy2(path, copy)
            entry["files"] = _files(copy)
        items.append(entry)
    undeclared = _undeclared(ws)
    manifest = {
        "format": FORMAT,
        "made_at": datetime.now(UTC).isoformat(),
        "workspace": str(ws.root),
        "items": items,
        "external": external,
        "undeclared": undeclared,
    }
    # Written last, atomically: a backup without its manifest is unfinished.
    scratch = target / f".{MANIFEST}.tmp"
    scratch.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(scratch, target / MANIFEST)
    return BackupReport(dest=target, items=items, external=external, undeclared=undeclared)


def restore(source: str | Path, dest_root: str | Path) -> RestoreReport:
    """Return the checks made after restoring the backup at ``source`` into ``dest_root``.

    ``dest_root`` must not exist yet, or be an empty folder. Every file is checked against
    the SHA-256 the backup recorded and every table against its row count, and the
    restored ledger is verified; ``problems`` names any mismatch. Stores the backup lists
    as external (PostgreSQL) are restored by the operator (``pg_restore``).
    """
    root = Path(dest_root).expanduser().resolve()
    # the destination first: a restore that cannot land anywhere says so before reading
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise WorkspaceError(f"restore destination {root} exists and is not an empty folder")
    blocked = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise WorkspaceError(f"workspace {root} cannot be made: {blocked} is a file, not a folder")
    src = Path(source).expanduser().resolve()
    manifest_path = src / MANIFEST
    if not manifest_path.is_file():
        raise WorkspaceError(
            f"{src} is not a finished workspace backup (no {MANIFEST}); "
            "make one with `clinical-mlops workspace backup`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise WorkspaceError(
            f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT}"
        )
    known = {item.name: item for item in LAYOUT}
    report = RestoreReport(root=root, items=[], external=list(manifest.get("external", [])))
    root.mkdir(parents=True, exist_ok=True)
    for entry in manifest["items"]:
        item = known.get(entry["name"])
        if item is None or item.path != entry["path"]:
            report.problems.append(f"{entry['name']}: not an item of this version's layout")
            continue
        copied, target = src / item.path, root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.kind == "folder":
            _copy_folder(copied, target)
        else:
            shutil.copy2(copied, target)
        report.items.append(item.name)
        if item.kind == "database":
            counts = _row_counts(target)
            if counts != entry["tables"]:
                report.problems.append(f"{item.path}: table row counts differ from the backup")
        elif _files(target) != entry["files"]:
            report.problems.append(f"{item.path}: file contents differ from the backup")
    ws = Workspace.open(root)
    if "ledger" in report.items or any(e["name"] == "ledger" for e in report.external):
        from clinical_mlops.ledger import Ledger

        try:
            with Ledger.open(ws, create=False) as ledger:
                verified = ledger.verify()
        except Exception as exc:  # reported, not raised: the files are restored either way
            report.ledger_ok = False
            report.problems.append(f"ledger: {exc}")
        else:
            report.ledger_ok = verified.ok
            report.ledger_entries = verified.entries
            report.problems += [f"ledger: {p.message}" for p in verified.problems[:20]]
    return report
