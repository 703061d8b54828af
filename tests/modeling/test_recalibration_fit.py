"""Local recalibration's fit matches scikit-learn and crepes, and its split is honest.

The model is the small pooled model of the registry tests; its snapshot's stays are all
treated as one site ("all") so each part holds enough stays to compare fits on.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.metrics import calibration_slope_intercept
from clinical_mlops.features.snapshot import open_snapshot
from clinical_mlops.modeling.calibration import LogisticCalibrator, load_calibrator
from clinical_mlops.modeling.recalibration import (
    check_method,
    minimum_problems,
    recalibrate,
    site_split,
)
from clinical_mlops.modeling.trained import TrainedModel
from clinical_mlops.workspace import Workspace
from registry_helpers import trained  # noqa: F401 - the session's small trained model


@pytest.fixture(scope="module")
def world(trained):  # noqa: F811 - the fixture imported above
    root, version = trained
    ws = Workspace.open(root)
    model = TrainedModel.load(ws.models_dir / version)
    lineage = json.loads((ws.models_dir / version / "lineage.json").read_text())
    snap = open_snapshot(ws, lineage["snapshot"]["id"])
    frame = snap.frame().assign(site="all")
    return model, snap.spec(), frame


def _margins(model, part):
    return model.scorer.margin(model.preprocessor.transform(part))


def test_split_is_temporal_disjoint_seeded_and_stratified(world):
    model, spec, frame = world
    a = site_split(frame, spec, site="all", seed=5)
    b = site_split(frame, spec, site="all", seed=5)
    c = site_split(frame, spec, site="all", seed=6)
    ids = {name: set(part["stay_id"]) for name, part in a.parts().items()}
    assert not (ids["calibrator"] & ids["conformal"]) and not (ids["held_out"] & ids["calibrator"])
    assert ids["calibrator"] | ids["conformal"] | ids["held_out"] == set(frame["stay_id"])
    lo, hi = spec.split.train_years
    assert a.calibrator["real_year"].between(lo, hi).all()
    assert a.conformal["real_year"].between(lo, hi).all()
    assert a.held_out["real_year"].min() > hi
    for name in ("calibrator", "conformal", "held_out"):
        pd.testing.assert_frame_equal(a.parts()[name], b.parts()[name])
    assert set(c.calibrator["stay_id"]) != ids["calibrator"]
    label = spec.label.name
    rate = a.calibrator[label].mean()
    assert abs(rate - a.conformal[label].mean()) < 2 / len(a.conformal)


def test_isotonic_refit_is_sklearns_and_the_scorer_is_untouched(world):
    model, spec, frame = world
    split = site_split(frame, spec, site="all", seed=5)
    new = recalibrate(model, split, method="isotonic", spec=spec)
    assert new.scorer is model.scorer and new.preprocessor is model.preprocessor
    assert new.artifact_hashes()["model.json"] == model.artifact_hashes()["model.json"]
    s = _margins(model, split.calibrator)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
        s, split.calibrator[spec.label.name]
    )
    grid = np.linspace(s.min() - 1, s.max() + 1, 2000)
    np.testing.assert_allclose(new.calibrator.transform(grid), ref.predict(grid), atol=1e-12)
    assert new.version != model.version
    assert recalibrate(model, split, method="isotonic", spec=spec).version == new.version


def test_logistic_refit_is_the_maximum_likelihood_platt_fit(world):
    model, spec, frame = world
    split = site_split(frame, spec, site="all", seed=5)
    new = recalibrate(model, split, method="logistic", spec=spec)
    cal = new.calibrator
    assert isinstance(cal, LogisticCalibrator)
    s = _margins(model, split.calibrator)
    y = split.calibrator[spec.label.name].to_numpy(dtype=int)
    # scikit-learn with another solver, unpenalised
    lbfgs = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-12, max_iter=10_000).fit(
        s[:, None], y
    )
    assert cal.intercept == pytest.approx(float(lbfgs.intercept_[0]), abs=1e-4)
    assert cal.slope == pytest.approx(float(lbfgs.coef_[0, 0]), abs=1e-4)
    # the report's own Newton-Raphson fit of logit P(y) = a + b * logit(sigmoid(margin))
    own = calibration_slope_intercept(y, 1 / (1 + np.exp(-s)))
    assert cal.slope == pytest.approx(own["slope"], abs=1e-5)
    assert cal.intercept == pytest.approx(own["recalibration_intercept"], abs=1e-5)
    # the score equations of the likelihood are zero at the fit
    residual = y - cal.transform(s)
    assert abs(residual.sum()) < 1e-6 * len(y) and abs((residual * s).sum()) < 1e-6 * len(y)
    again = load_calibrator(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.transform(s), cal.transform(s))


def test_conformal_refit_matches_crepes_on_the_sites_conformal_stays(world):
    from crepes import WrapClassifier

    class _Identity:
        classes_ = np.array([0, 1])

        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    model, spec, frame = world
    split = site_split(frame, spec, site="all", seed=5)
    new = recalibrate(model, split, method="logistic", spec=spec)
    label = spec.label.name
    p_conf = new.calibrator.transform(_margins(model, split.conformal))
    p_test = new.calibrator.transform(_margins(model, split.held_out))
    wrapped = WrapClassifier(_Identity())
    wrapped.calibrate(p_conf[:, None], split.conformal[label].to_numpy(), class_cond=True)
    alpha = spec.thresholds.conformal_alpha
    ref = wrapped.predict_p(p_test[:, None], smoothing=False) > alpha
    assert (new.conformal.predict_sets(p_test) == ref).all()
    assert new.conformal.n_calibration == {
        k: int((split.conformal[label] == k).sum()) for k in (0, 1)
    }
    # the escalation reference is the site's conformal stays, as the policy sees them
    assert new.escalation_reference is not None
    assert len(new.escalation_reference.probabilities) == len(split.conformal)


def test_minimum_and_method_are_checked(world):
    model, spec, frame = world
    split = site_split(frame, spec, site="all", seed=5)
    counts = split.counts()
    fewest = min(min(c["events"], c["non_events"]) for c in counts.values())
    assert minimum_problems(split, fewest) == []
    short = minimum_problems(split, fewest + 1)
    assert short and all("site all" in s for s in short)
    with pytest.raises(ValueInvalid, match="method: expected isotonic or logistic, got 'spline'"):
        check_method("spline")
    with pytest.raises(ValueInvalid, match="method"):
        recalibrate(model, split, method="spline", spec=spec)  # type: ignore[arg-type]
