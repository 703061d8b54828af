"""`tasks init --from-table`: a draft spec a person completes, then the whole pipeline on it.

The table is the synthetic ICU cohort written the way a team might hold it: an MRN column,
clinical column headers, an admission date, a race column, a free-text note. The draft is
refused until every TODO is answered; once it is, the table goes through contracts,
snapshot, training, validation, bundle, gates, approvals, serving and monitoring.
"""

from __future__ import annotations

import json
import math
import secrets
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from clinical_mlops.application.tasks import draft_from_table
from clinical_mlops.application.training import train_model
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.data.raw import read_source
from clinical_mlops.errors import InputInvalid, TaskSpecIncomplete
from clinical_mlops.features.snapshot import build_snapshot, open_snapshot
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.records import read_ledger_records
from clinical_mlops.monitoring.windows import Monitor, MonitorReference
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from registry_helpers import FAST

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

ICU = load_task("icu_mortality_48h")
HEADERS = {"heart_rate": "Heart Rate (bpm)", "map": "MAP", "death_48h": "died_48h"}


@pytest.fixture(scope="module")
def table_file(small_source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("byo")
    snap = build_snapshot(Workspace.open(folder / "icu"), ICU, read_source(small_source_dir))
    t = snap.features().merge(snap.cohort(), on="stay_id")
    t.insert(0, "MRN", [f"MRN{i:07d}" for i in t["stay_id"]])
    t["admit_date"] = [f"{y}-06-{1 + i % 28:02d}" for i, y in enumerate(t["real_year"])]
    t["notes"] = [f"free text {i}" for i in range(len(t))]
    t = t.rename(columns={**HEADERS, "ethnicity": "race"}).drop(
        columns=["stay_id", "split", "real_year"]
    )
    path = folder / "icu_extract.csv"
    t.to_csv(path, index=False)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# What a person decides; field path -> value (every TODO of the draft is answered here).
ANSWERS: dict[str, Any] = {
    "title": "In-hospital death within 48 hours, from our ICU extract",
    "description": "Probability of death in hospital within 48 h after ICU hour 24.",
    "anchor": "icu_admission",
    "prediction_time_hours": 24,
    "observation_window": {"start_hours": 0, "end_hours": 24},
    "cohort.setting": "icu",
    "label.window": {"start_hours": 24, "end_hours": 72},
    "label.description": "1 when the patient died in hospital between ICU hour 24 and 72.",
    "thresholds.operating": 0.4,
    "acceptance.min_auroc": 0.75,
    "acceptance.max_ece": 0.08,
    "acceptance.min_subgroup_auroc": 0.6,
    "intended_use": {
        "statement": "Decision support for ICU clinicians at hour 24 of an adult ICU stay.",
        "users": ["ICU physicians"],
        "setting": "Adult intensive care units",
        "population": "Adults in their first ICU stay",
    },
    "non_intended_uses": ["Children, or any decision without clinician review"],
    "consent.purposes_allowed": ["direct_care"],
    "presentation.title": "ICU 48-hour mortality risk (our extract)",
    "presentation.description": "At ICU hour 24, the probability of death in hospital within 48 h.",
    "presentation.risk_words": "48-h mortality risk",
    "presentation.outcome": "In-hospital death within 48 hours after ICU hour 24",
    "presentation.event": "death",
    "presentation.events": "deaths",
    "presentation.non_event": "survivor",
    "presentation.non_events": "survivors",
    "presentation.units": "stays",
}
UNITS = {"gcs": "{score}", "map": "mm[Hg]", "heart_rate_bpm": "/min", "resp_rate": "/min"}


def complete(draft: dict[str, Any]) -> dict[str, Any]:
    """Answer every TODO of a draft the way a reviewing clinician would."""
    data = json.loads(json.dumps(draft))
    for path, value in ANSWERS.items():
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    for f in data["features"]:
        f["justification"] = f"{f['label']} is an established marker of ICU mortality."
        f["status"] = "approved"
        if str(f.get("unit", "")).startswith("TODO"):
            f["unit"] = UNITS.get(f["name"], "1")
    return data


def test_the_draft_reads_the_columns_and_leaves_every_decision_to_a_person(
    table_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft.yaml"
    res = invoke("tasks", "init", "--from-table", str(table_file), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    roles = info["columns"]
    assert (roles["MRN"], roles["died_48h"], roles["admit_date"]) == ("id", "label", "time")
    assert roles["race"] == "ethnicity (audit only)" and roles["notes"] == "dropped (free text)"
    assert roles["Heart Rate (bpm)"] == "feature:numeric" and roles["sex"] == "feature:categorical"
    assert roles["ventilation"] == "feature:flag"

    draft = yaml.safe_load(out.read_text(encoding="utf-8"))
    table = pd.read_csv(table_file)
    assert draft["name"] == "icu_extract" and draft["label"]["name"] == "died_48h"
    assert draft["table"]["columns"] == {"heart_rate_bpm": "Heart Rate (bpm)", "map": "MAP"} | {
        "ethnicity": "race"
    }
    assert draft["table"]["drop_columns"] == ["notes"]
    hr = next(f for f in draft["features"] if f["name"] == "heart_rate_bpm")
    col = table["Heart Rate (bpm)"]
    assert hr["valid_range"] == [math.floor(col.min()), math.ceil(col.max())]
    sex = next(f for f in draft["features"] if f["name"] == "sex")
    assert sex["categories"] == sorted(table["sex"].unique())
    assert draft["clinical_baseline"] == "sofa_like"
    assert draft["cohort"]["years"] == [2008, 2019]
    assert draft["split"]["train_years"][0] == 2008 and draft["split"]["test_years"][1] == 2019

    # the loader refuses the draft, naming every field left to a person
    with pytest.raises(TaskSpecIncomplete) as refused:
        load_task(out)
    paths = [p for p, _ in refused.value.problems]
    assert len(paths) == info["todos"] > 0
    n = len(draft["features"])
    assert {f"features.{i}.justification" for i in range(n)} <= set(paths)
    assert {f"features.{i}.status" for i in range(n)} <= set(paths)
    assert {"thresholds.operating", "acceptance.min_auroc", "cohort.setting"} <= set(paths)
    check = invoke("tasks", "check", str(out))
    assert check.exit_code != 0 and isinstance(check.exception, TaskSpecIncomplete)

    # a second init does not overwrite the file a person is editing
    again = invoke("tasks", "init", "--from-table", str(table_file), "--out", str(out))
    assert again.exit_code == 2 and "--force" in again.output
    bad = invoke("tasks", "init", "--from-table", str(table_file), "--label", "nosuch")
    assert bad.exit_code == 2 and "nosuch" in bad.output


def test_a_completed_draft_runs_the_whole_pipeline_through_serving(
    table_file: Path, tmp_path: Path
) -> None:
    draft = draft_from_table(table_file)
    spec_file = tmp_path / "icu_extract.yaml"
    spec_file.write_text(yaml.safe_dump(complete(yaml.safe_load(draft.yaml))), encoding="utf-8")
    checked = invoke("tasks", "check", str(spec_file), "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["source"] == "table"

    ws_arg = ["-w", str(tmp_path / "ws")]
    build = invoke(
        "data", "build", "--source", "table", "--path", str(table_file), "--task", str(spec_file),
        *ws_arg, "--json",
    )  # fmt: skip
    assert build.exit_code == 0, build.output
    summary = json.loads(build.stdout)
    ws = Workspace.open(tmp_path / "ws")
    snap = open_snapshot(ws, summary["snapshot_id"])
    assert snap.manifest["leakage_check"]["checked"] is False
    assert snap.manifest["table"]["dropped_columns"] == ["notes"]

    result = train_model(ws, snap, config=FAST)
    assert result.report.baseline.name == "SOFA-like score"
    shown = govern_demo_release(ws, model_version=result.model_version)
    assert shown["status"] == "approved" and shown["version"] == "icu_extract@1"
    assert all(g["passed"] for g in shown["gates"].values())

    spec = snap.spec()
    row = pd.read_csv(table_file).iloc[0]
    columns = {f.name: spec.table.columns.get(f.name, f.name) for f in spec.features}
    features = {
        name: (
            None
            if pd.isna(row[col])
            else (row[col].item() if hasattr(row[col], "item") else row[col])
        )
        for name, col in columns.items()
    }
    with Ledger.open(ws) as led:
        record_consent(
            led.vault,
            pseudonym=led.vault.pseudonym_for("MRN0000001"),
            purposes=["direct_care"],
            valid_from=datetime(2020, 1, 1, tzinfo=UTC),
            valid_until=None,
            recorded_by="test",
        )
    request = {"subject_id": "MRN0000001", "purpose": "direct_care", "setting": "icu"}
    with Predictor.open(ws, task="icu_extract") as predictor:
        scored = predictor.predict(PredictionRequest(**request, features=features), requester="t")
        assert scored.status == "scored"
        expected = predictor.scorer(shown["version"]).model.probability(pd.DataFrame([features]))
        assert scored.probability == pytest.approx(float(expected[0]), abs=1e-12)
        ward = predictor.predict(
            PredictionRequest(**(request | {"setting": "ward"}), features=features), requester="t"
        )
        assert ward.refusal["code"] == "outside_intended_use"
        with pytest.raises(InputInvalid, match="notes"):
            predictor.predict(
                PredictionRequest(**request, features=features | {"notes": "x"}), requester="t"
            )

        auth = AuthConfig.from_secret(secrets.token_hex(32))
        client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
        token = auth.issue(subject="dr.t", roles=["clinician"])
        r = client.post(
            "/v1/predict",
            headers={"Authorization": f"Bearer {token}"},
            json=request | {"features": features},
        )
        assert r.status_code == 200 and r.json()["status"] == "scored"

        records = read_ledger_records(predictor.ledger)
        v = shown["version"]
        with Registry.open(ws) as reg:
            reference = MonitorReference.from_bundle(reg.bundle(v), release=v)
        run = Monitor(reference).run(records["inferences"][v])
        assert reference.spec.name == "icu_extract" and run.n_records == 2


def test_parquet_types_date_time_and_booleans_are_read_as_such(tmp_path: Path) -> None:
    n = 120
    t = pd.DataFrame(
        {
            "patient_id": range(n),
            "Age": [20 + i % 70 for i in range(n)],
            "admission": pd.date_range("2010-01-01", periods=n, freq="30D"),
            "discharged": pd.date_range("2010-01-05", periods=n, freq="30D"),
            "sepsis": [i % 3 == 0 for i in range(n)],
            "crp": [float(i) for i in range(n)],
            "outcome_readmit": [i % 7 == 0 for i in range(n)],
        }
    )
    t.to_parquet(tmp_path / "ward.parquet", index=False)
    draft = draft_from_table(tmp_path / "ward.parquet", time="admission")
    assert draft.columns == {
        "patient_id": "id",
        "outcome_readmit": "label",
        "admission": "time",
        "Age": "feature:numeric",
        "discharged": "dropped (date or time)",
        "sepsis": "feature:flag",
        "crp": "feature:numeric",
    }
    data = yaml.safe_load(draft.yaml)
    years = t["admission"].dt.year
    assert data["cohort"]["years"] == [int(years.min()), int(years.max())]
    assert data["table"]["columns"] == {"age": "Age"}
    assert str(data["clinical_baseline"]).startswith("TODO")  # no built-in score fits
