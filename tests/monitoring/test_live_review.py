"""A periodic review reads live figures per site since the last review, not validation figures.

One world on simulated time: a release approved and served at two hospitals; predictions
scored through the Predictor, outcomes and clinicians' decisions recorded, an incident
opened before and one after a first review. The pack of the second period is checked
against figures computed here by hand and with scikit-learn.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clinical_mlops.application.governance import decide_case, record_outcome, record_review
from clinical_mlops.application.governance import review_pack as live_pack
from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import GovernanceError
from clinical_mlops.evaluation.metrics import calibration_slope_intercept
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.incidents import open_incident
from clinical_mlops.governance.reviews import review_pack_of, review_status
from clinical_mlops.hashing import sha256_json
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from identities import console

CLIN, COMP, ENG = "demo.dr.lena.ortiz", "demo.sam.okafor", "demo.priya.nair"
ROLES = {"incident_lead": COMP, "clinical_lead": CLIN, "communications_lead": ENG}
NORTH, SOUTH = 560, 60  # predictions per site in the second period
NORTH_OUTCOMES, SOUTH_OUTCOMES = NORTH, 25
OVERRIDDEN_NORTH, ACCEPTED_NORTH, OVERRIDDEN_SOUTH = 7, 5, 2


def _requests(rows: list[dict[str, Any]], start: int, n: int, site: str) -> list[Any]:
    return [
        PredictionRequest(
            subject_id=f"MRN-{i % 120}",
            purpose="direct_care",
            setting="icu",
            features=rows[i % len(rows)],
            request_id=f"{site}-{i}",
            encounter=f"ENC-{site}-{i}",
            site=site,
        )
        for i in range(start, start + n)
    ]


def _score(
    ws: Workspace, clock: FixedClock, rows: list[dict[str, Any]], labels: np.ndarray, plan: list
) -> list[dict[str, Any]]:
    """Score ``plan`` = [(site, start, n)] an hour apart; return one dict per prediction."""
    out = []
    with Predictor.open(ws, clock=clock, status_ttl=0) as p:
        for site, start, n in plan:
            results = p.predict_many(
                _requests(rows, start, n, site), requester="system:ehr", explain=False
            )
            for i, r in zip(range(start, start + n), results, strict=True):
                assert r.status == "scored", r
                out.append(
                    {
                        "seq": r.audit_seq,
                        "site": site,
                        "p": r.probability,
                        "y": int(labels[i % len(labels)]),
                        "escalated": bool(r.escalated),
                        "threshold": r.threshold,
                    }
                )
            clock.advance(timedelta(hours=1))
    return out


def _outcomes(gov: Governance, scored: list[dict[str, Any]]) -> None:
    for value in (0, 1):
        seqs = [s["seq"] for s in scored if s["y"] == value]
        if seqs:
            record_outcome(gov.ledger, prediction_seqs=seqs, outcome=value, actor="system:lab")


@pytest.fixture(scope="module")
def world(governed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("live-review") / "ws"
    shutil.copytree(governed["ws"].root, root)
    ws = Workspace.open(root)
    release = governed["release"]
    rows = governed["rows"]
    clock = FixedClock((datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0))
    reg = Registry.open(ws, clock=clock)
    gov = Governance(reg)
    lineage = reg.bundle(release).read_json("lineage.json")
    test = locked_test_stays(open_snapshot(ws, lineage["snapshot"]["id"]))
    labels = test[load_task("icu_mortality_48h").label.name].to_numpy(dtype=int)
    assert len(labels) == len(rows)

    # first period: a few stays at north, their outcomes, an incident
    first = _score(ws, clock, rows, labels, [("north", 0, 40)])
    _outcomes(gov, first)
    incident_a = open_incident(
        gov,
        release,
        actor=CLIN,
        summary="alerts doubled on one ward",
        severity="high",
        roles=ROLES,
        identity=console(CLIN),
    )
    clock.advance(timedelta(days=1))
    refused_bare = None
    try:
        record_review(
            gov,
            release,
            reviewer=CLIN,
            checklist={
                "calibration": "ok",
                "fairness": "ok",
                "incidents": "OK.",
                "documentation": "ok",
            },
            outcome="continue",
            identity=console(CLIN),
        )
    except GovernanceError as exc:
        refused_bare = str(exc)
    reviews_after_refusal = review_status(gov, release)["last_review"]
    review_1 = record_review(
        gov,
        release,
        reviewer=CLIN,
        checklist={
            "calibration": "ok",
            "fairness": "ok",
            "incidents": f"{incident_a['id']}: a ward's alert volume, being contained",
            "documentation": "ok",
        },
        outcome="continue_with_actions",
        identity=console(CLIN),
    )

    # second period: both sites, outcomes (few at south), decisions, another incident
    clock.advance(timedelta(hours=1))
    plan = [("north", 1000 + k * 70, 70) for k in range(NORTH // 70)]
    plan.insert(3, ("south", 5000, SOUTH))
    second = _score(ws, clock, rows, labels, plan)
    north = [s for s in second if s["site"] == "north"]
    south = [s for s in second if s["site"] == "south"]
    _outcomes(gov, north[:NORTH_OUTCOMES] + south[:SOUTH_OUTCOMES])
    for s in north[:OVERRIDDEN_NORTH] + south[:OVERRIDDEN_SOUTH]:
        decide_case(gov.ledger, s["seq"], action="override", actor="user:dr.a")
    for s in north[OVERRIDDEN_NORTH : OVERRIDDEN_NORTH + ACCEPTED_NORTH]:
        decide_case(gov.ledger, s["seq"], action="accept", actor="user:dr.a")
    incident_b = open_incident(
        gov,
        release,
        actor=CLIN,
        summary="a wrong unit on lactate",
        severity="moderate",
        roles=ROLES,
        identity=console(CLIN),
    )
    clock.advance(timedelta(days=1))
    as_of = clock.now()
    pack = live_pack(gov, release, as_of=as_of)
    return {
        "ws": ws,
        "gov": gov,
        "clock": clock,
        "release": release,
        "pack": pack,
        "as_of": as_of,
        "north": north,
        "south": south,
        "review_1": review_1,
        "refused_bare": refused_bare,
        "reviews_after_refusal": reviews_after_refusal,
        "incidents": (incident_a, incident_b),
        "report": reg.bundle(release).report(),
    }


def _site(pack: dict[str, Any], site: str) -> dict[str, Any]:
    [row] = [r for r in pack["sites"] if r["site"] == site]
    return row


def test_the_pack_covers_the_period_since_the_last_review_per_site(world):
    pack = world["pack"]
    assert pack["since"] == world["review_1"]["time"] and pack["since_what"] == "last review"
    assert [r["site"] for r in pack["sites"]] == ["north", "south", "all sites"]
    north = _site(pack, "north")
    # the 40 predictions of the first period are the first review's, not this one's
    assert north["n_scored"] == NORTH and _site(pack, "south")["n_scored"] == SOUTH
    assert _site(pack, "all sites")["n_scored"] == NORTH + SOUTH


def test_north_discrimination_and_calibration_match_sklearn_and_the_report_definitions(world):
    north = _site(world["pack"], "north")
    y = np.array([s["y"] for s in world["north"]])
    p = np.array([s["p"] for s in world["north"]])
    assert north["n_outcomes"] == NORTH_OUTCOMES and north["n_positive"] == int(y.sum())
    assert north["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    lo, hi = north["auroc_ci"]
    assert lo < north["auroc"] < hi
    cal = calibration_slope_intercept(y, p)
    assert north["calibration_in_the_large"] == pytest.approx(cal["intercept"])
    assert north["calibration_slope"] == pytest.approx(cal["slope"])
    assert north["observed_risk"] == pytest.approx(y.mean())
    assert north["mean_predicted_risk"] == pytest.approx(p.mean())
    bins = np.minimum((p * 10).astype(int), 9)
    by_hand = sum(abs(y[bins == b].sum() - p[bins == b].sum()) for b in range(10)) / len(y)
    assert north["ece"] == pytest.approx(by_hand)
    # the validation figure beside it is the report's own for the site (its matrix row)
    validated = _site_validation(world["report"], "north").auroc.value
    assert north["validation"]["auroc"] == pytest.approx(validated)
    assert north["validation"]["scope"] == "locked test set, site north"
    # degradation is the monitor's: against the release's validated (pooled) AUROC
    pooled = world["report"].test.auroc
    assert north["auroc_degradation"] == pytest.approx((pooled - north["auroc"]) / pooled)


def test_workload_rates_are_counted_per_site(world):
    north = _site(world["pack"], "north")
    scored = world["north"]
    threshold = scored[0]["threshold"]
    assert north["n_overrides"] == OVERRIDDEN_NORTH  # accepts are not overrides
    assert north["override_rate"] == pytest.approx(OVERRIDDEN_NORTH / NORTH)
    assert north["alerts_per_100"] == pytest.approx(
        100 * sum(s["p"] >= threshold for s in scored) / NORTH
    )
    assert north["reviews_per_100"] == pytest.approx(
        100 * sum(s["escalated"] for s in scored) / NORTH
    )
    assert north["validation"]["reviews_per_100"] == pytest.approx(
        _site_validation(world["report"], "north").reviews_per_100
    )
    pooled = _site(world["pack"], "all sites")
    assert pooled["n_overrides"] == OVERRIDDEN_NORTH + OVERRIDDEN_SOUTH


def test_a_site_with_few_outcomes_reports_insufficient_data_not_a_number(world):
    south = _site(world["pack"], "south")
    assert south["n_outcomes"] == SOUTH_OUTCOMES
    for key in ("auroc", "ece", "calibration_slope", "calibration_in_the_large"):
        assert isinstance(south[key], str) and south[key].startswith("insufficient data")
    assert "25 outcomes" in south["auroc"]
    # 60 shown predictions are fewer than the rate rule's 100
    assert south["override_rate"].startswith("insufficient data (60 shown")
    assert all(
        isinstance(a["gap"], str) and a["gap"].startswith("insufficient data")
        for a in south["subgroups"].values()
    )


def test_subgroups_are_the_attributes_the_inference_record_holds(world):
    pack = world["pack"]
    north = _site(pack, "north")
    assert set(north["subgroups"]) == {"sex", "age_group"}
    assert any("ethnicity" in line and "not a model input" in line for line in pack["limitations"])
    sex = north["subgroups"]["sex"]
    y = np.array([s["y"] for s in world["north"]])
    assert sum(g["n"] for g in sex["groups"].values()) <= len(y)
    measured = [g["auroc"] for g in sex["groups"].values() if isinstance(g["auroc"], float)]
    if len(measured) == 2:
        assert sex["gap"] == pytest.approx(max(measured) - min(measured))


def test_incidents_are_counted_from_the_previous_review(world):
    pack = world["pack"]
    a, b = world["incidents"]
    assert [i["id"] for i in pack["incidents"]["opened"]] == [b["id"]]
    assert {i["id"] for i in pack["incidents"]["unresolved"]} == {a["id"], b["id"]}
    assert pack["checklist"]["incidents"]["breached"] is True


def test_a_breached_item_cannot_be_answered_ok_and_nothing_is_recorded(world):
    assert world["refused_bare"] is not None
    assert "breach incidents" in world["refused_bare"] and "incident" in world["refused_bare"]
    assert world["reviews_after_refusal"] is None


def test_the_review_stores_its_pack_and_the_ledger_names_its_hash(world):
    gov, release = world["gov"], world["release"]
    first = world["review_1"]
    assert first["review_pack_sha256"] == sha256_json(first["pack"])
    assert "incidents" in first["breached"]
    world["clock"].advance(timedelta(minutes=5))
    answers = {
        item: ("ok" if not world["pack"]["checklist"][item]["breached"] else "seen; actions set")
        for item in ("calibration", "fairness", "incidents", "documentation")
    }
    second = record_review(
        gov,
        release,
        reviewer=COMP,
        checklist=answers,
        outcome="continue_with_actions",
        identity=console(COMP),
    )
    stored = review_pack_of(gov, release)
    assert stored is not None and stored["sha256"] == second["review_pack_sha256"]
    assert sha256_json(stored["pack"]) == stored["sha256"]
    assert stored["pack"]["since"] == first["time"]
    assert review_status(gov, release)["last_review"]["review_pack_sha256"] == stored["sha256"]
    led = gov.ledger
    last = led.read(led.size() - 1)
    assert last.entry.type == "review"
    assert last.payload["review_pack_sha256"] == stored["sha256"]
    assert last.payload["review_period"] == {"since": first["time"], "as_of": stored["as_of"]}


def test_review_pack_on_the_command_line_shows_each_site_beside_validation(
    world, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import sys

    from clinical_mlops.cli import app
    from clinical_mlops.cli._common import run_guarded

    root, release = str(world["ws"].root), world["release"]
    as_of = world["as_of"].strftime("%Y-%m-%dT%H:%M:%SZ")

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", "review", "pack", release, *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().out

    code, out = run("--as-of", as_of, "--json", "-w", root)
    assert code == 0
    pack = json.loads(out)
    assert [r["site"] for r in pack["sites"]] == ["north", "south", "all sites"]
    assert _site(pack, "north")["auroc"] == _site(world["pack"], "north")["auroc"]
    monkeypatch.setenv("COLUMNS", "200")
    code, out = run("--as-of", as_of, "-w", root)
    assert code == 0
    north = _site(world["pack"], "north")
    assert f"{north['auroc']:.3f}" in out and "insufficient" in out
    assert "incidents: BREACHED" in out and "ethnicity" in out


def _site_validation(report, site):
    """Return the report's all-period matrix row of ``site``."""
    assert report.matrix is not None
    return next(cell for cell in report.matrix.by_site if cell.site == site)
