"""A bring-your-own table that fits neither built-in score, and its task spec.

The rows are the diabetes study shipped with scikit-learn (Efron et al., Annals of
Statistics 2004; 442 patients: age, sex, BMI, average blood pressure, six serum
measurements, and disease progression one year later), in clinical units. The study
has no dates: each row is given a visit year (seeded), so the temporal split has
periods to work with. The outcome is progression of at least 200 on the study's scale.
Nothing here is a SOFA or LACE input.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_diabetes

YEARS = (2012, 2019)
TRAIN_YEARS = (2012, 2017)
TEST_YEARS = (2018, 2019)
PROGRESSION_CUTOFF = 200
NAME = "diabetes_progression_1y"

#: The metabolic-syndrome count the points baseline declares (NCEP ATP III criteria, as the
#: study's variables allow); ``points(table)`` below recomputes it independently of the product.
POINTS_BASELINE: dict[str, Any] = {
    "kind": "points",
    "name": "Metabolic-syndrome-like count",
    "citation": (
        "Expert Panel on Detection, Evaluation, and Treatment of High Blood Cholesterol in "
        "Adults. Executive summary of the Third Report of the NCEP (ATP III). "
        "JAMA 2001;285:2486-2497"
    ),
    "description": "One point per metabolic-syndrome criterion the patient meets.",
    "max_points": 4,
    "items": [
        {
            "feature": "bmi",
            "label": "Obesity",
            "bands": [{"high": 30, "points": 0}, {"low": 30, "points": 1}],
            "approximation": "BMI >= 30 kg/m2 stands in for waist circumference",
        },
        {
            "feature": "hdl",
            "label": "Low HDL cholesterol",
            "bands": [{"high": 40, "points": 1}, {"low": 40, "points": 0}],
            "approximation": "one cut-off (40 mg/dL) for both sexes",
        },
        {
            "feature": "map",
            "label": "Raised blood pressure",
            "bands": [{"high": 100, "points": 0}, {"low": 100, "points": 1}],
            "approximation": "average blood pressure >= 100 mmHg stands in for >= 130/85",
        },
        {"feature": "impaired_fasting_glucose", "label": "Raised fasting glucose", "points": 1},
    ],
}

NO_BASELINE: dict[str, Any] = {
    "kind": "none",
    "reason": (
        "No validated score predicts one-year progression in this clinic's diabetes "
        "population; the model is judged on its own discrimination and calibration."
    ),
}


def points(table: pd.DataFrame) -> np.ndarray:
    """The metabolic-syndrome count of each row, computed from the table's own columns."""
    return (
        (table["BMI"] >= 30).astype(int)
        + (table["HDL (mg/dL)"] < 40).astype(int)
        + (table["map"] >= 100).astype(int)
        + (table["impaired_fasting_glucose"] == 1).astype(int)
    ).to_numpy()


def diabetes_table() -> pd.DataFrame:
    """One row per patient, as a clinic might export it (id, visit year, clinical headers)."""
    study = load_diabetes(scaled=False, as_frame=True).frame
    years = np.random.default_rng(19).integers(YEARS[0], YEARS[1] + 1, size=len(study))
    return pd.DataFrame(
        {
            "patient_id": [f"DM{i:05d}" for i in range(len(study))],
            "visit_year": years,
            "age": study["age"].astype(int),
            "sex": study["sex"].astype(int).astype(str),
            "BMI": study["bmi"],
            "map": study["bp"],
            "total_cholesterol": study["s1"],
            "ldl": study["s2"],
            "HDL (mg/dL)": study["s3"],
            "tc_hdl_ratio": study["s4"],
            "log_triglycerides": study["s5"],
            "glucose": study["s6"],
            "impaired_fasting_glucose": (study["s6"] >= 100).astype(int),
            "progressed": (study["target"] >= PROGRESSION_CUTOFF).astype(int),
        }
    )


def _numeric(name: str, label: str, unit: str, low: float, high: float, why: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "kind": "numeric",
        "source": "static",
        "aggregation": "static",
        "unit": unit,
        "valid_range": [low, high],
        "justification": why,
        "status": "approved",
    }


SPEC: dict[str, Any] = {
    "name": NAME,
    "version": 1,
    "title": "Diabetes progression within one year, from the clinic's baseline visit",
    "description": "Probability that diabetes progresses markedly within a year of the visit.",
    "anchor": "discharge",
    "prediction_time_hours": 0,
    "observation_window": {"start_hours": -24, "end_hours": 0},
    "cohort": {
        "setting": "ward",
        "min_age": 18,
        "years": list(YEARS),
        "first_stay_only": False,
        "exclude_repeat_stays_in_admission": False,
        "min_los_hours": 0,
        "max_missing_feature_fraction": 0.5,
        "require_outcome": True,
    },
    "label": {
        "name": "progressed",
        "event": "column",
        "window": {"start_hours": 0, "end_hours": 8760},
        "description": "1 when disease progression one year later is 200 or more.",
    },
    "split": {
        "kind": "temporal",
        "train_years": list(TRAIN_YEARS),
        "test_years": list(TEST_YEARS),
        "cv_folds": 5,
    },
    "table": {
        "time_column": "visit_year",
        "label_column": "progressed",
        "id_column": "patient_id",
        "columns": {"bmi": "BMI", "hdl": "HDL (mg/dL)"},
    },
    "features": [
        {
            **_numeric("age", "Age", "a", 18, 110, "Age shapes the course of type 2 diabetes."),
            "display_unit": "years",
        },
        {
            "name": "sex",
            "label": "Sex (study code)",
            "kind": "categorical",
            "source": "static",
            "aggregation": "static",
            "categories": ["1", "2"],
            "justification": "Progression of diabetes differs between the sexes.",
            "status": "approved",
        },
        _numeric("bmi", "Body mass index", "kg/m2", 12, 70, "Obesity drives insulin resistance."),
        _numeric("map", "Average blood pressure", "mm[Hg]", 40, 180, "Hypertension marks risk."),
        _numeric(
            "total_cholesterol", "Total cholesterol", "mg/dL", 50, 500, "Dyslipidaemia marks risk."
        ),
        _numeric("ldl", "LDL cholesterol", "mg/dL", 10, 400, "LDL marks metabolic risk."),
        _numeric("hdl", "HDL cholesterol", "mg/dL", 5, 150, "Low HDL is a metabolic criterion."),
        _numeric(
            "tc_hdl_ratio", "Cholesterol/HDL ratio", "1", 0.5, 15, "The ratio marks lipid risk."
        ),
        _numeric(
            "log_triglycerides", "Log triglycerides", "1", 2, 9, "Triglycerides mark resistance."
        ),
        _numeric("glucose", "Blood glucose", "mg/dL", 30, 400, "Glycaemia tracks progression."),
        {
            "name": "impaired_fasting_glucose",
            "label": "Impaired fasting glucose",
            "kind": "flag",
            "source": "static",
            "aggregation": "static",
            "unit": "1",
            "valid_range": [0, 1],
            "justification": "Impaired fasting glucose is a metabolic-syndrome criterion.",
            "status": "approved",
        },
    ],
    "protected_attributes": [
        {"name": "sex", "column": "sex", "groups": {"1": "1", "2": "2"}},
        {
            "name": "age_group",
            "column": "age",
            "bands": [
                {"label": "18-44", "low": 18, "high": 44},
                {"label": "45-64", "low": 45, "high": 64},
                {"label": "65+", "low": 65},
            ],
        },
    ],
    "clinical_baseline": POINTS_BASELINE,
    "thresholds": {
        "operating": 0.3,
        "conformal_alpha": 0.1,
        "subgroup_auroc_gap": 0.1,
        "auroc_degradation": 0.05,
        "psi": 0.2,
    },
    "acceptance": {
        "min_auroc": 0.7,
        "max_ece": 0.15,
        "min_subgroup_auroc": 0.55,
        "must_beat_baseline": True,
    },
    "intended_use": {
        "statement": "Decision support for diabetes clinic physicians at a baseline visit.",
        "users": ["diabetes clinic physicians"],
        "setting": "Adult diabetes outpatient clinic",
        "population": "Adults with diabetes seen at a baseline visit",
    },
    "non_intended_uses": ["Children, or any decision without clinician review"],
    "consent": {"purposes_allowed": ["direct_care"]},
}


def spec(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`SPEC` with top-level ``changes``."""
    data = copy.deepcopy(SPEC)
    data.update(copy.deepcopy(changes))
    return data


def write(folder: Path, data: dict[str, Any], name: str = "spec.yaml") -> Path:
    """Write a spec as YAML (through JSON, so no Python-only YAML tags); return its path."""
    path = folder / name
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False), "utf-8")
    return path
