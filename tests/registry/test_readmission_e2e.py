"""The 30-day readmission task runs the whole pipeline through the unchanged framework (R-T9).

One generic driver — build, train, validate, bundle, gates, approvals, rollout, promotion,
serving through the Predictor and the HTTP API, outcomes, monitoring, suspension with the
clinical-baseline fallback — is parametrised over both built-in tasks. It takes the task
name (and the synthetic source's size, which is data, not code) and nothing else: the same
commands and library calls carry the ICU task and the readmission task. A second test shows
that no module outside ``tasks/`` names a task.
"""

from __future__ import annotations

import ast
import json
import secrets
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import clinical_mlops
from clinical_mlops.application.training import train_model
from clinical_mlops.cli import app
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.oversight import record_outcome
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.records import read_ledger_records
from clinical_mlops.monitoring.windows import Monitor, MonitorReference
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import builtin_tasks
from clinical_mlops.workspace import Workspace
from identities import Keyring
from registry_helpers import FAST

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

# Seed and size of each task's synthetic source (data, not code): the session fixture's 600
# ICU stays and 6,300 ward admissions, enough for each task's own acceptance criteria on the
# locked test set. (`data build --seed 7 --json` has the same keys for both tasks too: see
# tests/data/test_readmission.py.)
SEED = 11
SCALE = {"icu_mortality_48h": 0.1, "readmission_30d": 0.2}
# The keys of `data build --json`: the same for every task.
BUILD_KEYS = {
    "snapshot_id",
    "task",
    "source",
    "cohort_flow",
    "n_stays",
    "n_train",
    "n_test",
    "n_positive",
    "prevalence",
    "prevalence_train",
    "prevalence_test",
    "missingness",
    "feature_sql_sha256",
    "criteria_sha256",
    "contracts",
    "path",
}
N_SERVED = 40
OTHER_SETTING = {"icu": "ward", "ward": "icu"}
TEAM = (("eli", "engineering"), ("erin", "engineering"), ("dr.kim", "clinical"))


def cli(*args: str) -> Any:
    """Run one `clinical-mlops` command in-process and return its --json output."""
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, (args, res.output, res.exception)
    return json.loads(res.stdout)


def _request_rows(frame: Any, names: list[str]) -> list[dict[str, Any]]:
    return [
        {k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in frame[names].to_dict(orient="records")
    ]


def run_pipeline(task: str, root: Path) -> dict[str, Any]:
    """The ICU task's pipeline, with ``task`` the only input; return what each step gave."""
    ws_arg = ["-w", str(root)]
    out: dict[str, Any] = {"task": task}

    # data plane: the same command for every task
    build = cli(
        "data", "build", "--task", task, "--seed", str(SEED), "--scale", str(SCALE[task]), *ws_arg
    )
    out["build"] = build
    ws = Workspace.open(root)
    snap = open_snapshot(ws, build["snapshot_id"])
    spec = snap.spec()
    out["spec"] = spec

    # model plane: train and validate (small search budget, as the session fixture does)
    result = train_model(ws, snap, config=FAST)
    out["result"] = result
    out["replay"] = cli("evaluate", result.model_version, *ws_arg)

    # evidence plane: bundle, register, gates 1-3, review, three approvals, pilot, approval
    cli("registry", "grant", "cora", "--role", "compliance", "--as", "cora", *ws_arg)
    for person, role in TEAM:
        cli("registry", "grant", person, "--role", role, "--as", "cora", *ws_arg)
    keys = Keyring(root.parent / f"{root.name}-keys")
    keys.register(root, [person for person, _ in TEAM], compliance="cora")
    bundle = cli("registry", "bundle", result.model_version, "--as", "eli", *ws_arg)
    v = cli("registry", "register", bundle["path"], "--as", "eli", *ws_arg)["version"]
    out["risks"] = cli("registry", "risks", v, *ws_arg)["risks"]
    for risk in out["risks"]:
        cli(
            "registry", "acknowledge", v, "--risk", risk["id"], "--reason", "accepted for the pilot",
            *keys.proof("dr.kim"), *ws_arg,
        )  # fmt: skip
    out["gates"] = cli("registry", "validate", v, "--as", "eli", *ws_arg)
    cli("registry", "promote", v, *keys.proof("eli"), "--why", "gates 1-3 passed", *ws_arg)
    cli("registry", "promote", v, *keys.proof("dr.kim"), "--why", "report reviewed", *ws_arg)
    for person, role in (("erin", "engineering"), ("dr.kim", "clinical"), ("cora", "compliance")):
        cli("registry", "approve", v, "--role", role, *keys.proof(person), "--why", "ok", *ws_arg)
    cli("registry", "promote", v, *keys.proof("cora"), "--why", "pilot", *ws_arg)
    cli(
        "registry",
        "rollout",
        v,
        "--site",
        "pilot-1",
        "--mode",
        "pilot",
        *keys.proof("dr.kim"),
        *ws_arg,
    )
    cli("registry", "promote", v, *keys.proof("cora"), "--why", "pilot reviewed", *ws_arg)
    out["shown"] = cli("registry", "show", v, *ws_arg)
    out["version"] = v

    # serving: consented patients, the locked test stays as requests
    test = locked_test_stays(snap)
    rows = _request_rows(test, list(spec.feature_names))
    with Ledger.open(ws) as led:
        for i in range(N_SERVED + 1):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(f"MRN-{i}"),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
    setting = spec.cohort.setting
    with Predictor.open(ws, task=task, status_ttl=0.0) as predictor:
        requests = [
            PredictionRequest(
                subject_id=f"MRN-{i}", purpose="direct_care", setting=setting, features=rows[i]
            )
            for i in range(N_SERVED)
        ]
        out["served"] = predictor.predict_many(requests, requester="ehr")
        out["served_p_direct"] = predictor.scorer(v).model.probability(test.head(N_SERVED))
        elsewhere = PredictionRequest(
            subject_id="MRN-0",
            purpose="direct_care",
            setting=OTHER_SETTING[setting],
            features=rows[0],
        )
        young = PredictionRequest(
            subject_id="MRN-0",
            purpose="direct_care",
            setting=setting,
            features=rows[0] | {"age": spec.cohort.min_age - 2},
        )
        out["refused"] = predictor.predict_many([elsewhere, young], requester="ehr")

        auth = AuthConfig.from_secret(secrets.token_hex(32))
        client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
        token = {"Authorization": "Bearer " + auth.issue(subject="dr.t", roles=["clinician"])}
        body = {"subject_id": f"MRN-{N_SERVED}", "purpose": "direct_care", "setting": setting}
        out["http"] = client.post(
            "/v1/predict", headers=token, json=body | {"features": rows[N_SERVED]}
        )
        out["discovery"] = client.get("/cds-services").json()

        # outcomes arrive and the monitor reads them back from the ledger
        y = test[spec.label.name].to_numpy()[:N_SERVED]
        for label in (0, 1):
            seqs = [r.audit_seq for r, yi in zip(out["served"], y, strict=True) if yi == label]
            if seqs:
                record_outcome(predictor.ledger, prediction_seqs=seqs, outcome=label, actor="lab")
        records = read_ledger_records(predictor.ledger)
        with Registry.open(ws) as reg:
            reference = MonitorReference.from_bundle(reg.bundle(v), release=v)
        out["reference"] = reference
        out["monitor"] = Monitor(reference).run(
            records["inferences"][v], records["outcomes"], records["overrides"]
        )

        # suspension: the service falls back to the task's own clinical baseline score
        cli("registry", "suspend", v, *keys.proof("dr.kim"), "--why", "drill", *ws_arg)
        out["fallback"] = predictor.predict(requests[0], requester="ehr")
    out["model_card"] = (result.folder / "model_card.md").read_text(encoding="utf-8")
    out["test"] = test
    return out


@pytest.mark.parametrize("task", sorted(SCALE))
def test_the_whole_pipeline_runs_on_each_task_by_name(task: str, tmp_path: Path) -> None:
    run = run_pipeline(task, tmp_path / "ws")
    spec, result, build = run["spec"], run["result"], run["build"]
    label = spec.label.name

    # data: same JSON shape for both tasks
    assert set(build) == BUILD_KEYS and build["task"] == task
    assert build["contracts"]["hard_failed"] == 0

    # validation: the report's AUROC is scikit-learn's, its ECE the 10-bin definition's
    test, t = run["test"], result.report.test.to_json()
    p, y = result.model.probability(test), test[label].to_numpy()
    assert t["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    assert t["ece"] == pytest.approx(ece, abs=1e-9)
    base = result.report.baseline.to_json()
    assert base["name"] in ("SOFA-like score", "LACE-like index") and t["auroc"] > base["auroc"]
    assert run["replay"]["identical"] is True
    if task == "readmission_30d":  # R-T9: 14.7 % readmitted; acceptance from the published run
        assert build["source"] == "synthetic-ward" and build["n_stays"] > 5000
        assert abs(build["prevalence"] - spec.published["prevalence"]) < 0.015
        acc = spec.acceptance
        assert (acc.min_auroc, acc.max_ece, spec.thresholds.subgroup_auroc_gap) == (
            0.75,
            0.05,
            0.05,
        )
        assert base["name"] == "LACE-like index"

    # gates 1-3 pass on the task's own acceptance criteria; the release is approved
    assert {n: g["passed"] for n, g in run["gates"].items()} == {
        "schema_contract": True,
        "metrics": True,
        "evidence": True,
    }
    criteria = run["gates"]["metrics"]["evidence"]["criteria"]
    assert criteria == spec.acceptance.model_dump(mode="json")
    assert run["shown"]["status"] == "approved" and run["shown"]["version"] == f"{task}@1"
    assert all(g["passed"] for g in run["shown"]["gates"].values())

    # serving: every request scored with the validated model's probability, one audit entry each
    served = run["served"]
    assert [r.status for r in served] == ["scored"] * N_SERVED
    assert np.allclose([r.probability for r in served], run["served_p_direct"], atol=1e-12)
    assert len({r.audit_seq for r in served}) == N_SERVED
    http = run["http"]
    assert http.status_code == 200 and http.json()["status"] == "scored"
    assert 0.0 <= http.json()["probability"] <= 1.0

    # the intended-use guard reads the spec's setting and minimum age
    elsewhere, young = run["refused"]
    assert elsewhere.refusal["code"] == young.refusal["code"] == "outside_intended_use"
    assert repr(spec.cohort.setting) in elsewhere.refusal["message"]
    assert f"{spec.cohort.min_age:g} or older" in young.refusal["message"]

    # monitoring: the served records, read back from the ledger, against the task's reference
    mon, reference = run["monitor"], run["reference"]
    assert reference.spec.spec_hash() == spec.spec_hash()
    assert mon.n_records == N_SERVED + 1 and mon.windows  # the batch and the HTTP request
    assert mon.windows[-1].quantities["n_window"] == N_SERVED + 1
    assert not any(mon.rejected.values())  # every outcome linked to its prediction
    assert reference.validated_auroc == pytest.approx(result.report.test.auroc)

    # suspended: the task's own clinical baseline, never an error
    fb = run["fallback"]
    assert fb.status == "fallback" and fb.fallback["name"] == result.report.baseline.name

    # nothing says ICU where the task is not an ICU task
    if spec.cohort.setting != "icu":
        words = [
            elsewhere.refusal["message"],
            young.refusal["message"],
            fb.fallback["note"],
            json.dumps(run["discovery"]),
            run["model_card"],
            *[f for r in served for f in r.flags],
        ]
        assert not [w for w in words if "ICU" in w]


# The documented ICU walkthrough: the demo. It calls the same library functions with the task
# name as data. (The R-T8 drift simulation names the ICU task only as its --task default.)
ICU_WALKTHROUGHS: dict[str, set[str] | None] = {"cli/demo.py": None}


def _named_constants(path: Path, names: set[str], allowed: set[str]) -> list[tuple[int, str]]:
    """String constants naming a task, except docstrings, defaults and ``allowed`` functions.

    A default is a parameter default or the fallback of ``value or "name"``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))
        if isinstance(node, ast.arguments):
            skip |= {id(d) for d in [*node.defaults, *node.kw_defaults] if d is not None}
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            skip.add(id(node.values[-1]))
        if isinstance(node, ast.FunctionDef) and node.name in allowed:
            skip |= {id(n) for n in ast.walk(node)}
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and id(n) not in skip
        and any(name in n.value for name in names)
    ]


def test_no_module_outside_the_task_specs_names_a_task() -> None:
    """Task names live in tasks/ (YAML) and features/ (SQL file names) only.

    Allowed elsewhere: the default of a command-line option or parameter, and the
    documented ICU walkthroughs (:data:`ICU_WALKTHROUGHS`). No module other than the
    baseline's own uses a clinical score by name either: the spec's
    ``clinical_baseline`` picks it.
    """
    root = Path(clinical_mlops.__file__).parent
    names = set(builtin_tasks())
    assert names == {"icu_mortality_48h", "readmission_30d"}
    found = {}
    scores = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        walkthrough = ICU_WALKTHROUGHS.get(rel, set())
        if rel.startswith("tasks/") or walkthrough is None:
            continue
        hits = _named_constants(path, names, walkthrough)
        if hits:
            found[rel] = hits
        text = path.read_text(encoding="utf-8")
        if rel != "evaluation/baseline.py" and ("SOFA_LIKE" in text or "LACE_LIKE" in text):
            scores.append(rel)
    assert found == {}
    assert scores == []
