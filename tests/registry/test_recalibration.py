"""`registry recalibrate`: a release refitted at one site becomes a new, governed release.

The world: the small pooled model (sites north, south and east) released as @1, and a
snapshot of the west hospital whose mortality the model under-predicts
(``recal_world.miscalibrated_west``). Recalibrating @1 at west gives @2: same scoring
model, new calibrator, conformal thresholds and escalation reference, validated on west's
held-out stays, classed clinical-impacting against @1, and gated like any release.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recal_world import miscalibrated_west
from typer.testing import CliRunner

from clinical_mlops.application.recalibration import recalibrate_release
from clinical_mlops.application.training import replay_evaluation
from clinical_mlops.cli import app
from clinical_mlops.data.raw import read_source
from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.errors import RoleRequired, TransitionNotAllowed, ValueInvalid
from clinical_mlops.features.snapshot import build_snapshot, list_snapshots
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import gate_schema_contract
from clinical_mlops.ledger import Ledger
from clinical_mlops.modeling.recalibration import site_split
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from identities import console

TASK = "icu_mortality_48h"


@pytest.fixture(scope="module")
def west_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return miscalibrated_west(tmp_path_factory.mktemp("west"))


@pytest.fixture(scope="module")
def west_snapshot(west_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The snapshot folder of the west source, built once (copied into each test's workspace)."""
    ws = Workspace.open(tmp_path_factory.mktemp("west-snapshot"))
    return build_snapshot(ws, load_task(TASK), read_source(west_source)).path


def _world(fresh_workspace, trained, clock, west_snapshot, name):
    """(workspace, registry, governance, parent release, west snapshot id)."""
    ws = fresh_workspace(name)
    reg = Registry.open(ws, clock=clock)
    gov = Governance(reg)
    gov.grant_roles("cora", roles=["compliance"], actor="cora", why="bootstrap")
    gov.grant_roles("eli", roles=["engineering"], actor="cora", why="release team")
    parent = gov.register(
        build_bundle(ws, model_version=trained[1], author="eli", clock=clock),
        actor="eli",
        why="first release",
    )
    shutil.copytree(west_snapshot, ws.snapshots_dir / west_snapshot.name)
    return ws, reg, gov, parent.version, west_snapshot.name


def _state(ws, reg):
    """What a refusal must leave as it was: ledger, releases, models, bundles."""
    with Ledger.open(ws) as led:
        size = led.size()
    bundles = ws.root / "artifacts" / "bundles"
    return (
        size,
        [r.version for r in reg.list()],
        sorted(p.name for p in ws.models_dir.iterdir()),
        sorted(p.name for p in bundles.iterdir()) if bundles.exists() else [],
    )


def test_recalibrated_release_is_governed_and_better_calibrated_at_its_site(
    fresh_workspace, trained, clock, west_snapshot
):
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "iso")
    result = recalibrate_release(
        gov, parent, site="west", snapshot=snap_id, method="isotonic", actor="eli"
    )

    # a new draft release of the task, registered, its change computed against the parent
    rel = reg.get(result.release.version)
    assert rel.version == f"{TASK}@2" and rel.status == "draft"
    assert [r.version for r in reg.list()] == [parent, rel.version]
    assert rel.change["change_class"] == "clinical-impacting"
    assert rel.change["against"].startswith(reg.get(parent).model_version)
    counts = result.split["counts"]
    n_fit = counts["calibrator"]["stays"] + counts["conformal"]["stays"]
    recal = [c for c in rel.change["changes"] if c["what"] == "local recalibration"]
    assert len(recal) == 1 and recal[0]["class"] == "clinical-impacting"
    assert f"Calibration refit at site west on {n_fit} stays" in recal[0]["note"]
    changed = {c["what"] for c in rel.change["changes"]}
    assert {"calibrator", "conformal"} <= changed and "model" not in changed

    # the bundle verifies, is scoped to the site, and gate 1 passes on it
    bundle = reg.bundle(rel.version)
    parent_bundle = reg.bundle(parent)
    assert bundle.deployment["site"] == "west"
    assert "roll it out at site west only" in bundle.deployment["scope"]
    assert bundle.threshold == parent_bundle.threshold
    gate = gate_schema_contract(bundle)
    assert gate.passed, gate.failures
    # the scoring model is the parent's byte for byte; the calibration is not
    files, parent_files = bundle.manifest["files"], parent_bundle.manifest["files"]
    assert files["model.json"] == parent_files["model.json"]
    assert files["preprocess.json"] == parent_files["preprocess.json"]
    assert files["calibrator.json"] != parent_files["calibrator.json"]
    assert files["conformal.json"] != parent_files["conformal.json"]
    assert files["escalation_reference.json"] != parent_files["escalation_reference.json"]

    # lineage names the parent, the site, the snapshot and the method
    lineage = bundle.read_json("lineage.json")
    assert lineage["recalibration"]["site"] == "west"
    assert lineage["recalibration"]["method"] == "isotonic"
    assert lineage["recalibration"]["snapshot_id"] == snap_id
    assert lineage["recalibration"]["parent"]["release"] == parent
    assert lineage["recalibration"]["parent"]["model_version"] == trained[1]
    assert lineage["snapshot"]["id"] == snap_id

    # the validation report is computed on the site's held-out stays, and no other
    from clinical_mlops.features.snapshot import open_snapshot

    snap = open_snapshot(ws, snap_id)
    held_out = site_split(snap.frame(), snap.spec(), site="west", seed=lineage["seed"]).held_out
    report = bundle.report()
    assert report.test.n == len(held_out) == counts["held_out"]["stays"]
    assert set(held_out["real_year"]) <= set(range(2017, 2020))
    assert "site west" in str(report.calibration.fitted_on)
    assert bundle.profile().population.startswith("held-out stays of site west")
    # its calibration figures are those the use case printed for the new release
    assert report.calibration.ece == pytest.approx(
        result.calibration["recalibrated"]["ece"], abs=1e-4
    )

    # calibration at the site improves on the held-out stays
    before, after = result.calibration["parent"], result.calibration["recalibrated"]
    assert before["observed_rate"] > before["mean_predicted"]  # the world: under-prediction
    assert abs(after["intercept"]) < abs(before["intercept"])
    assert abs(after["observed_rate"] - after["mean_predicted"]) < abs(
        before["observed_rate"] - before["mean_predicted"]
    )
    assert after["ece"] < before["ece"]
    assert after["brier"] < before["brier"]

    # the conformal guarantee holds per class on the held-out site stays (within chance)
    bounds = bundle.model().conformal.coverage_bounds(held_out[snap.spec().label.name])
    for k in ("0", "1"):
        assert report.conformal.coverage_by_class[k] >= bounds["lower_bound_by_class"][k]

    # recorded: a training run of kind local_recalibration, then the registration
    with Ledger.open(ws) as led:
        events = [(led.entry(s).type, led.read(s).payload) for s in range(led.size())]
    runs = [p for t, p in events if t == "training_run" and p.get("kind") == "local_recalibration"]
    assert len(runs) == 1 and runs[0]["site"] == "west"
    assert runs[0]["model_version"] == result.model_version == bundle.model_version
    assert events[-1][0] == "release_registered"

    # the evidence replays from stored artifacts alone
    assert replay_evaluation(ws, result.model_version)["identical"] is True


def test_logistic_recalibration_is_deterministic_and_classed_against_its_parent(
    fresh_workspace, trained, clock, west_snapshot
):
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "log")
    first = recalibrate_release(
        gov, parent, site="west", snapshot=snap_id, method="logistic", actor="eli", n_boot=50
    )
    calibrator = reg.bundle(first.release.version).read_json("calibrator.json")
    assert calibrator["method"] == "logistic"
    assert first.release.change["change_class"] == "clinical-impacting"
    assert first.release.change["against"].startswith(reg.get(parent).model_version)
    assert first.calibration["recalibrated"]["ece"] < first.calibration["parent"]["ece"]
    # the same inputs and seed give the same model: refused as already registered
    state = _state(ws, reg)
    with pytest.raises(
        ValueInvalid, match=f"{first.model_version}.*already registered as {first.release.version}"
    ):
        recalibrate_release(
            gov, parent, site="west", snapshot=snap_id, method="logistic", actor="eli", n_boot=50
        )
    assert _state(ws, reg) == state
    # another seed splits the site's stays differently: another model
    other = recalibrate_release(
        gov,
        parent,
        site="west",
        snapshot=snap_id,
        method="logistic",
        actor="eli",
        seed=99,
        n_boot=50,
    )
    assert other.model_version != first.model_version
    assert other.release.version == f"{TASK}@3"


def test_refusals_name_the_field_and_record_nothing(
    fresh_workspace, trained, clock, west_source, west_snapshot
):
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "no")
    pooled = next(s for s in list_snapshots(ws) if s != snap_id)
    spec = load_task(TASK)
    # another task: the same stays under another task name; another feature contract: the
    # same task with a feature redefined (built elsewhere: their events carry the wall clock)
    elsewhere = Workspace.open(ws.root.parent / "elsewhere")
    other_task = build_snapshot(
        elsewhere,
        spec.model_copy(update={"name": "icu_mortality_other"}),
        read_source(west_source),
    )
    features = list(spec.features)
    # the same feature name, aggregated another way over the window
    at = next(i for i, f in enumerate(features) if f.aggregation not in ("static", "max"))
    features[at] = features[at].model_copy(update={"aggregation": "max"})
    other_contract = build_snapshot(
        elsewhere, spec.model_copy(update={"features": tuple(features)}), read_source(west_source)
    )
    for built in (other_task, other_contract):
        shutil.copytree(built.path, ws.snapshots_dir / built.path.name)
    state = _state(ws, reg)
    cases = [
        ({"site": "mars", "snapshot": snap_id}, r"--site: .*'mars'.*sites present: west"),
        (
            {"site": "west", "snapshot": snap_id, "method": "spline"},
            r"method: expected isotonic or logistic",
        ),
        (
            # the development snapshot's own stays: a calibrator fitted on them is biased
            {"site": "east", "snapshot": pooled},
            r"--site: .*development.*not external",
        ),
        ({"site": "west", "snapshot": other_task.id}, r"--on: .*task 'icu_mortality_other'"),
        (
            {"site": "west", "snapshot": other_contract.id},
            rf"--on: .*feature contract.*{features[at].name}",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueInvalid, match=message):
            recalibrate_release(gov, parent, actor="eli", **kwargs)
        assert _state(ws, reg) == state, kwargs

    # without the engineering role: refused before anything is fitted or written
    gov.grant_roles("dr.kim", roles=["clinical"], actor="cora", why="clinician")
    with pytest.raises(RoleRequired):
        recalibrate_release(gov, parent, site="west", snapshot=snap_id, actor="dr.kim")
    size, releases, models, bundles = _state(ws, reg)
    assert (releases, models, bundles) == state[1:]


def test_the_minimum_is_the_task_specs_and_counts_every_part(
    fresh_workspace, trained, clock, west_snapshot
):
    # A small hospital's stays are too few: every short part is named.
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "min")
    small = synthetic_source(
        Workspace.open(ws.root.parent / "small-west"),
        SyntheticConfig(seed=17, scale=0.03, sites=("west",)),
    ).path
    tiny = build_snapshot(ws, load_task(TASK), read_source(small)).id
    minimum = load_task(TASK).acceptance.min_recalibration_events
    with pytest.raises(ValueInvalid) as refused:
        recalibrate_release(gov, parent, site="west", snapshot=tiny, actor="eli")
    text = str(refused.value)
    assert f"at least {minimum} events" in text
    for part in ("fit the calibrator", "fit the conformal thresholds", "held out for evaluation"):
        assert part in text


def test_cli_prints_the_release_its_change_class_and_calibration_before_and_after(
    fresh_workspace, trained, clock, west_snapshot
):
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "cli")
    reg.close()
    runner = CliRunner()
    args = ["registry", "recalibrate", parent, "--site", "west", "--on", snap_id]
    res = runner.invoke(app, [*args, "--as", "eli", "--n-boot", "50", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert f"{TASK}@2" in res.stdout and "clinical-impacting" in res.stdout
    assert "Calibration refit at site west" in res.stdout
    for row in ("calibration intercept", "calibration slope", "ECE", "Brier"):
        assert row in res.stdout
    res = runner.invoke(
        app,
        [
            *args,
            "--method",
            "logistic",
            "--as",
            "eli",
            "--n-boot",
            "50",
            "--json",
            "-w",
            str(ws.root),
        ],
    )
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["release"] == f"{TASK}@3" and body["change_class"] == "clinical-impacting"
    before, after = (
        body["calibration_on_held_out"]["parent"],
        body["calibration_on_held_out"]["recalibrated"],
    )
    assert abs(after["intercept"]) < abs(before["intercept"])
    refused = runner.invoke(app, [*args, "--method", "spline", "--as", "eli", "-w", str(ws.root)])
    assert refused.exit_code != 0
    assert "method: expected isotonic or logistic" in str(refused.exception)
    assert np.isfinite(after["ece"])


def test_a_recalibrated_release_serves_its_site_only(
    fresh_workspace, trained, clock, west_snapshot
):
    ws, reg, gov, parent, snap_id = _world(fresh_workspace, trained, clock, west_snapshot, "scope")
    made = recalibrate_release(gov, parent, site="west", snapshot=snap_id, actor="eli")
    version = made.release.version
    assert reg.site_scope(version) == "west" and reg.site_scope(parent) is None
    size = Ledger.open(ws).size()
    with pytest.raises(TransitionNotAllowed, match=r"site: expected 'west'"):
        gov.set_rollout(
            version, site="north", mode="pilot", actor="eli", identity=console("eli"), why="pilot"
        )
    assert reg.deployment_manifest(TASK)["sites"] == {}

    # made live, it serves west in full and nothing else: '*' is not its to serve
    reg.activate(version, actor="eli", action="promote", why="approved for west")
    manifest = reg.deployment_manifest(TASK)
    assert set(manifest["sites"]) == {"west"}
    assert manifest["sites"]["west"]["release"] == version
    assert manifest["sites"]["west"]["mode"] == "full"
    assert manifest["active"] is None
    with Ledger.open(ws) as led:
        assert led.size() > size
