"""Any table can train: a points baseline declared in YAML, a charted score column, or none.

The table (``table_task``) is a diabetes study whose variables fit neither SOFA nor LACE.
With a metabolic-syndrome count declared in the spec it is trained, bundled, approved by
distinct people through the gates, and served over HTTP; with ``none`` and a reason it
is trained and its report and model card say why there is no comparison; with the score
as charted in a column, that column reaches the report but never the model.
"""

from __future__ import annotations

import html
import json
import secrets
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import table_task
from clinical_mlops.application.training import train_model
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.errors import TableInvalid, TaskSpecInvalid
from clinical_mlops.evaluation.baseline import score_for
from clinical_mlops.features.snapshot import build_table_snapshot, open_snapshot
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import load_task, task_from_mapping
from clinical_mlops.workspace import Workspace
from registry_helpers import FAST

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient


# The snapshot column of a charted score (tasks.spec.BASELINE_COLUMN), named here so this
# file loads on code that predates it.
BASELINE_COLUMN = "clinical_baseline_score"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return table_task.diabetes_table()


@pytest.fixture(scope="module")
def csv(table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dm") / "diabetes.csv"
    table.to_csv(path, index=False)
    return path


def _test_rows(snapshot_cohort: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The table rows of the locked test stays (a snapshot's stay_id is the 1-based file row)."""
    test = snapshot_cohort.loc[snapshot_cohort["split"] == "test"].sort_values("stay_id")
    return table.iloc[test["stay_id"].to_numpy() - 1].reset_index(drop=True)


def test_a_table_task_with_a_yaml_points_baseline_is_trained_bundled_approved_and_served(
    table: pd.DataFrame, csv: Path, tmp_path: Path
) -> None:
    spec_file = table_task.write(tmp_path, table_task.spec())
    checked = invoke("tasks", "check", str(spec_file))
    assert checked.exit_code == 0, checked.output
    assert "Metabolic-syndrome-like count (0-4 points)" in " ".join(checked.stdout.split())

    ws_arg = ["-w", str(tmp_path / "ws")]
    build = invoke(
        "data", "build", "--source", "table", "--path", str(csv), "--task", str(spec_file),
        *ws_arg, "--json",
    )  # fmt: skip
    assert build.exit_code == 0, build.output
    ws = Workspace.open(tmp_path / "ws")
    snap = open_snapshot(ws, json.loads(build.stdout)["snapshot_id"])
    assert BASELINE_COLUMN not in snap.cohort().columns  # a points score is computed, not read

    result = train_model(ws, snap, config=FAST)
    base = result.report.baseline
    assert base.name == table_task.POINTS_BASELINE["name"]
    assert base.source == table_task.POINTS_BASELINE["citation"]
    assert base.features == ["bmi", "hdl", "map", "impaired_fasting_glucose"]
    assert len(base.approximations) == 3
    # the figures are those of the count recomputed from the file's own columns
    rows = _test_rows(snap.cohort(), table)
    expected = table_task.points(rows)
    assert base.mean_score == pytest.approx(float(expected.mean()), abs=1e-12)
    assert base.auroc == pytest.approx(roc_auc_score(rows["progressed"], expected), abs=1e-12)
    assert [p["cutoff"] for p in base.operating_points] == [1, 2, 3, 4]

    shown = govern_demo_release(ws, model_version=result.model_version)
    assert shown["status"] == "approved"
    assert all(g["passed"] for g in shown["gates"].values())
    metrics_gate = shown["gates"]["metrics"]["evidence"]
    assert metrics_gate["criteria"]["must_beat_baseline"] is True
    assert metrics_gate["baseline_auroc"] == base.auroc < result.report.test.auroc
    deciders = {a["person"] for a in shown["approvals"]}
    assert len(deciders) == 3  # engineering, clinical and compliance: three people

    row = table.iloc[0]
    spec = snap.spec()
    assert spec.table is not None
    features = {
        f.name: (lambda v: v.item() if hasattr(v, "item") else v)(
            row[spec.table.columns.get(f.name, f.name)]
        )
        for f in spec.features
    }
    with Ledger.open(ws) as led:
        record_consent(
            led.vault,
            pseudonym=led.vault.pseudonym_for("DM00000"),
            purposes=["direct_care"],
            valid_from=datetime(2020, 1, 1, tzinfo=UTC),
            valid_until=None,
            recorded_by="test",
        )
    with Predictor.open(ws, task=table_task.NAME) as predictor:
        auth = AuthConfig.from_secret(secrets.token_hex(32))
        client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
        token = auth.issue(subject="dr.t", roles=["clinician"])
        r = client.post(
            "/v1/predict",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "subject_id": "DM00000",
                "purpose": "direct_care",
                "setting": "ward",
                "features": features,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "scored" and body["release"] == shown["version"]
        scorer = predictor.scorer(shown["version"])
        expected_p = scorer.model.probability(pd.DataFrame([features]))
        assert body["probability"] == pytest.approx(float(expected_p[0]), abs=1e-12)
        # at the bedside the declared score is computed from the request's own inputs
        bedside = scorer.bedside_baseline
        assert bedside is not None
        assert int(bedside.score(pd.DataFrame([features]))[0]) == int(
            table_task.points(table.iloc[[0]])[0]
        )


def test_a_table_task_with_no_baseline_and_a_reason_is_trained_and_says_why(
    table: pd.DataFrame, csv: Path, tmp_path: Path
) -> None:
    reason = table_task.NO_BASELINE["reason"]
    refused = table_task.write(
        tmp_path, table_task.spec(clinical_baseline=table_task.NO_BASELINE), name="strict.yaml"
    )
    strict = invoke("tasks", "check", str(refused))
    assert strict.exit_code != 0 and isinstance(strict.exception, TaskSpecInvalid)
    assert strict.exception.problems[0][0] == "acceptance.must_beat_baseline"
    assert "true needs a clinical baseline to beat" in str(strict.exception)

    data = table_task.spec(clinical_baseline=table_task.NO_BASELINE)
    data["acceptance"]["must_beat_baseline"] = False
    spec_file = table_task.write(tmp_path, data)
    checked = invoke("tasks", "check", str(spec_file))
    assert checked.exit_code == 0, checked.output
    assert "clinical baseline none (reason given)" in " ".join(checked.stdout.split())

    ws = Workspace.open(tmp_path / "ws")
    snap = build_table_snapshot(ws, load_task(spec_file), csv)
    result = train_model(ws, snap, config=FAST)
    stored = json.loads(result.paths["report.json"].read_text(encoding="utf-8"))
    assert stored["baseline"]["declared"] is False
    assert stored["baseline"]["reason"] == reason
    assert any(reason in line for line in stored["limitations"])
    for name in ("report.html", "model_card.md", "model_card.html"):
        text = html.unescape(" ".join(result.paths[name].read_text(encoding="utf-8").split()))
        assert "No clinical baseline" in text and reason in text, name
    assert "auroc_difference" not in json.dumps(stored["baseline"])

    shown = govern_demo_release(ws, model_version=result.model_version)
    assert shown["status"] == "approved"
    gate = shown["gates"]["metrics"]["evidence"]
    assert "baseline_auroc" not in gate and reason in gate["baseline"]


def test_a_charted_score_column_reaches_the_report_and_never_the_model(
    table: pd.DataFrame, tmp_path: Path
) -> None:
    charted = table.copy()
    score = table_task.points(table).astype(float)
    score[::17] = np.nan  # not charted for some patients: scores 0
    charted.insert(3, "metabolic score (charted)", score)
    path = tmp_path / "charted.csv"
    charted.to_csv(path, index=False)
    column = {
        "kind": "column",
        "name": "Metabolic score as charted",
        "column": "metabolic score (charted)",
        "citation": "NCEP ATP III, JAMA 2001;285:2486-2497",
        "max_points": 4,
    }
    spec_file = table_task.write(tmp_path, table_task.spec(clinical_baseline=column))
    assert invoke("tasks", "check", str(spec_file)).exit_code == 0

    ws = Workspace.open(tmp_path / "ws")
    spec = load_task(spec_file)
    snap = build_table_snapshot(ws, spec, path)
    assert BASELINE_COLUMN in snap.cohort().columns
    assert BASELINE_COLUMN not in snap.features().columns
    result = train_model(ws, snap, config=FAST)
    assert result.model.preprocessor.features == spec.feature_names
    rows = _test_rows(snap.cohort(), charted)
    values = rows["metabolic score (charted)"].fillna(0).to_numpy()
    base = result.report.baseline
    assert base.name == column["name"] and "as charted" in base.missing_values
    assert base.auroc == pytest.approx(roc_auc_score(rows["progressed"], values), abs=1e-12)

    # a value outside 0..max_points is refused, naming the column and the file rows
    bad = charted.copy()
    bad.loc[5, "metabolic score (charted)"] = 7
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TableInvalid, match=r"'metabolic score \(charted\)'.*\[7\.0\] \(rows 6\)"):
        build_table_snapshot(Workspace.open(tmp_path / "ws2"), spec, tmp_path / "bad.csv")
    # no bedside fallback can be computed from a column the request does not carry
    assert score_for(spec) is not None and score_for(spec).column == BASELINE_COLUMN


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(TaskSpecInvalid) as refused:
        task_from_mapping(data, source="spec.yaml")
    return refused.value.problems


def _points(**item_changes: Any) -> dict[str, Any]:
    base = json.loads(json.dumps(table_task.POINTS_BASELINE))
    base["items"][0].update(item_changes)
    return base


@pytest.mark.parametrize(
    ("baseline", "changes", "path", "fragment"),
    [
        ("foo", {}, "clinical_baseline", "expected one of lace_like, sofa_like, or a mapping"),
        ({"kind": "maybe"}, {}, "clinical_baseline.kind", "expected points, column or none"),
        ({"kind": "none", "reason": "none"}, {}, "clinical_baseline.reason", "at least 40"),
        (_points(feature="waist"), {}, "clinical_baseline.items.0.feature", "'waist' is not"),
        (_points(feature="sex"), {}, "clinical_baseline.items.0.bands", "is categorical"),
        (
            _points(bands=[{"high": 30, "points": 0}, {"low": 28, "points": 1}]),
            {},
            "clinical_baseline.items.0.bands",
            "band 2 starts at 28, below the high 30 of band 1",
        ),
        (
            _points(bands=[{"low": 30, "points": 1}, {"high": 30, "points": 0}]),
            {},
            "clinical_baseline.items.0.bands",
            "only the last band may be open above (band 1 is)",
        ),
        (
            _points(bands=[{"high": 30, "points": 0.5}]),
            {},
            "clinical_baseline.items.0.bands.0.points",
            "integer",
        ),
        (_points(points=2), {}, "clinical_baseline.items.0", "give exactly one of bands"),
        (
            {**table_task.POINTS_BASELINE, "max_points": 5},
            {},
            "clinical_baseline.max_points",
            "add up to at most 4 points, not 5",
        ),
        (
            table_task.POINTS_BASELINE,
            {"features": "proposed"},
            "clinical_baseline.items.0.feature",
            "'bmi' is proposed",
        ),
        (
            {"kind": "column", "name": "charted", "column": "BMI", "citation": "a publication"}
            | {"max_points": 4},
            {},
            "clinical_baseline.column",
            "already the table's feature 'bmi'",
        ),
    ],
)
def test_a_declared_baseline_is_checked_strictly(
    baseline: Any, changes: dict[str, str], path: str, fragment: str
) -> None:
    data = table_task.spec(clinical_baseline=baseline)
    if changes.get("features"):
        data["features"][2]["status"] = changes["features"]
    problems = _problems(data)
    assert any(p == path and fragment in m for p, m in problems), problems


def test_a_column_baseline_needs_a_table_and_categories_score_by_value() -> None:
    icu = load_task("icu_mortality_48h").model_dump(mode="json")
    icu["clinical_baseline"] = {
        "kind": "column",
        "name": "SOFA as charted",
        "column": "sofa",
        "citation": "Vincent 1996 Intensive Care Med",
        "max_points": 24,
    }
    assert _problems(icu)[0][0] == "clinical_baseline.column"

    icu["clinical_baseline"] = {
        "kind": "points",
        "name": "Admission-type points",
        "citation": "an illustrative point table",
        "max_points": 3,
        "items": [
            {"feature": "diagnosis_category", "categories": {"infectious": 2, "circulatory": 1}},
            {"feature": "ventilation", "points": 1},
        ],
    }
    spec = task_from_mapping(icu, source="spec.yaml")
    score = score_for(spec)
    assert score is not None and score.max_points == 3
    frame = pd.DataFrame(
        {
            "diagnosis_category": ["infectious", "circulatory", "blood", None],
            "ventilation": pd.array([1, 0, pd.NA, 1], dtype="Int8"),
        }
    )
    assert score.score(frame).tolist() == [3, 1, 0, 1]
