"""`clinical-mlops workspace backup` and `restore`: the whole workspace, and nothing lost.

A served workspace with a console user is backed up while open, destroyed, and restored
in its place: every file that is not a database is byte-identical, every table has its
rows, the ledger verifies, the registry lists the same releases, and the console user
signs in, with the session cookie issued before the backup still valid (same session key).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.console.session import SessionManager, session_secret
from clinical_mlops.console.users import UserDirectory
from clinical_mlops.hashing import sha256_file
from clinical_mlops.workspace import Workspace

DATABASES = ("ledger.db", "identity.db", "meta.db")
PASSWORD = "correct horse battery staple"


def _files(root: Path) -> dict[str, str]:
    """Every file of the workspace that is not a database, by relative path, with its hash."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(p.name.startswith(db) for db in DATABASES)
    }


def _rows(root: Path) -> dict[str, dict[str, int]]:
    out = {}
    for name in DATABASES:
        conn = sqlite3.connect(root / name)
        try:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            out[name] = {
                t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
            }
        finally:
            conn.close()
    return out


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_backup_wipe_restore_gives_the_same_workspace(
    served: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "site-a"
    shutil.copytree(served["ws"].root, root)
    ws = Workspace.open(root)
    UserDirectory.open(ws).add("nurse.kim", roles=["clinician"], password=PASSWORD)
    cookie = SessionManager(session_secret(ws)).issue("nurse.kim", tag="t1")
    at = ["-w", str(root)]
    releases = _invoke("registry", "list", "--json", *at)["releases"]
    files, rows = _files(root), _rows(root)
    assert "console/users.json" in files and "console/session-key.json" in files
    assert any(name.startswith("keys/") for name in files)

    made = _invoke("workspace", "backup", str(tmp_path / "backup"), "--json", *at)
    assert {i["name"] for i in made["items"]} >= {
        "checkpoint_log", "ledger", "identity", "meta", "keys", "console_users", "session_key",
        "artifacts",
    }  # fmt: skip
    assert made["external"] == [] and made["undeclared"] == []
    shutil.rmtree(root)  # the disaster

    done = _invoke("workspace", "restore", str(tmp_path / "backup"), "--to", str(root), "--json")
    assert done["ok"] and done["ledger_ok"] and done["problems"] == []
    assert _files(root) == files
    assert _rows(root) == rows
    verified = _invoke("audit", "verify", "--json", *at)
    assert verified["ok"] and verified["entries"] == done["ledger_entries"]
    assert _invoke("registry", "list", "--json", *at)["releases"] == releases
    restored = Workspace.open(root)
    assert UserDirectory.open(restored).authenticate("nurse.kim", PASSWORD).name == "nurse.kim"
    assert SessionManager(session_secret(restored)).load(cookie).user == "nurse.kim"


def test_a_restore_never_overwrites_and_a_damaged_backup_is_named(
    workspace: Workspace, tmp_path: Path
) -> None:
    UserDirectory.open(workspace).add("nurse.kim", roles=["clinician"], password=PASSWORD)
    _invoke("workspace", "backup", str(tmp_path / "b"), "--json", "-w", str(workspace.root))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    refused = CliRunner().invoke(
        cli, ["workspace", "restore", str(tmp_path / "b"), "--to", str(occupied)]
    )
    assert refused.exit_code != 0 and "not an empty folder" in str(refused.exception)
    assert (occupied / "keep.txt").read_text() == "mine"
    users = tmp_path / "b" / "console" / "users.json"
    users.write_text(users.read_text().replace("nurse.kim", "nurse.kin"))
    damaged = CliRunner().invoke(
        cli, ["workspace", "restore", str(tmp_path / "b"), "--to", str(tmp_path / "c"), "--json"]
    )
    assert damaged.exit_code == 1
    assert json.loads(damaged.stdout)["problems"] == [
        "console/users.json: file contents differ from the backup"
    ]


def test_a_store_on_postgresql_is_named_not_skipped_silently(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    UserDirectory.open(workspace).add("nurse.kim", roles=["clinician"], password=PASSWORD)
    monkeypatch.setenv("CLINICAL_MLOPS_META_URL", "postgresql://ops:s3cret@db.example/meta")
    result = CliRunner().invoke(
        cli, ["workspace", "backup", str(tmp_path / "b"), "-w", str(workspace.root)]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "meta store is external" in said and "pg_dump" in said
    assert "db.example" in said and "s3cret" not in said
    manifest = json.loads((tmp_path / "b" / "backup.json").read_text())
    assert [e["name"] for e in manifest["external"]] == ["meta"]
    assert not (tmp_path / "b" / "meta.db").exists()
