"""The restore drill of docs/OPERATIONS.md, run for real.

Back up a workspace the documented way (checkpoint log first, then each SQLite database
through SQLite's online backup, then keys and artifacts), destroy the original, restore
into a new folder, and check what an operator must see: the ledger verifies with every
entry, old records decrypt, the registry reads back the same releases, the service
starts from the restored release and answers, and the CLI agrees. A second drill shows
that restoring an older backup under a newer checkpoint log is reported, not hidden.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from clinical_mlops.cli import app as cli
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.predictor import PredictionRequest
from clinical_mlops.workspace import Workspace

DATABASES = ("ledger.db", "identity.db", "meta.db")


def back_up(root: Path, backup: Path) -> None:
    """The documented backup of a SQLite workspace (docs/OPERATIONS.md, "Backup")."""
    backup.mkdir(parents=True)
    # 1. the checkpoint log first: every checkpoint in it then covers entries in the copy
    shutil.copy2(root / "ledger-checkpoints.jsonl", backup / "ledger-checkpoints.jsonl")
    # 2. each database through SQLite's online backup (sqlite3 DB ".backup FILE"): consistent
    #    while the service keeps writing
    for name in DATABASES:
        source = sqlite3.connect(root / name)
        target = sqlite3.connect(backup / name)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
    # 3. keys (mode 0600 kept) and the content-addressed artifacts (bundles, models)
    shutil.copytree(root / "keys", backup / "keys")
    shutil.copytree(root / "artifacts", backup / "artifacts")


def restore(backup: Path, root: Path) -> Workspace:
    """The documented restore: copy the backup into an empty workspace folder."""
    shutil.copytree(backup, root)
    return Workspace.open(root)


def predict(ws: Workspace, rows: list[dict[str, Any]], ids: range) -> list[int]:
    with Predictor.open(ws) as predictor:
        results = predictor.predict_many(
            [
                PredictionRequest(
                    subject_id=f"MRN-{i}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[i],
                    request_id=f"drill-{i}",
                )
                for i in ids
            ],
            requester="system:drill",
        )
    assert all(r.status == "scored" for r in results)
    return [int(r.audit_seq) for r in results if r.audit_seq is not None]


def test_restore_drill_into_a_new_workspace(served: dict[str, Any], tmp_path: Path) -> None:
    original = tmp_path / "site-a"
    shutil.copytree(served["ws"].root, original)
    ws = Workspace.open(original)
    seqs = predict(ws, served["rows"], range(80, 90))
    with Ledger.open(ws) as ledger:
        ledger.checkpoint()
        size = ledger.size()
        first = ledger.read(seqs[0]).payload
    with Registry.open(ws) as registry:
        releases = [{k: v for k, v in r.to_json().items() if k != "path"} for r in registry.list()]

    back_up(original, tmp_path / "backup")
    shutil.rmtree(original)  # the disaster: the original workspace is gone

    restored = restore(tmp_path / "backup", tmp_path / "site-b")
    with Ledger.open(restored, create=False) as ledger:
        report = ledger.verify(thorough=True)
        assert report.ok, report.problems[:3]
        assert ledger.size() == size and report.entries == size
        assert ledger.read(seqs[0]).payload == first  # old records decrypt
    with Registry.open(restored) as registry:
        again = [{k: v for k, v in r.to_json().items() if k != "path"} for r in registry.list()]
        assert again == releases
        for release in registry.list():
            assert registry.bundle(release.version).sha256 == release.bundle_sha256
        # the restored workspace reads its own bundles, not the (lost) original's folder
        assert all(Path(r.path).is_relative_to(restored.root) for r in registry.list())
    more = predict(restored, served["rows"], range(90, 92))  # the service runs from it
    assert more[0] >= size

    runner = CliRunner()
    at = ["-w", str(restored.root)]
    verified = runner.invoke(cli, ["audit", "verify", "--json", *at])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"]
    listed = runner.invoke(cli, ["registry", "list", "--json", *at])
    assert listed.exit_code == 0, listed.output
    assert [r["version"] for r in json.loads(listed.stdout)["releases"]] == [
        r["version"] for r in releases
    ]


def test_an_older_backup_under_a_newer_checkpoint_log_is_reported(
    served: dict[str, Any], tmp_path: Path
) -> None:
    original = tmp_path / "site-a"
    shutil.copytree(served["ws"].root, original)
    ws = Workspace.open(original)
    back_up(original, tmp_path / "backup")
    predict(ws, served["rows"], range(92, 95))
    with Ledger.open(ws) as ledger:
        newer = ledger.checkpoint()  # a checkpoint beyond the backup, logged outside the DB
    restored = restore(tmp_path / "backup", tmp_path / "site-b")
    shutil.copy2(original / "ledger-checkpoints.jsonl", restored.root / "ledger-checkpoints.jsonl")
    with Ledger.open(restored, create=False) as ledger:
        report = ledger.verify()
        assert not report.ok  # entries written after the backup are missing, and it says so
        assert any(f"covers {newer.size} entries" in p.message for p in report.problems), [
            p.message for p in report.problems
        ]
