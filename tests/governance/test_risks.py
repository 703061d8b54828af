"""Risks a release carries out of validation block gate 3 until a named clinical or compliance
person acknowledges each with a reason; bad acknowledgements are refused naming the field and
record nothing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.errors import TaskSpecInvalid
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.ledger import Ledger
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from identities import Keyring

AUTHOR, ENG, CLIN, COMP, BOTH = "eli", "erin", "dr.kim", "cora", "max"


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """Run the command line as a user would: return (exit code, stdout + stderr)."""

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + " ".join(out.err.split())

    return run


def _report(trained: tuple[Path, str]) -> ValidationReport:
    ws = Workspace.open(trained[0])
    return ValidationReport.load(ws.models_dir / trained[1] / "report.json")


def _entries(ws: Workspace, kind: str) -> list[tuple[Any, dict[str, Any]]]:
    with Ledger.open(ws) as led:
        found = []
        for seq in range(led.size()):
            entry = led.entry(seq)
            if entry.type == kind:
                found.append((entry, led.read(seq).payload))
    return found


# -- risks_of on a real report ----------------------------------------------------------------


def test_risks_of_a_real_report_follow_its_figures(trained: tuple[Path, str]) -> None:
    from clinical_mlops.governance.risks import risks_of

    report, spec = _report(trained), load_task("icu_mortality_48h")
    risks = risks_of(report, spec)
    assert risks == risks_of(report, spec)  # deterministic: ids keep naming the same finding
    by_id = {r.id: r for r in risks}
    assert len(by_id) == len(risks)

    # every fairness alert is a risk, with the alert's gap and tolerance
    assert report.fairness_alerts, "the small test model is expected to show a fairness alert"
    for alert in report.fairness_alerts:
        risk = by_id[f"fairness:{alert.attribute}:auroc_gap"]
        assert (risk.kind, risk.observed, risk.limit) == ("fairness", alert.gap, alert.tolerance)
        assert alert.worst_group in risk.words and alert.best_group in risk.words

    # coverage: at the default slack of 0.05 a class is a risk only below target - 0.05; the
    # figures are the report's own (locked test coverage by class, as both sections state it)
    conformal = report.conformal
    assert conformal.coverage_by_class == report.test.conformal_coverage_by_class
    target = conformal.target_coverage
    expected = {
        f"coverage:class_{k}": v
        for k, v in conformal.coverage_by_class.items()
        if isinstance(v, float) and v < target - spec.acceptance.max_coverage_shortfall
    }
    assert {i: r.observed for i, r in by_id.items() if r.kind == "coverage"} == expected
    # a tighter slack turns every class short of its target into a risk; the target is raised
    # just above the lowest class's coverage so that one class misses it, whatever the model
    lowest = min(v for v in conformal.coverage_by_class.values() if isinstance(v, float))
    target = max(float(target), lowest + 0.02)
    report = report.model_copy(
        update={"conformal": conformal.model_copy(update={"target_coverage": target})}
    )
    slack = (target - lowest) / 2
    tight = spec.model_copy(
        update={"acceptance": spec.acceptance.model_copy(update={"max_coverage_shortfall": slack})}
    )
    short = [r for r in risks_of(report, tight) if r.kind == "coverage"]
    assert [r.observed for r in short] == [
        v
        for _, v in sorted(conformal.coverage_by_class.items())
        if isinstance(v, float) and v < target - slack
    ]
    assert all(r.limit == pytest.approx(target - slack) for r in short)
    assert f"{lowest:.1%}" in " ".join(r.words for r in short)

    # robustness: a masked input fails when AUROC falls by thresholds.auroc_degradation or more,
    # relative to the AUROC with every value as recorded (the live-monitoring rule)
    reference = report.robustness.reference["auroc"]
    assert isinstance(reference, float)
    falls = {
        name: (reference - row["auroc"]) / reference
        for name, row in report.robustness.masked.items()
    }
    failed = {
        f"robustness:{n}": f for n, f in falls.items() if f >= spec.thresholds.auroc_degradation
    }
    assert {i: r.observed for i, r in by_id.items() if r.kind == "robustness"} == pytest.approx(
        failed
    )
    strict = spec.model_copy(
        update={
            "thresholds": spec.thresholds.model_copy(
                update={"auroc_degradation": max(falls.values()) + 0.01}
            )
        }
    )
    assert [r for r in risks_of(report, strict) if r.kind == "robustness"] == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (0, "greater than 0"),
        (1, "less than 1"),
        (-0.1, "greater than 0"),
        (1.5, "less than 1"),
        ("some", "number"),
    ],
)
def test_coverage_slack_outside_0_1_is_refused_naming_the_field(
    tmp_path: Path, value: Any, fragment: str
) -> None:
    data = load_task("icu_mortality_48h").model_dump(mode="json")
    path = tmp_path / "spec.yaml"
    data["acceptance"]["max_coverage_shortfall"] = 0.1
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_task(path).acceptance.max_coverage_shortfall == 0.1
    data["acceptance"]["max_coverage_shortfall"] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TaskSpecInvalid) as info:
        load_task(path)
    problems = dict(info.value.problems)
    assert fragment in problems["acceptance.max_coverage_shortfall"], info.value


def test_coverage_slack_at_its_default_keeps_the_spec_hash(tmp_path: Path) -> None:
    spec = load_task("icu_mortality_48h")
    assert spec.acceptance.max_coverage_shortfall == 0.05
    data = spec.model_dump(mode="json")
    data["acceptance"].pop("max_coverage_shortfall")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_task(path).spec_hash() == spec.spec_hash()
    data["acceptance"]["max_coverage_shortfall"] = 0.02
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_task(path).spec_hash() != spec.spec_hash()


# -- gate 3 through the command line ----------------------------------------------------------


def _keys(ws: Workspace) -> Keyring:
    """The team's SSH keys, kept beside the workspace."""
    return Keyring(ws.root.parent / f"{ws.root.name}-keys")


def _team(cli: Callable[..., tuple[int, str]], ws: Workspace) -> None:
    root = str(ws.root)
    assert cli("registry", "grant", COMP, "--role", "compliance", "--as", COMP, "-w", root)[0] == 0
    for person, role in ((AUTHOR, "engineering"), (ENG, "engineering"), (CLIN, "clinical")):
        code, out = cli("registry", "grant", person, "--role", role, "--as", COMP, "-w", root)
        assert code == 0, out
    code, out = cli(
        "registry", "grant", BOTH, "--role", "clinical", "--role", "engineering",
        "--as", COMP, "-w", root,
    )  # fmt: skip
    assert code == 0, out
    _keys(ws).register(root, (AUTHOR, ENG, CLIN, BOTH), compliance=COMP)


def _registered(cli: Callable[..., tuple[int, str]], ws: Workspace, model_version: str) -> str:
    root = str(ws.root)
    _team(cli, ws)
    code, out = cli("registry", "bundle", model_version, "--as", AUTHOR, "--json", "-w", root)
    assert code == 0, out
    code, out = cli(
        "registry", "register", json.loads(out)["path"], "--as", AUTHOR, "--json", "-w", root
    )
    assert code == 0, out
    return str(json.loads(out)["version"])


def test_gate_3_blocks_on_an_unacknowledged_fairness_alert_and_passes_after_a_recorded_justification(
    cli: Callable[..., tuple[int, str]], fresh_workspace: Any, trained: tuple[Path, str]
) -> None:
    ws = fresh_workspace("risks-gate")
    root = str(ws.root)
    v = _registered(cli, ws, trained[1])
    alert = _report(trained).fairness_alerts[0]
    fairness_id = f"fairness:{alert.attribute}:auroc_gap"

    # the gates run: gate 3 fails naming the open fairness risk, and the release cannot move
    code, out = cli("registry", "validate", v, "--as", AUTHOR, "--json", "-w", root)
    assert code == 0, out
    gates = json.loads(out)
    assert gates["schema_contract"]["passed"] and gates["metrics"]["passed"]
    evidence = gates["evidence"]
    assert evidence["passed"] is False
    assert any(
        f.startswith(f"risk {fairness_id} not acknowledged") and f"{alert.gap:.3f}" in f
        for f in evidence["failures"]
    ), evidence["failures"]
    listed = {r["id"]: r for r in evidence["evidence"]["risks"]}
    assert listed[fairness_id]["acknowledgement"] is None
    code, out = cli(
        "registry", "promote", v, *_keys(ws).proof(AUTHOR), "--why", "gates", "-w", root
    )
    assert code == 2 and "gate evidence failed" in out and fairness_id in out, out

    # `registry risks` lists each risk, open
    code, out = cli("registry", "risks", v, "--json", "-w", root)
    assert code == 0, out
    risks = json.loads(out)["risks"]
    assert fairness_id in [r["id"] for r in risks]
    assert all(r["acknowledgement"] is None for r in risks)

    # the clinician records a justification for each; each is a ledger entry naming who, the
    # role, the risk and the reason
    reason = "Gap stated in the model card; pilot at one site with every alert reviewed"
    for r in risks:
        code, out = cli(
            "registry", "acknowledge", v, "--risk", r["id"], "--reason", reason,
            *_keys(ws).proof(CLIN), "--json", "-w", root,
        )  # fmt: skip
        assert code == 0, out
        ack = json.loads(out)
        assert (ack["risk"], ack["actor"], ack["role"], ack["reason"]) == (
            r["id"],
            CLIN,
            "clinical",
            reason,
        )
    recorded = _entries(ws, "risk_acknowledged")
    assert [(e.actor, p["release"], p["risk"], p["role"], p["reason"]) for e, p in recorded] == [
        (CLIN, v, r["id"], "clinical", reason) for r in risks
    ]
    seqs = {p["risk"]: e.seq for e, p in recorded}

    # re-run, gate 3 passes, with the acknowledgements in its evidence; the release moves on
    code, out = cli("registry", "validate", v, "--as", AUTHOR, "--json", "-w", root)
    assert code == 0, out
    evidence = json.loads(out)["evidence"]
    assert evidence["passed"] is True, evidence["failures"]
    acks = {r["id"]: r["acknowledgement"] for r in evidence["evidence"]["risks"]}
    assert acks[fairness_id]["actor"] == CLIN and acks[fairness_id]["seq"] == seqs[fairness_id]
    code, out = cli(
        "registry", "promote", v, *_keys(ws).proof(AUTHOR), "--why", "gates", "-w", root
    )
    assert code == 0 and "validated" in out, out
    code, out = cli("registry", "risks", v, "-w", root)
    assert code == 0 and f"{CLIN} (clinical)" in out and "OPEN" not in out, out

    # the library view the model card's limitations are rendered from
    from clinical_mlops.application.services import Services

    with Services.open(ws) as services:
        shown = [a.to_json() for a in services.governance.risk_acknowledgements(v)]
    assert [(a["risk"], a["actor"], a["seq"]) for a in shown] == [
        (r["id"], CLIN, seqs[r["id"]]) for r in risks
    ]
    assert all(a["words"] and a["at"] and a["reason"] == reason for a in shown)


# -- bad input: refused naming the field, nothing recorded --------------------------------------


def _acks(ws: Workspace) -> list[tuple[str, str, str]]:
    from clinical_mlops.application.services import Services

    with Services.open(ws) as services:
        gov = services.governance
        return [
            (a.release, a.risk, a.actor)
            for rel in gov.registry.list()
            for a in gov.risk_acknowledgements(rel.version)
        ]


def test_bad_acknowledgements_are_refused_naming_the_field_and_record_nothing(
    meta_backend: str,
    cli: Callable[..., tuple[int, str]],
    fresh_workspace: Any,
    trained: tuple[Path, str],
) -> None:
    ws = fresh_workspace(f"risks-bad-{meta_backend}")
    root = str(ws.root)
    v = _registered(cli, ws, trained[1])
    code, out = cli("registry", "risks", v, "--json", "-w", root)
    assert code == 0, out
    risk = json.loads(out)["risks"][0]["id"]

    def refused(*args: str, field: str, fragment: str) -> None:
        before = len(_entries(ws, "risk_acknowledged")), _acks(ws)
        code, out = cli("registry", "acknowledge", v, *args, "-w", root)
        assert code == 2, out
        assert f"{field}:" in out and fragment in out, out
        assert (len(_entries(ws, "risk_acknowledged")), _acks(ws)) == before

    # a justification without a reason (none, empty, blank)
    for given in ((), ("--reason", ""), ("--reason", "   ")):
        refused("--risk", risk, *_keys(ws).proof(CLIN), *given, field="reason", fragment="say why")
    # from a role that may not give it: engineering, whether held alone or asked for
    refused(
        "--risk", risk, *_keys(ws).proof(ENG), "--reason", "fine by me",
        field="role", fragment="needs a person in role clinical or compliance",
    )  # fmt: skip
    refused(
        "--risk", risk, *_keys(ws).proof(BOTH), "--role", "engineering", "--reason", "fine by me",
        field="role", fragment="may not do this",
    )  # fmt: skip
    # a risk the release does not carry
    refused(
        "--risk", "fairness:shoe_size:auroc_gap", *_keys(ws).proof(CLIN), "--reason", "fine",
        field="risk", fragment="is not a risk of",
    )  # fmt: skip
    assert _acks(ws) == []

    # a first acknowledgement is recorded; a second of the same risk (by anyone) is refused
    code, out = cli(
        "registry", "acknowledge", v, "--risk", risk, "--reason", "accepted for the pilot",
        *_keys(ws).proof(CLIN), "-w", root,
    )  # fmt: skip
    assert code == 0, out
    refused(
        "--risk", risk, *_keys(ws).proof(COMP), "--reason", "also accepted",
        field="risk", fragment=f"already acknowledged by {CLIN} (clinical)",
    )  # fmt: skip
    assert _acks(ws) == [(v, risk, CLIN)]
    refusals = [p["rule"] for _, p in _entries(ws, "governance_refused")]
    assert refusals.count("RoleRequired") == 2
    assert refusals.count("AcknowledgementRefused") == 2

    # the store itself refuses a second row for the same release and risk
    from clinical_mlops.application.services import Services
    from clinical_mlops.governance import schema

    with (
        Services.open(ws) as services,
        pytest.raises(sa.exc.IntegrityError),
        services.governance.engine.begin() as conn,
    ):
        conn.execute(
            sa.insert(schema.risk_acknowledgements).values(
                version=v,
                risk=risk,
                words="w",
                person=COMP,
                role="compliance",
                reason="r",
                time="t",
            )
        )
    assert _acks(ws) == [(v, risk, CLIN)]
