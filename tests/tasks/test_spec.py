"""Task specs: the built-in ICU spec, and errors that name the field at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clinical_mlops.errors import TaskSpecInvalid
from clinical_mlops.tasks import builtin_tasks, load_task

R_T3 = [
    "age",
    "sex",
    "diagnosis_category",
    "gcs",
    "map",
    "heart_rate",
    "resp_rate",
    "temperature",
    "spo2",
    "creatinine",
    "lactate",
    "albumin",
    "bilirubin",
    "platelets",
    "inr",
    "vasopressor",
    "ventilation",
]


def test_builtin_icu_spec_declares_the_17_features_in_order():
    spec = load_task("icu_mortality_48h")
    assert list(spec.feature_names) == R_T3
    assert all(f.status == "approved" for f in spec.features)
    assert all(len(f.justification) >= 20 for f in spec.features)
    assert "icu_mortality_48h" in builtin_tasks()


def test_builtin_icu_spec_thresholds_and_periods():
    spec = load_task("icu_mortality_48h")
    t = spec.thresholds
    assert (t.operating, t.conformal_alpha, t.subgroup_auroc_gap, t.auroc_degradation, t.psi) == (
        0.40,
        0.10,
        0.03,
        0.05,
        0.2,
    )
    assert spec.split.train_years == (2008, 2016)
    assert spec.split.test_years == (2017, 2019)
    assert spec.label.window.start_hours == spec.prediction_time_hours == 24
    assert spec.label.window.end_hours == 72
    bands = next(p for p in spec.protected_attributes if p.name == "age_group").bands
    assert [b.label for b in bands] == ["18-44", "45-64", "65-79", "80+"]
    assert "direct_care" in spec.consent.purposes_allowed


def test_criteria_hash_ignores_prose_but_not_criteria():
    spec = load_task("icu_mortality_48h")
    data = spec.model_dump(mode="json")
    data["description"] = "different words"
    from clinical_mlops.tasks import task_from_mapping

    assert task_from_mapping(data, source="x").criteria_hash() == spec.criteria_hash()
    data["cohort"]["min_los_hours"] = 12
    assert task_from_mapping(data, source="x").criteria_hash() != spec.criteria_hash()


def _spec_file(tmp_path: Path, mutate) -> Path:
    data = load_task("icu_mortality_48h").model_dump(mode="json")
    mutate(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (
            lambda d: d["features"][3].update(valid_range=[15, 3]),
            "features.3.valid_range",
            "low < high",
        ),
        (lambda d: d["features"][10].pop("unit"), "features.10.unit", "required"),
        (lambda d: d["features"][4].update(kind="vector"), "features.4.kind", "numeric"),
        (
            lambda d: d["features"][5].update(justification="short"),
            "features.5.justification",
            "at least 20",
        ),
        (lambda d: d["thresholds"].update(operating=1.4), "thresholds.operating", "less than 1"),
        (
            lambda d: d["label"]["window"].update(start_hours=12),
            "label.window.start_hours",
            "leaks",
        ),
        (
            lambda d: d["split"].update(test_years=[2015, 2019]),
            "split.test_years",
            "after the train",
        ),
        (lambda d: d.update(surprise=1), "surprise", "not permitted"),
        (lambda d: d["features"].append(dict(d["features"][0])), "features", "duplicate"),
    ],
)
def test_invalid_spec_names_the_field(tmp_path, mutate, field, fragment):
    with pytest.raises(TaskSpecInvalid) as info:
        load_task(_spec_file(tmp_path, mutate))
    paths = [p for p, _ in info.value.problems]
    assert field in paths, info.value
    message = dict(info.value.problems)[field]
    assert fragment in message, message
    assert field in str(info.value)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nfeatures: [a, b\nversion: 1\n", encoding="utf-8")
    with pytest.raises(TaskSpecInvalid) as info:
        load_task(path)
    assert "malformed YAML" in str(info.value)
    assert "line" in info.value.problems[0][0]


def test_unknown_task_lists_builtin_tasks():
    with pytest.raises(TaskSpecInvalid, match="built-in tasks are icu_mortality_48h"):
        load_task("no_such_task")
