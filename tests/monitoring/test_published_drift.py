"""The published drift end to end on simulated time: detected, escalated, suspended, reviewed, resumed."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.monitoring.records import epoch
from clinical_mlops.monitoring.scenarios import DriftScenario
from clinical_mlops.workspace import Workspace

REVIEWER, RESUMER = "demo.dr.lena.ortiz", "demo.sam.okafor"
# A short unshifted period and outcomes after 6 hours keep the run to about 2,300
# predictions: the AUROC rule needs a full window of 2,000 outcomes, most of them shifted.
SCENARIO = DriftScenario(unshifted_hours=8.0, outcome_delay_hours=6.0)
SCHEDULE = {"monitor_every_minutes": 60, "max_hours_after_shift": 120.0}


@pytest.fixture(scope="module")
def memory_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder on a memory file system when there is one: the governed run makes about
    5,000 durable ledger writes, whose syncs to disk would dominate the test's time."""
    shm = Path("/dev/shm")  # noqa: S108 - a private folder is made in it by mkdtemp
    if not shm.is_dir():
        yield tmp_path_factory.mktemp("published-drift")
        return
    made = Path(tempfile.mkdtemp(prefix="published-drift-", dir=shm))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="module")
def governed_run(trained: tuple[Path, str], memory_dir: Path) -> dict[str, Any]:
    from clinical_mlops.application.drift_run import GovernedDrift, run_governed_drift

    sandbox = memory_dir / "sandbox"
    figures = run_governed_drift(
        Workspace.open(trained[0]),
        SCENARIO,
        model_version=trained[1],
        schedule=GovernedDrift(**SCHEDULE),
        sandbox=sandbox,
    )
    return {"figures": figures, "ws": Workspace.open(sandbox)}


def _rows(ws: Workspace, kind: str) -> list[tuple[int, str]]:
    with Ledger.open(ws) as led, led.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(entries.c.seq, entries.c.time)
            .where(entries.c.type == kind)
            .order_by(entries.c.seq)
        ).all()
    return [(int(s), str(t)) for s, t in rows]


def test_the_published_drift_suspends_serves_the_fallback_and_resumes_after_a_review(
    governed_run: dict[str, Any],
) -> None:
    f, ws = governed_run["figures"], governed_run["ws"]
    t = f["timeline"]
    shift = epoch(t["shift_start"]["at"])
    # Discrimination fell by at least 5 %, measured on what the Predictor scored against the
    # outcomes recorded in the ledger (recomputed here from the ledger with scikit-learn).
    scored: dict[int, tuple[float, float]] = {}
    outcome: dict[int, int] = {}
    with Ledger.open(ws) as led:
        for view in led.read_from(0, types=("inference", "outcome")):
            p = view.payload or {}
            if view.entry.type == "inference":
                scored[view.entry.seq] = (epoch(view.entry.time), float(p["probability"]))
            else:
                outcome[int(p["prediction_seq"])] = int(p["outcome"])
    linked = sorted((scored[s][0], scored[s][1], y) for s, y in outcome.items())
    before = [(p, y) for at, p, y in linked if at < shift]
    after = [(p, y) for at, p, y in linked if at >= shift][: SCENARIO.shifted_stays]
    a0 = roc_auc_score([y for _, y in before], [p for p, _ in before])
    a1 = roc_auc_score([y for _, y in after], [p for p, _ in after])
    assert f["auroc"]["before"] == pytest.approx(a0, abs=1e-4)
    assert f["auroc"]["after"] == pytest.approx(a1, abs=1e-4)
    assert f["auroc"]["drop_percent"] == pytest.approx(100 * (a0 - a1) / a0, abs=0.01)
    assert f["auroc"]["drop_percent"] >= 5.0
    assert f["auroc"]["stays_before"] == len(before) and f["auroc"]["stays_after"] == len(after)
    # Detected within 48 hours of the shift; the input drift detectors see it first.
    assert f["detected_within_48h"] and 0 < f["detection_delay_hours"] <= 48
    assert f["detection"]["psi_input"] is not None
    assert f["detection"]["auroc_degradation"]["action"] == "suspend"
    # The confirmed AUROC degradation was escalated to the release's owner, then suspended it.
    owner = t["owner_escalation"]
    assert owner["owner"] == "demo.alex.kim" and owner["owner_role"] == "reviewer"
    assert owner["alert_id"] == f["detection"]["auroc_degradation"]["alert_id"]
    sus, review, resume = t["suspension"], t["review"], t["resume"]
    assert sus["actor"] == "system:monitor" and owner["alert_id"] in sus["why"]
    assert owner["ledger_seq"] < sus["ledger_seq"]
    assert (
        t["first_detection"]["hours_since_shift"]
        <= f["detection"]["auroc_degradation"]["hours_since_shift"]
        <= sus["hours_since_shift"]
    )
    granted = [s for s, _ in _rows(ws, "role_granted") if s == f["monitor_identity"]["ledger_seq"]]
    assert granted and granted[0] < sus["ledger_seq"]
    # While suspended the clinical baseline was served, marked as a fallback, and audited.
    fallbacks = [s for s, _ in _rows(ws, "fallback_served")]
    between = [s for s in fallbacks if sus["ledger_seq"] < s < resume["ledger_seq"]]
    assert between and len(between) == f["fallbacks_while_suspended"] == len(fallbacks)
    assert t["first_fallback"]["ledger_seq"] == between[0]
    # A person reviewed, then another resumed: the resumption comes after the review.
    assert review["actor"] == REVIEWER and review["outcome"] == "continue_with_actions"
    assert resume["actor"] == RESUMER and "review by" in resume["why"]
    assert sus["ledger_seq"] < review["ledger_seq"] < resume["ledger_seq"]
    # And the model scores again.
    after_resume = [s for s in scored if s > resume["ledger_seq"]]
    assert after_resume and t["first_model_prediction_after_resume"]["ledger_seq"] == min(
        after_resume
    )
    assert not [s for s in fallbacks if s > resume["ledger_seq"]]
    hours = [t[k]["hours_since_shift"] for k in t]
    assert hours == sorted(hours)


def test_the_concept_shift_keeps_the_covariate_shift_and_draws_new_outcomes(
    trained: tuple[Path, str],
) -> None:
    from clinical_mlops.monitoring.scenarios import plan_drift, scored_test_stays

    stays = scored_test_stays(Workspace.open(trained[0]), model_version=trained[1])
    concept = plan_drift(stays, SCENARIO)
    covariate = plan_drift(stays, replace(SCENARIO, outcome_slope=None))
    # The same arrivals, the same inputs: the covariate part is R-T8's.
    assert np.array_equal(concept.times, covariate.times)
    assert concept.inputs.equals(covariate.inputs)
    assert concept.prevalence_after == pytest.approx(0.72, abs=0.005)
    # Only the newly ventilated stays' outcomes are drawn anew.
    changed = concept.y != covariate.y
    assert changed.any() and not changed[~concept.newly].any()


def test_cli_simulate_drift_json_reports_each_step(
    trained: tuple[Path, str],
    memory_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clinical_mlops.cli import app
    from clinical_mlops.cli._common import run_guarded

    root = tmp_path / "ws"
    shutil.copytree(trained[0] / "artifacts", root / "artifacts")
    args = ["simulate", "drift", "-w", str(root), "--model", trained[1], "--json"]
    args += ["--unshifted-hours", "8", "--outcome-delay-hours", "6"]
    args += ["--max-hours-after-shift", "5", "--sandbox", str(memory_dir / "cli")]
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
    try:
        code = run_guarded(app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert set(doc["timeline"]) == {
        "shift_start",
        "first_detection",
        "owner_escalation",
        "suspension",
        "first_fallback",
        "review",
        "resume",
        "first_model_prediction_after_resume",
    }
    assert doc["timeline"]["shift_start"]["hours_since_shift"] == 0.0
    assert doc["timeline"]["shift_start"]["at"].startswith("2026-01-05T")
    # The same seed, the same stream: the monitor over the governed run's ledger detects the
    # shift in the same window as the monitor over the in-memory stream.
    hours = [h for h in doc["detection_delay_hours"].values() if h is not None]
    assert doc["timeline"]["first_detection"]["hours_since_shift"] == pytest.approx(
        min(hours), abs=0.01
    )
    assert doc["timeline"]["shift_start"]["hours_since_shift"] == 0.0
    # Five hours after the shift nothing has been suspended yet: said, not invented.
    assert doc["timeline"]["suspension"] is None and doc["fallbacks_served"] == 0
    for key in ("before", "after", "drop_percent", "validated"):
        assert key in doc["auroc"]
    g = doc["governed"]
    assert {"detection", "detection_delay_hours", "detection_delay_stays", "people"} <= set(g)
    assert "simulated people" in g["people"]["note"]
    assert g["monitor_identity"]["granted_by"] == RESUMER
