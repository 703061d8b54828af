"""The metadata store (registry, governance, alerts) held to the evidence stores' standard.

A locked, unreadable or vanished ``meta.db`` is reported as ``StoreUnavailable`` naming the
metadata store (never a raw driver traceback), and writers from several processes queue on
the database lock instead of failing or losing each other's writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.errors import StoreUnavailable
from clinical_mlops.governance.board import Governance
from clinical_mlops.monitoring.alerts import AlertStore
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

WRITER = Path(__file__).with_name("meta_writer.py")


@pytest.fixture
def held_lock(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The workspace's meta.db with its write lock held by another connection."""
    with Registry.open(workspace) as reg, Governance(reg) as registry:
        registry.grant_roles("dana", roles=["compliance"], actor="dana", why="bootstrap")
    # Writers give up quickly, so the test does not wait out the default minute.
    monkeypatch.setenv("CLINICAL_MLOPS_BUSY_TIMEOUT_MS", "200")
    path = workspace.root / "meta.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_metadata_store_is_named_and_nothing_is_written(
    workspace: Workspace, held_lock: Path
) -> None:
    with (
        Registry.open(workspace) as reg,
        Governance(reg) as registry,
        pytest.raises(StoreUnavailable, match="metadata store") as raised,
    ):
        registry.grant_roles("eve", roles=["clinical"], actor="dana", why="ward lead")
    assert "locked" in str(raised.value)
    result = CliRunner().invoke(
        cli,
        ["registry", "grant", "eve", "--role", "clinical", "--as", "dana",
         "--why", "ward lead", "-w", str(workspace.root)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, StoreUnavailable), result.exception
    assert "metadata store" in str(result.exception)


def test_the_metadata_store_works_again_once_the_lock_is_released(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.open(workspace) as reg, Governance(reg) as registry:
        registry.grant_roles("dana", roles=["compliance"], actor="dana", why="bootstrap")
        monkeypatch.setenv("CLINICAL_MLOPS_BUSY_TIMEOUT_MS", "200")
    with Registry.open(workspace) as reg, Governance(reg) as registry:
        holder = sqlite3.connect(workspace.root / "meta.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="metadata store"):
            registry.grant_roles("eve", roles=["clinical"], actor="dana", why="ward lead")
        holder.execute("ROLLBACK")
        holder.close()
        assert registry.grant_roles("eve", roles=["clinical"], actor="dana", why="ward lead") == [
            "clinical"
        ]
        assert registry.people() == {"dana": ["compliance"], "eve": ["clinical"]}


def test_an_unreadable_metadata_store_is_named(workspace: Workspace) -> None:
    (workspace.root / "meta.db").write_bytes(b"this is not a SQLite database\n" * 200)
    with pytest.raises(StoreUnavailable, match="metadata store"):
        Registry.open(workspace)
    with pytest.raises(StoreUnavailable, match="metadata store"):
        AlertStore.open(workspace)
    result = CliRunner().invoke(cli, ["registry", "list", "-w", str(workspace.root)])
    assert result.exit_code != 0
    assert isinstance(result.exception, StoreUnavailable), result.exception


def test_concurrent_writers_queue_on_the_metadata_store(workspace: Workspace) -> None:
    writers, count = 6, 15
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(workspace.root), str(i), str(writers), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(writers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # all at once, on a workspace with no metadata tables yet
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert outs == [{"raised": count}] * writers
    with AlertStore.open(workspace) as store:
        alerts = store.list()
    # One alert for the shared rule: no writer missed another's alert and opened a second.
    assert len(alerts) == 1, [(a.id, a.occurrences) for a in alerts]
    assert 1 <= alerts[0].occurrences <= writers * count
