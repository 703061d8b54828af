"""seismometer export: the tables and config Epic's seismometer loads, from the audit ledger."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from clinical_mlops.application.governance import decide_case
from clinical_mlops.clock import FixedClock
from clinical_mlops.governance.oversight import record_outcome
from clinical_mlops.ledger import Ledger
from clinical_mlops.workspace import Workspace

ROOT = Path(__file__).parents[2]
#: the separate environment `make seismometer-env` installs seismometer into
SEISMOMETER_PYTHON = Path(
    os.environ.get("SEISMOMETER_PYTHON", ROOT / ".venv-seismometer" / "bin" / "python")
)
T0 = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
Cli = Callable[..., tuple[int, str, str]]


def _requests(rows: list[dict[str, Any]], indices: range) -> list[Any]:
    from clinical_mlops.serving import PredictionRequest

    return [
        PredictionRequest(
            subject_id=f"MRN-{i % 120}",
            purpose="direct_care",
            setting="icu",
            features=dict(rows[i % len(rows)]),
            request_id=f"seis-{i}",
            # every other request comes from an EHR naming the encounter
            encounter=f"ENC-{i}" if i % 2 == 0 else None,
        )
        for i in indices
    ]


@pytest.fixture
def served(governed: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """100 predictions at T0 and 100 at T0+2h; outcomes for 30 of the later ones at T0+3h."""
    from clinical_mlops.serving import Predictor

    ws = Workspace.open(shutil.copytree(governed["ws"].root, tmp_path / "ws"))
    clock = FixedClock(T0)
    with Predictor.open(ws, clock=clock, status_ttl=0) as p:
        early = p.predict_many(_requests(governed["rows"], range(100)), requester="system:ehr")
        clock.advance(timedelta(hours=2))
        late = p.predict_many(_requests(governed["rows"], range(100, 200)), requester="system:ehr")
    late_seqs = [r.audit_seq for r in late if r.status == "scored"]
    outcomes = {seq: i % 3 == 0 for i, seq in enumerate(late_seqs[:30])}
    with Ledger.open(ws, clock=FixedClock(T0 + timedelta(hours=3))) as led:
        for seq, died in outcomes.items():
            record_outcome(led, prediction_seqs=[seq], outcome=int(died), actor="system:lab")
        overridden = late_seqs[40]
        decide_case(led, overridden, action="override", actor="user:dr.kim")
        pseudonyms = {led.vault.pseudonym_for(f"MRN-{i}", create=False) for i in range(120)}
    return {
        "ws": ws,
        "release": governed["release"],
        "early": early,
        "late": late,
        "outcomes": outcomes,
        "overridden": overridden,
        "pseudonyms": pseudonyms,
    }


def _export(cli: Cli, served: dict[str, Any], out: Path, *more: str) -> dict[str, Any]:
    code, stdout, err = cli(
        "export", "seismometer", "--out", str(out), "-w", str(served["ws"].root), "--json", *more
    )
    assert code == 0, err
    return dict(json.loads(stdout))


def test_one_row_per_prediction_in_the_window_with_outcomes_joined(
    served: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "seis"
    since = (T0 + timedelta(hours=1)).isoformat()
    summary = _export(cli, served, out, "--release", served["release"], "--since", since)
    late = [r for r in served["late"] if r.status == "scored"]
    assert summary["predictions"] == len(late) > 0
    assert summary["outcomes"] == len(served["outcomes"])

    table = pq.read_table(out / "data" / "predictions.parquet")
    types = {f.name: str(f.type) for f in table.schema}
    assert types["PatientId"] in ("string", "large_string")
    assert types["EncounterId"] in ("string", "large_string")
    assert types["ScoringTime"].startswith("timestamp[")
    assert types["RiskScore"] == "double" and types["AuditSeq"] == "int64"
    assert types["lactate"] == "double" and types["sex"] in ("string", "large_string")
    pred = table.to_pandas()
    assert len(pred) == len(late)
    assert sorted(pred["AuditSeq"]) == sorted(r.audit_seq for r in late)
    by_seq = pred.set_index("AuditSeq")
    for r in late:  # the score each row carries is the one the patient was served
        assert by_seq.loc[r.audit_seq, "RiskScore"] == pytest.approx(r.probability)
    assert (pred["ScoringTime"] == pd.Timestamp(T0 + timedelta(hours=2)).tz_localize(None)).all()
    assert set(pred["age_group"]) <= {"18-44", "45-64", "65-79", "80+", "unknown"}

    events = pd.read_parquet(out / "data" / "events.parquet")
    assert list(events.columns) == ["PatientId", "EncounterId", "Type", "Time", "Value"]
    deaths = events[events["Type"] == "death_48h"]
    assert len(deaths) == len(served["outcomes"])
    for seq, died in served["outcomes"].items():
        row = by_seq.loc[seq]
        match = deaths[
            (deaths["PatientId"] == row["PatientId"])
            & (deaths["EncounterId"] == row["EncounterId"])
        ]
        assert list(match["Value"]) == [float(died)]
    assert (deaths["Time"] == pd.Timestamp(T0 + timedelta(hours=3)).tz_localize(None)).all()
    (override,) = events[events["Type"] == "ClinicianOverride"].itertuples()
    assert override.EncounterId == by_seq.loc[served["overridden"], "EncounterId"]

    usage = yaml.safe_load((out / "usage_config.yml").read_text(encoding="utf-8"))["data_usage"]
    assert (usage["entity_id"], usage["context_id"], usage["predict_time"]) == (
        "PatientId",
        "EncounterId",
        "ScoringTime",
    )
    assert usage["primary_output"] == "RiskScore"
    (target,) = [e for e in usage["events"] if e.get("usage") == "target"]
    assert target["source"] == "death_48h" and target["display_name"] == usage["primary_target"]
    config = yaml.safe_load((out / "config.yml").read_text(encoding="utf-8"))["other_info"]
    assert (out / config["data_dir"] / config["prediction_path"]).is_file()
    assert (out / config["data_dir"] / config["event_path"]).is_file()


def test_only_pseudonyms_leave_the_service(
    served: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "seis"
    _export(cli, served, out)
    pred = pd.read_parquet(out / "data" / "predictions.parquet")
    assert len(pred) == sum(r.status == "scored" for r in served["early"] + served["late"])
    assert set(pred["PatientId"]) <= served["pseudonyms"]
    with_encounter = pred[~pred["EncounterId"].str.startswith("seq-")]
    assert len(with_encounter) > 0
    for path in out.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert b"MRN-" not in raw and b"ENC-" not in raw, path


def test_an_empty_window_or_unknown_release_writes_nothing(
    served: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "seis"
    ws = str(served["ws"].root)
    later = (T0 + timedelta(days=30)).isoformat()
    code, _, err = cli("export", "seismometer", "--out", str(out), "-w", ws, "--since", later)
    assert code == 2
    assert f"release {served['release']} made no prediction from" in err
    code, _, err = cli("export", "seismometer", "--out", str(out), "-w", ws, "--release", "nope@9")
    assert code == 2 and "release 'nope@9' is not registered" in err
    assert not out.exists()


def test_seismometer_loads_the_export_with_its_own_loader(
    served: dict[str, Any], tmp_path: Path, cli: Cli
) -> None:
    assert SEISMOMETER_PYTHON.is_file(), (
        f"no seismometer environment at {SEISMOMETER_PYTHON}: run `make seismometer-env`"
    )
    out = tmp_path / "seis"
    summary = _export(cli, served, out)
    done = subprocess.run(
        [str(SEISMOMETER_PYTHON), str(Path(__file__).with_name("seismometer_load.py")), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["entity_keys"] == ["PatientId", "EncounterId"]
    assert loaded["rows"] == summary["predictions"]
    value = f"{loaded['target']}_Value"
    assert value in loaded["columns"] and "Clinician override_Value" in loaded["columns"]
    # seismometer joined each outcome to the prediction it was recorded for.
    rows = {int(r["AuditSeq"]): r for r in loaded["frame"]}
    for seq, died in served["outcomes"].items():
        assert float(rows[seq][value]) == float(died)
    assert float(rows[served["overridden"]]["Clinician override_Value"]) == 1.0
