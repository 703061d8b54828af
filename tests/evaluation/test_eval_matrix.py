"""The validation matrix: site x period figures of the locked test set, checked cell by cell."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from clinical_mlops.evaluation.fairness import INSUFFICIENT_DATA, MIN_PER_CLASS, MIN_STAYS
from clinical_mlops.evaluation.report import evaluate, flags_of_test_stays
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.modeling.escalation import EscalationReference, resolve
from clinical_mlops.tasks import task_from_mapping
from conftest import SPEC, make_input

N_BOOT = 200
SITES = ("north", "south", "east")


@pytest.fixture(scope="module")
def inp():
    """The fake input at three hospitals, plus a tiny fourth and one with few outcomes."""
    base = make_input()
    rng = np.random.default_rng(3)
    frame = base.test_frame.copy()
    site = rng.choice(SITES, size=len(frame), p=[0.45, 0.35, 0.2]).astype(object)
    site[:12] = "tiny"  # below MIN_STAYS
    y = base.y_true
    few = np.flatnonzero(y == 0)[12:62]  # 50 stays, none with the outcome
    site[few] = "few_events"
    frame["site"] = site
    cal = make_input(seed=11, n=1500)
    features = list(SPEC.feature_names)
    reference = EscalationReference.build(
        cal.p_cal,
        cal.prediction_sets,
        missing_count=cal.test_frame[features].isna().sum(axis=1).to_numpy(),
        n_features=len(features),
        max_missing=SPEC.cohort.max_missing_feature_fraction,
    )
    return dataclasses.replace(base, test_frame=frame, escalation_reference=reference)


@pytest.fixture(scope="module")
def report(inp) -> ValidationReport:
    return evaluate(inp, n_boot=N_BOOT)


def _mask(inp, row) -> np.ndarray:
    frame = inp.test_frame
    mask = np.ones(len(frame), dtype=bool)
    if row.site != "all":
        mask &= frame["site"].to_numpy() == row.site
    if row.period != "all":
        mask &= frame["real_year"].astype(str).to_numpy() == row.period
    return mask


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    bins = np.minimum((p * 10).astype(int), 9)
    return sum(
        abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum()
        for b in range(10)
        if (bins == b).any()
    ) / len(y)


def _score(a: float, logit: np.ndarray, events: float) -> float:
    return float((1 / (1 + np.exp(-(a + logit)))).sum() - events)


def test_the_matrix_has_every_site_and_year_and_their_margins(report, inp):
    m = report.matrix
    assert m is not None and m.strata == ["site", "period"]
    years = sorted(inp.test_frame["real_year"].astype(str).unique())
    sites = sorted({*SITES, "tiny", "few_events"})
    assert [(r.site, r.period) for r in m.rows] == [(s, y) for s in sites for y in years]
    assert [(r.site, r.period) for r in m.by_site] == [(s, "all") for s in sites]
    assert [(r.site, r.period) for r in m.by_period] == [("all", y) for y in years]
    assert sum(r.n for r in m.rows) == sum(r.n for r in m.by_site) == len(inp.y_true)
    assert sum(r.n_events for r in m.by_period) == int(inp.y_true.sum())


def test_every_measured_cell_matches_sklearn_and_a_direct_computation(report, inp):
    y, p = inp.y_true, inp.p_cal
    threshold = report.test.threshold
    policy = resolve(SPEC.escalation, threshold=threshold, reference=inp.escalation_reference)
    queued = policy.route(p, flags_of_test_stays(inp, p)).queued  # the workload section's rule
    assert report.workload.reviews_per_100 == pytest.approx(100 * queued.mean())
    measured = 0
    for row in [*report.matrix.rows, *report.matrix.by_site, *report.matrix.by_period]:
        mask = _mask(inp, row)
        yc, pc = y[mask], p[mask]
        assert (row.n, row.n_events) == (int(mask.sum()), int(yc.sum()))
        if isinstance(row.auroc, str):
            continue
        measured += 1
        assert row.prevalence == pytest.approx(yc.mean())
        assert row.auroc.value == pytest.approx(roc_auc_score(yc, pc), abs=1e-12)
        lo, hi = row.auroc.ci
        assert lo <= row.auroc.value <= hi
        logit = np.log(pc / (1 - pc))
        fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit[:, None], yc)
        assert row.calibration_slope == pytest.approx(fit.coef_[0][0], abs=1e-4)
        # Calibration-in-the-large: the intercept a with logit(p) as offset solves
        # sum(sigmoid(a + logit p)) = events (the intercept's score equation).
        citl = brentq(_score, -10, 10, args=(logit, yc.sum()))
        assert row.calibration_intercept == pytest.approx(citl, abs=1e-6)
        assert row.ece == pytest.approx(_ece(yc, pc), abs=1e-12)
        assert row.alerts_per_100 == pytest.approx(100 * np.mean(pc >= threshold))
        assert row.reviews_per_100 == pytest.approx(100 * queued[mask].mean())
    assert measured >= len(SITES) * 3 + len(SITES) + 3


def test_small_cells_say_insufficient_data_never_a_number(report):
    tiny = next(r for r in report.matrix.by_site if r.site == "tiny")
    assert tiny.n == 12 < MIN_STAYS
    for value in (
        tiny.auroc,
        tiny.calibration_slope,
        tiny.calibration_intercept,
        tiny.ece,
        tiny.alerts_per_100,
        tiny.reviews_per_100,
        tiny.max_subgroup_gap,
    ):
        assert value == INSUFFICIENT_DATA.format(n=12)
    few = next(r for r in report.matrix.by_site if r.site == "few_events")
    assert few.n == 50 and few.n_events == 0 < MIN_PER_CLASS
    for value in (few.auroc, few.calibration_slope, few.calibration_intercept):
        assert value == "insufficient data (n=50; 0 with the outcome, 50 without)"
    assert isinstance(few.ece, float) and isinstance(few.alerts_per_100, float)


def test_the_largest_subgroup_gap_is_the_widest_attribute_in_the_cell(report, inp):
    north = next(r for r in report.matrix.by_site if r.site == "north")
    gap = north.max_subgroup_gap
    assert not isinstance(gap, str) and gap is not None
    mask = inp.test_frame["site"].to_numpy() == "north"
    frame, y, p = inp.test_frame[mask], inp.y_true[mask], inp.p_cal[mask]
    column = {"sex": "sex", "ethnicity": "ethnicity"}
    attr = next(a for a in SPEC.protected_attributes if a.name == gap.attribute)
    if attr.column in column.values():
        best = attr.groups[gap.best_group]
        worst = attr.groups[gap.worst_group]
        sel_b = frame[attr.column].to_numpy() == best
        sel_w = frame[attr.column].to_numpy() == worst
        expected = roc_auc_score(y[sel_b], p[sel_b]) - roc_auc_score(y[sel_w], p[sel_w])
        assert gap.value == pytest.approx(expected, abs=1e-12)
    assert gap.value >= 0


def test_a_snapshot_without_site_gives_one_unspecified_site(validation_report):
    m = validation_report.matrix
    assert m is not None
    assert {r.site for r in m.rows} == {"unspecified"}
    assert [r.site for r in m.by_site] == ["unspecified"]
    assert len(m.by_period) == 3


def test_a_report_written_before_the_matrix_still_loads(validation_report):
    old = validation_report.to_json()
    old.pop("matrix")
    assert ValidationReport.from_json(old, source="old report.json").matrix is None


def test_declared_strata_decide_the_split(inp):
    data = SPEC.model_dump(mode="json")
    data["evaluation"] = {"strata": ["period"]}
    spec = task_from_mapping(data, source="x")
    m = evaluate(dataclasses.replace(inp, spec=spec), n_boot=50).matrix
    assert m.strata == ["period"] and m.by_site == []
    assert {r.site for r in m.rows} == {"all"} and len(m.rows) == len(m.by_period) == 3


def test_the_html_report_shows_the_matrix_and_its_plot(report, inp, tmp_path):
    from clinical_mlops.evaluation.report import write_report

    html = write_report(report, inp, tmp_path)["html"].read_text(encoding="utf-8")
    section = html[html.index("validation matrix") : html.index("Fairness at the operating")]
    for site in (*SITES, "tiny"):
        assert f"<td>{site}</td>" in section
    assert "insufficient data (n=12)" in section
    assert 'alt="AUROC per site and test year" src="data:image/png;base64,' in section
