"""A fake, seeded EvaluationInput: 2,000 test stays with a simple logistic 'model'.

Feature values lie inside the spec's valid ranges, labs go missing at about the
published rates, and the outcome is drawn from the model's own risk plus noise
so discrimination is good but not perfect and calibration is slightly off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.validation_report import ValidationReport
from clinical_mlops.tasks import load_task

SPEC = load_task("icu_mortality_48h")
N_TEST = 2000
SEED = 7

# The fake model: log-odds = INTERCEPT + sum COEF[f] * (imputed x_f - CENTRE[f]).
MEDIANS = {
    "age": 66.0, "gcs": 14.0, "map": 68.0, "heart_rate": 98.0, "resp_rate": 24.0,
    "temperature": 37.6, "spo2": 93.0, "creatinine": 1.1, "lactate": 1.9, "albumin": 3.1,
    "bilirubin": 0.8, "platelets": 190.0, "inr": 1.3, "vasopressor": 0.0, "ventilation": 0.0,
}  # fmt: skip
COEF = {
    "age": 0.03, "gcs": -0.18, "map": -0.02, "heart_rate": 0.01, "resp_rate": 0.03,
    "temperature": -0.1, "spo2": -0.04, "creatinine": 0.15, "lactate": 0.25, "albumin": -0.35,
    "bilirubin": 0.08, "platelets": -0.002, "inr": 0.2, "vasopressor": 0.7, "ventilation": 0.5,
}  # fmt: skip
SEX_EFFECT = {"F": 0.0, "M": 0.1}
DX_EFFECT = {"infectious": 0.5, "circulatory": 0.3, "respiratory": 0.2, "neoplasm": 0.4}
INTERCEPT = -3.2
LABS = ("creatinine", "lactate", "albumin", "bilirubin", "platelets", "inr")


def _raw_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    dx = list(SPEC.feature("diagnosis_category").categories or ())
    f = {
        "stay_id": np.arange(30_000_000, 30_000_000 + n),
        "age": np.floor(rng.uniform(18, 96, n)),
        "sex": rng.choice(["F", "M"], n, p=[0.44, 0.56]),
        "diagnosis_category": rng.choice(dx, n),
        "gcs": rng.integers(3, 16, n).astype(float),
        "map": rng.uniform(40, 110, n),
        "heart_rate": rng.uniform(50, 160, n),
        "resp_rate": rng.uniform(8, 40, n),
        "temperature": rng.uniform(35, 40, n),
        "spo2": rng.uniform(80, 100, n),
        "creatinine": np.clip(rng.lognormal(0.1, 0.6, n), 0.2, 12),
        "lactate": np.clip(rng.lognormal(0.6, 0.6, n), 0.3, 15),
        "albumin": rng.uniform(1.5, 5.0, n),
        "bilirubin": np.clip(rng.lognormal(-0.2, 0.9, n), 0.1, 30),
        "platelets": rng.uniform(10, 500, n),
        "inr": rng.uniform(0.8, 4.0, n),
        "vasopressor": (rng.random(n) < 0.3).astype(float),
        "ventilation": (rng.random(n) < 0.38).astype(float),
    }
    frame = pd.DataFrame(f)
    for col, rate in {"lactate": 0.38, "albumin": 0.32, "bilirubin": 0.29, "gcs": 0.08}.items():
        frame.loc[rng.random(n) < rate, col] = np.nan
    frame["real_year"] = rng.integers(2017, 2020, n)
    frame["ethnicity"] = rng.choice(
        ["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN"],
        n,
        p=[0.62, 0.12, 0.07, 0.05, 0.06, 0.08],
    )
    return frame


def contributions_of(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-feature log-odds contributions of the fake model plus a bias column."""
    out = pd.DataFrame(index=frame.index)
    for name in SPEC.feature_names:
        if name in COEF:
            x = frame[name].astype(float).fillna(MEDIANS[name])
            out[name] = COEF[name] * (x - MEDIANS[name])
    out["sex"] = frame["sex"].map(SEX_EFFECT).astype(float)
    out["diagnosis_category"] = frame["diagnosis_category"].map(DX_EFFECT).fillna(0.0)
    out = out[list(SPEC.feature_names)]
    out["bias"] = INTERCEPT
    return out


def predict_frame(frame: pd.DataFrame) -> np.ndarray:
    """The fake model's calibrated probability for a raw feature frame."""
    margin = contributions_of(frame).sum(axis=1).to_numpy()
    return 1.0 / (1.0 + np.exp(-margin))


def make_input(seed: int = SEED, n: int = N_TEST) -> EvaluationInput:
    rng = np.random.default_rng(seed)
    frame = _raw_frame(rng, n)
    contrib = contributions_of(frame)
    margin = contrib.sum(axis=1).to_numpy()
    truth = 1.0 / (1.0 + np.exp(-(1.1 * margin + rng.normal(0, 0.6, n) + 0.1)))
    y = (rng.random(n) < truth).astype(int)
    frame[SPEC.label.name] = y
    p_cal = predict_frame(frame)
    q0, q1 = 0.55, 0.85  # Mondrian nonconformity quantiles (1 - p of the class)
    sets = np.column_stack([p_cal <= q0, 1.0 - p_cal <= q1])
    features = list(SPEC.feature_names)
    return EvaluationInput(
        spec=SPEC,
        model_version="icu_mortality_48h@0.1.0-test",
        selected_model="xgboost",
        hyperparameters={"n_estimators": 400, "max_depth": 5, "learning_rate": 0.05},
        cv={
            "logistic_regression": {"mean_auroc": 0.81, "ci": [0.8, 0.82], "folds": [0.81] * 5},
            "random_forest": {"mean_auroc": 0.83, "ci": [0.82, 0.84], "folds": [0.83] * 5},
            "xgboost": {"mean_auroc": 0.85, "ci": [0.84, 0.86], "folds": [0.85] * 5},
        },
        test_frame=frame[["stay_id", *features, SPEC.label.name, "real_year", "ethnicity"]],
        y_true=y,
        p_raw=1.0 / (1.0 + np.exp(-margin)),
        p_cal=p_cal,
        prediction_sets=sets,
        conformal={
            "method": "mondrian_split_conformal",
            "alpha": 0.1,
            "quantiles": {"0": q0, "1": q1},
            "n_calibration": {"0": 1500, "1": 190},
            "guarantee": "coverage >= 90% within each class on exchangeable data",
        },
        calibration={"method": "isotonic", "n": 1690, "fitted_on": "calibration split of train"},
        contributions=contrib,
        predict_frame=predict_frame,
        snapshot={
            "snapshot_id": "sha256:" + "ab" * 32,
            "task": SPEC.name,
            "source": "synthetic",
            "cohort_flow": [
                {"step": "ICU stays in source", "remaining": 9000, "excluded": 0},
                {"step": "age >= 18 years", "remaining": 8800, "excluded": 200},
                {"step": "first ICU admission of the patient", "remaining": 8000, "excluded": 800},
            ],
            "n_stays": 8000,
            "n_train": 6000,
            "n_test": n,
            "n_positive": int(0.11 * 8000),
            "prevalence": 0.11,
            "prevalence_train": 0.11,
            "prevalence_test": float(y.mean()),
            "missingness": {"lactate": 0.38, "albumin": 0.32, "bilirubin": 0.29},
        },
        lineage={"dataset_sha256": "cd" * 32, "feature_sql_sha256": "ef" * 32, "seed": seed},
        seed=seed,
        extra={"imputation_medians": dict(MEDIANS)},
    )


@pytest.fixture(scope="session")
def evaluation_input() -> EvaluationInput:
    """One fake evaluation input for the whole session (read-only)."""
    return make_input()


@pytest.fixture(scope="session")
def validation_report(evaluation_input: EvaluationInput) -> ValidationReport:
    """The validation report of the fake input with 200 resamples (fast)."""
    from clinical_mlops.evaluation.report import evaluate

    return evaluate(evaluation_input, n_boot=200)


@pytest.fixture(scope="session")
def report(validation_report: ValidationReport) -> dict:
    """The same report as the JSON document ``report.json`` holds."""
    return validation_report.to_json()
