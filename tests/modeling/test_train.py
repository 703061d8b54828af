"""The training protocol: reproducible, honest about uncertainty, and strict about bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clinical_mlops.application.training import replay_evaluation, train_model
from clinical_mlops.data.raw import read_source
from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.errors import ContractViolation, ModelNotFound, SnapshotNotFound, WorkspaceError
from clinical_mlops.features.snapshot import build_snapshot, locked_test_stays, open_snapshot
from clinical_mlops.modeling.train import TrainingConfig
from clinical_mlops.modeling.trained import TrainedModel, model_folder
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

SPEC = load_task("icu_mortality_48h")
FAST = TrainingConfig(
    seed=5, search_iterations=2, n_boot=200, candidates=("logistic_regression", "xgboost")
)


@pytest.fixture(scope="module")
def small(small_source_dir, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("train"))
    snap = build_snapshot(ws, SPEC, read_source(small_source_dir))
    return ws, snap, train_model(ws, snap, config=FAST)


def test_same_seed_gives_identical_metrics_and_model_hash(small):
    ws, snap, first = small
    again = train_model(ws, snap, config=FAST)
    assert again.model.model_sha256 == first.model.model_sha256
    assert again.model_version == first.model_version
    assert again.summary()["test"] == first.summary()["test"]
    different = train_model(
        ws,
        snap,
        config=TrainingConfig(
            seed=6, search_iterations=2, n_boot=200, candidates=("logistic_regression", "xgboost")
        ),
    )
    assert different.model.model_sha256 != first.model.model_sha256


def test_json_summary_has_every_promised_field(small):
    s = small[2].summary()
    for key in (
        "model_version",
        "model_sha256",
        "selected_model",
        "cv_auroc",
        "test",
        "subgroups",
        "fairness",
        "baseline",
        "report_html",
        "report_json",
        "model_card",
    ):
        assert key in s, key
    for key in (
        "auroc",
        "auroc_ci",
        "sensitivity",
        "specificity",
        "ppv",
        "brier",
        "ece",
        "conformal_coverage",
    ):
        assert key in s["test"], key
    for metric in (
        "equalized_odds_difference",
        "demographic_parity_difference",
        "predictive_parity_difference",
    ):
        assert {"value", "ci"} <= set(s["fairness"][metric])
    assert {"name", "auroc"} <= set(s["baseline"])
    json.dumps(s, allow_nan=False)


def test_reported_auroc_matches_sklearn_on_the_test_set(small):
    ws, snap, result = small
    test = locked_test_stays(snap)
    p = result.model.probability(test)
    assert result.summary()["test"]["auroc"] == pytest.approx(
        roc_auc_score(test["death_48h"], p), abs=1e-12
    )


def test_artifacts_are_json_and_reload_to_identical_predictions(small):
    ws, snap, result = small
    folder = result.folder
    for name in (
        "model.json",
        "preprocess.json",
        "calibrator.json",
        "conformal.json",
        "explanation.json",
        "lineage.json",
        "report.json",
        "report.html",
        "model_card.md",
        "model_card.html",
        "model_card.json",
    ):
        assert (folder / name).exists(), name
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.joblib"))
    loaded = TrainedModel.load(folder)
    test = locked_test_stays(snap)
    np.testing.assert_array_equal(loaded.probability(test), result.model.probability(test))
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["snapshot"]["id"] == snap.id
    assert lineage["artifacts"] == loaded.artifact_hashes()
    assert lineage["seed"] == 5
    assert lineage["snapshot"]["feature_sql"]["sha256"] == snap.manifest["feature_sql"]["sha256"]
    assert (
        "xgboost" in lineage["environment"]["packages"]
        or "xgboost-cpu" in lineage["environment"]["packages"]
    )


def test_replay_reproduces_the_report_bit_for_bit(small):
    ws, _, result = small
    outcome = replay_evaluation(ws, result.model_version)
    assert outcome["identical"] is True


def test_replay_detects_a_tampered_artifact(small, tmp_path):
    import shutil

    ws, _, result = small
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    cal = copy.models_dir / result.model_version / "calibrator.json"
    data = json.loads(cal.read_text())
    data["y"][-1] = 0.5
    cal.write_text(json.dumps(data))
    with pytest.raises(WorkspaceError, match="calibrator.json do not match their lineage hashes"):
        replay_evaluation(copy, result.model_version)


def test_unknown_snapshot_and_model_are_clear_errors(workspace):
    with pytest.raises(SnapshotNotFound, match="build one with"):
        open_snapshot(workspace, "feedfacefeedface")
    with pytest.raises(ModelNotFound, match="train one with"):
        model_folder(workspace, "icu_mortality_48h-000000000000")


def test_a_spec_that_no_longer_matches_the_snapshot_is_refused(small, monkeypatch):
    _, snap, _ = small
    changed = snap.manifest | {"task": snap.manifest["task"] | {"spec_sha256": "0" * 64}}
    stale = type(snap)(id=snap.id, path=snap.path, manifest=changed)
    with pytest.raises(WorkspaceError, match="different version of task"):
        train_model(Workspace(snap.path.parents[2]), stale, config=FAST)


def test_too_few_positives_for_the_folds_is_refused_and_writes_nothing(tmp_path):
    from raw_fixture import stay, write_source

    stays = [stay(i) for i in range(1, 30)] + [stay(40, death_h=30.0, los_h=30.0)]
    stays += [stay(50, real_year=2018), stay(51, real_year=2018, death_h=30.0, los_h=30.0)]
    ws = Workspace.open(tmp_path / "ws")
    snap = build_snapshot(ws, SPEC, read_source(write_source(tmp_path / "raw", stays)))
    with pytest.raises(ContractViolation, match="1 positive .* every fold needs both"):
        train_model(ws, snap, config=FAST)
    assert not any(p for p in ws.models_dir.iterdir() if not p.name.startswith("."))
    assert not any(ws.models_dir.iterdir())


@pytest.mark.slow
def test_conformal_coverage_on_the_default_test_set_meets_the_guarantee(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("default"))
    snap = build_snapshot(ws, SPEC, synthetic_source(ws, SyntheticConfig(seed=7)))
    result = train_model(
        ws,
        snap,
        config=TrainingConfig(seed=7, search_iterations=1, n_boot=200, candidates=("xgboost",)),
    )
    s = result.summary()
    bounds = s["conformal_guarantee"]
    assert bounds["target"] == pytest.approx(0.9)
    assert s["test"]["conformal_coverage"] >= bounds["lower_bound"]
    for k in ("0", "1"):
        assert s["test"]["conformal_coverage_by_class"][k] >= bounds["lower_bound_by_class"][k]
    assert 0.80 <= s["test"]["auroc"] <= 0.90


def test_report_command_shows_the_headline_table(small):
    from typer.testing import CliRunner

    from clinical_mlops.cli import app

    ws, _, result = small
    out = CliRunner().invoke(app, ["report", result.model_version, "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    assert "Model selection" in out.output and "Table 2 layout" in out.output
    as_json = CliRunner().invoke(
        app, ["report", result.model_version, "-w", str(ws.root), "--json"]
    )
    assert json.loads(as_json.stdout)["test"]["auroc"] == result.summary()["test"]["auroc"]
