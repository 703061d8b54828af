"""``clinical-mlops evidence`` on the demo release: a signed set, a ledger entry, errors that write nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.evidence import FORMATS
from clinical_mlops.evidence.store import MANIFEST, evidence_root, read_evidence
from clinical_mlops.hashing import sha256_file
from clinical_mlops.ledger import Ledger


def _ledger_size(ws: Any) -> int:
    with Ledger.open(ws) as led:
        return led.size()


def test_format_all_writes_every_registered_document_signed_and_recorded(
    world: dict[str, Any], cli: Any
) -> None:
    ws, release = world["ws"], world["release"]
    code, out, err = cli(["evidence", release, "--format", "all", "--json", "-w", str(ws.root)])
    assert code == 0, err
    written = json.loads(out)
    assert written["formats"] == list(FORMATS)
    assert "read the facts" in err and "built chai" in err and "signed" in err
    folder = Path(written["path"])
    assert folder.parent == evidence_root(ws, release)
    for doc in written["documents"]:
        for name, digest in doc["files"].items():
            assert sha256_file(folder / name) == digest
    status = read_evidence(ws, release, now=datetime.now(UTC))
    assert status is not None and status["verified"], status
    assert status["manifest_sha256"] == written["manifest_sha256"] == sha256_file(folder / MANIFEST)
    assert status["release_changed"] == [] and status["monitoring_changed"] is False
    with Ledger.open(ws) as led:
        entry = led.read(written["seq"])
    assert entry.entry.type == "evidence_written"
    assert entry.payload is not None
    assert entry.payload["manifest_sha256"] == written["manifest_sha256"]
    assert entry.payload["formats"] == list(FORMATS)


def test_a_tampered_evidence_file_is_detected(world: dict[str, Any], cli: Any) -> None:
    ws, release = world["ws"], world["release"]
    code, out, err = cli(["evidence", release, "--json", "-w", str(ws.root)])
    assert code == 0, err
    xml = Path(json.loads(out)["path"]) / "chai-model-card.xml"
    xml.write_bytes(xml.read_bytes().replace(b"To be completed by", b"Completed by"))
    status = read_evidence(ws, release, now=datetime.now(UTC))
    assert status is not None and not status["verified"]
    assert status["problems"] == [
        "chai-model-card.xml does not match its SHA-256 in the signed manifest"
    ]


def test_the_table_names_missing_fields_and_their_owners(world: dict[str, Any], cli: Any) -> None:
    code, out, err = cli(
        ["evidence", world["release"], "--format", "hti1", "-w", str(world["ws"].root)]
    )
    assert code == 0, err
    assert "hti1" in out and "provider organisation" in out and "deployer (hospital)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope@9"], "release 'nope@9' is not registered"),
        (["{release}", "--as-of", "2999-01-01T00:00:00Z"], "is in the future"),
        (["{release}", "--as-of", "2001-01-01T00:00:00Z"], "before release"),
        (["{release}", "--as-of", "yesterday"], "--as-of: expected an ISO-8601 time"),
        (["{release}", "--format", "fhir"], "--format: 'fhir' is not one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    world: dict[str, Any], cli: Any, args: list[str], message: str
) -> None:
    ws, release = world["ws"], world["release"]
    before = _ledger_size(ws)
    code, _, err = cli(["evidence", *(a.format(release=release) for a in args), "-w", str(ws.root)])
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not evidence_root(ws, release).exists()
    assert _ledger_size(ws) == before


def test_a_format_not_built_in_this_version_is_refused(
    world: dict[str, Any], cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(FORMATS, "hti1")
    code, _, err = cli(
        ["evidence", world["release"], "--format", "hti1", "-w", str(world["ws"].root)]
    )
    assert code == 2 and "'hti1' is not available in this version" in err
    assert not evidence_root(world["ws"], world["release"]).exists()


def test_freshness_reports_release_and_monitoring_changes_since_the_set(
    world: dict[str, Any], cli: Any
) -> None:
    from clinical_mlops.database import open_metadata_engine
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.governance.policy import run_gates
    from clinical_mlops.monitoring import schema as t
    from clinical_mlops.monitoring.records import epoch
    from clinical_mlops.monitoring.runs import store_windows
    from clinical_mlops.monitoring.windows import WindowResult
    from clinical_mlops.registry.registry import Registry

    ws, release = world["ws"], world["release"]
    code, out, err = cli(["evidence", release, "--json", "-w", str(ws.root)])
    assert code == 0, err
    as_of = json.loads(out)["as_of"]
    with Registry.open(ws) as reg, Governance(reg) as gov:
        run_gates(gov, release, actor="demo.alex.kim")
    engine = open_metadata_engine(ws.database_url("meta"), t.metadata)
    try:
        later = epoch(as_of) + 60.0
        store_windows(
            engine, release, [WindowResult(at=later, quantities={"idle": 0, "n_window": 5})]
        )
    finally:
        engine.dispose()
    status = read_evidence(ws, release, now=datetime.now(UTC))
    assert status is not None and status["verified"]
    assert {e["type"] for e in status["release_changed"]} == {"gate_evaluated"}
    assert status["monitoring_changed"] is True and status["newer_windows"] == 1
    assert status["age_hours"] >= 0
