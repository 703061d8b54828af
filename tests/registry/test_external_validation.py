"""External validation (R-V1): `clinical-mlops validate RELEASE --on SNAPSHOT` stores a report
linked to the release; another task, stays seen in development, a development site and
period, and a selection without events are refused with nothing recorded."""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd
import pytest

from clinical_mlops.application.validation import external_validations, validate_externally
from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.data.contracts import ContractReport
from clinical_mlops.data.sources import synthetic_source, ward_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.data.ward import WardConfig
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.features.snapshot import build_snapshot, open_snapshot, write_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import external_validation_problems
from clinical_mlops.hashing import sha256_file
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.external import ExternalValidationRefused
from clinical_mlops.registry.registry import Registry
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace

TASK = "icu_mortality_48h"


def _world(fresh_workspace, trained, clock, name: str) -> tuple[Workspace, Governance, str]:
    ws = fresh_workspace(name)
    gov = Governance(Registry.open(ws, clock=clock))
    gov.grant_roles("cora", roles=["compliance"], actor="cora", why="bootstrap")
    gov.grant_roles("eli", roles=["engineering"], actor="cora", why="release team")
    bundle = build_bundle(ws, model_version=trained[1], author="eli", clock=clock)
    version = gov.register(bundle, actor="eli", why="first release").version
    return ws, gov, version


def _west(ws: Workspace, clock) -> str:
    """Another hospital's snapshot (site west), built from its own synthetic source."""
    source = synthetic_source(ws, SyntheticConfig(seed=23, scale=0.06, sites=("west",)))
    return build_snapshot(ws, load_task(TASK), source, clock=clock).id


def _subset(ws: Workspace, snapshot_id: str, *, events: int, non_events: int, clock) -> str:
    """A snapshot holding only some stays of ``snapshot_id`` (a small hospital's extract)."""
    snap = open_snapshot(ws, snapshot_id)
    spec = snap.spec()
    label = spec.label.name
    cohort = snap.cohort()
    keep = pd.concat(
        [
            cohort.loc[cohort[label] == 1].head(events),
            cohort.loc[cohort[label] == 0].head(non_events),
        ]
    )
    features = snap.features()
    return write_snapshot(
        ws,
        spec,
        stays=keep.reset_index(drop=True),
        features=features.loc[features["stay_id"].isin(keep["stay_id"])].reset_index(drop=True),
        report=ContractReport(),
        flow=[],
        source=snap.manifest["source"] | {"params": {"subset": [events, non_events]}},
        sql=snap.manifest["feature_sql"],
        engine="duckdb",
        clock=clock,
        actor="pipeline",
    ).id


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line as a user does (errors: one line, exit code 2)."""
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _recorded(ws: Workspace, gov: Governance, version: str) -> tuple[int, list[Any]]:
    with Ledger.open(ws) as led:
        n = sum(led.entry(s).type == "external_validation_recorded" for s in range(led.size()))
    return n, external_validations(gov, version)


def test_validate_on_another_site_stores_a_report_linked_to_the_release(
    fresh_workspace, trained, clock, monkeypatch, capsys
):
    ws, gov, version = _world(fresh_workspace, trained, clock, "external")
    west = _west(ws, clock)
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "eli")
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = _cli(
        monkeypatch, capsys, "validate", version, "--on", west[:12], "-w", str(ws.root)
    )
    assert code == 0, err
    assert "auroc" in out and "development" in out and "report: " in out

    listed = external_validations(gov, version)
    assert len(listed) == 1
    v = listed[0]
    assert (v.release, v.snapshot_id, v.sites) == (version, west, ("west",))
    assert v.n > 0 and 0 < v.n_events < v.n
    # the report is stored with the release: same schema as development, with the comparison
    report_path = v.path / "report.json"
    assert sha256_file(report_path) == v.report_sha256
    assert sha256_file(v.path / "report.html") == v.html_sha256
    assert f"report: {v.path / 'report.html'}" in out
    report = ValidationReport.load(report_path)
    development = gov.registry.bundle(version).report()
    assert report.schema_id == development.schema_id
    assert report.test.threshold == development.test.threshold
    assert report.escalation == development.escalation
    assert report.test.n == v.n and report.test.n_positive == v.n_events
    assert report.external is not None
    rows = {r.metric: r for r in report.external.rows}
    assert set(rows) == {
        "auroc",
        "calibration_slope",
        "calibration_intercept",
        "ece",
        "alerts_per_100",
        "reviews_per_100",
    }
    assert rows["auroc"].development == development.test.auroc
    assert rows["auroc"].external == report.test.auroc == v.auroc
    assert rows["auroc"].difference == pytest.approx(report.test.auroc - development.test.auroc)
    assert rows["alerts_per_100"].development == development.workload.alerts_per_100
    assert any("west" in s and "not in development" in s for s in report.external.independence)
    assert any("External validation of" in line for line in report.limitations)
    assert "External validation against development" in (v.path / "report.html").read_text()

    # the ledger entry carries the report's hash, written with the registry row
    with Ledger.open(ws) as led:
        entry = led.read(v.seq)
        assert led.entry(v.seq).type == "external_validation_recorded"
    assert entry.payload["report_sha256"] == v.report_sha256
    assert entry.payload["release"] == version and entry.payload["snapshot_id"] == west
    assert entry.payload["sites"] == ["west"] and entry.payload["n"] == v.n
    assert entry.payload["auroc"] == v.auroc

    # `registry show` lists it
    code, out, err = _cli(monkeypatch, capsys, "registry", "show", version, "-w", str(ws.root))
    assert code == 0, err
    assert f"external validation {v.id}" in out and "site(s) west" in out
    code, out, _ = _cli(
        monkeypatch, capsys, "registry", "show", version, "--json", "-w", str(ws.root)
    )
    assert [x["id"] for x in json.loads(out)["external_validations"]] == [v.id]

    # the same release, snapshot and sites once only: refused, nothing more recorded
    code, _, err = _cli(monkeypatch, capsys, "validate", version, "--on", west, "-w", str(ws.root))
    assert code == 2
    assert "--on:" in err and "already validated" in err
    assert _recorded(ws, gov, version)[0] == 1


def test_refusals_name_the_option_and_record_nothing(fresh_workspace, trained, clock):
    ws, gov, version = _world(fresh_workspace, trained, clock, "refusals")
    development = gov.registry.bundle(version).release["snapshot_id"]

    # another task: a readmission snapshot
    ward = build_snapshot(
        ws,
        load_task("readmission_30d"),
        ward_source(ws, WardConfig(seed=5, scale=0.05)),
        clock=clock,
    ).id
    with pytest.raises(ExternalValidationRefused, match=r"--on: snapshot \w+ is of task"):
        validate_externally(gov, version, on=ward, actor="eli")

    # the development snapshot itself: stays seen in development, same sites and years
    with pytest.raises(ExternalValidationRefused) as refused:
        validate_externally(gov, version, on=development, actor="eli")
    text = str(refused.value)
    assert "leakage: stays seen in development" in text
    assert "a site and period of development" in text
    assert {f for f, _ in refused.value.problems} == {"--on"}

    # one development site, named: the overlapping period names --site
    with pytest.raises(ExternalValidationRefused) as by_site:
        validate_externally(gov, version, on=development, sites=["north"], actor="eli")
    assert ("--site" in {f for f, _ in by_site.value.problems}) and "north" in str(by_site.value)

    # a site the snapshot does not hold
    with pytest.raises(ExternalValidationRefused, match=r"--site: .* holds no stay at mars"):
        validate_externally(gov, version, on=_west(ws, clock), sites=["mars"], actor="eli")

    # a hospital extract without a single event
    no_events = _subset(ws, _west(ws, clock), events=0, non_events=40, clock=clock)
    with pytest.raises(
        ExternalValidationRefused, match=r"--on: the 40 selected stays have no events"
    ):
        validate_externally(gov, version, on=no_events, actor="eli")

    assert _recorded(ws, gov, version) == (0, [])
    assert not (ws.artifacts_dir / "validations").exists() or not any(
        p for p in (ws.artifacts_dir / "validations").rglob("report.json")
    )


def test_too_few_stays_are_reported_as_insufficient_never_as_a_figure(
    fresh_workspace, trained, clock
):
    ws, gov, version = _world(fresh_workspace, trained, clock, "small")
    small = _subset(ws, _west(ws, clock), events=3, non_events=12, clock=clock)
    v = validate_externally(gov, version, on=small, actor="eli")
    assert (v.n, v.n_events, v.auroc) == (15, 3, None)
    report = ValidationReport.load(v.path / "report.json")
    assert report.external is not None
    for row in report.external.rows:
        assert isinstance(row.external, str) and row.external.startswith("insufficient data")
        assert row.difference is None
    assert report.external.auroc_ci_below_development is None
    # a validation without a measured AUROC counts for no site at the approval gate
    spec = load_task(TASK)
    requiring = spec.model_copy(
        update={"acceptance": spec.acceptance.model_copy(update={"min_external_sites": 1})}
    )
    problems = external_validation_problems(requiring, external_validations(gov, version))
    assert problems and "validated at none: 1 more site(s) missing" in problems[0]


def test_approval_gate_counts_externally_validated_sites(fresh_workspace, trained, clock):
    ws, gov, version = _world(fresh_workspace, trained, clock, "gate")
    spec = load_task(TASK)
    assert spec.acceptance.min_external_sites == 0
    assert external_validation_problems(spec, []) == []

    def requiring(n: int) -> Any:
        return spec.model_copy(
            update={"acceptance": spec.acceptance.model_copy(update={"min_external_sites": n})}
        )

    validate_externally(gov, version, on=_west(ws, clock), actor="eli")
    listed = external_validations(gov, version)
    assert external_validation_problems(requiring(1), listed) == []
    (problem,) = external_validation_problems(requiring(2), listed)
    assert "acceptance.min_external_sites" in problem
    assert "validated at west: 1 more site(s) missing" in problem
    # the default keeps every existing spec's hash
    assert requiring(0).spec_hash() == spec.spec_hash() != requiring(1).spec_hash()


def test_validate_needs_a_validating_role(fresh_workspace, trained, clock):
    from clinical_mlops.errors import RoleRequired

    ws, gov, version = _world(fresh_workspace, trained, clock, "role")
    with pytest.raises(RoleRequired):
        validate_externally(gov, version, on=_west(ws, clock), actor="cora")
    assert _recorded(ws, gov, version) == (0, [])
