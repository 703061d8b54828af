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


# -- how EHRs record each feature (fhir, window, molar_mass) --------------------------------

_MAP = 4  # index of the map feature in the ICU spec
_VASO = 15


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(codes=["loinc:8478-0"]),
            "features.4.fhir.0.codes",
            "'system|code'",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(codes=["http://loinc.org|"]),
            "features.4.fhir.0.codes",
            "'system|code'",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(resource="Observations"),
            "features.4.fhir.0.resource",
            "MedicationAdministration",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][1].pop("diastolic"),
            "features.4.fhir.1.diastolic",
            "required to derive mean_arterial_pressure",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(systolic="http://loinc.org|8480-6"),
            "features.4.fhir.0.systolic",
            "only a derived entry",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][1].update(derive="shock_index"),
            "features.4.fhir.1.derive",
            "mean_arterial_pressure",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(status=["final", "done"]),
            "features.4.fhir.0.status",
            "not a Observation status",
        ),
        (
            lambda d: d["features"][_MAP]["fhir"][0].update(resource="Procedure"),
            "features.4.fhir",
            "only a flag feature",
        ),
        (
            lambda d: d["features"][_VASO]["fhir"][0].update(status=["final"]),
            "features.15.fhir.0.status",
            "not a MedicationAdministration status",
        ),
        (
            lambda d: d["features"][_MAP].update(window={"start_hours": 12, "end_hours": 30}),
            "features.4.window",
            "outside the task's observation_window",
        ),
        (
            lambda d: d["features"][_MAP].update(window={"start_hours": 12, "end_hours": 6}),
            "features.4.window.end_hours",
            "greater than start_hours",
        ),
        (
            lambda d: d["features"][0].update(window={"start_hours": 0, "end_hours": 12}),
            "features.0.window",
            "static feature",
        ),
        (
            lambda d: d["features"][_MAP].update(molar_mass=-1),
            "features.4.molar_mass",
            "greater than 0",
        ),
        (
            lambda d: d["features"][5]["fhir"][0]["codes"].append("http://loinc.org|8478-0"),
            "features.5.fhir",
            "a code names one variable",
        ),
    ],
)
def test_invalid_fhir_declaration_names_the_field(tmp_path, mutate, field, fragment):
    with pytest.raises(TaskSpecInvalid) as info:
        load_task(_spec_file(tmp_path, mutate))
    problems = dict(info.value.problems)
    assert field in problems, info.value
    assert fragment in problems[field], problems[field]


@pytest.mark.parametrize("task", ["icu_mortality_48h", "readmission_30d"])
def test_every_event_feature_of_a_builtin_task_says_how_ehrs_record_it(task):
    spec = load_task(task)
    for f in spec.event_features:
        assert f.fhir, f.name
        assert all(code.count("|") == 1 for code in f.fhir_codes()), f.name


def test_builtin_codes_include_what_simulated_ehrs_send():
    icu = load_task("icu_mortality_48h")
    assert {"http://loinc.org|2708-6", "http://loinc.org|59408-5"} <= set(
        icu.feature("spo2").fhir_codes()
    )
    derived = [e for e in icu.feature("map").fhir if e.derive == "mean_arterial_pressure"]
    assert derived and derived[0].systolic == "http://loinc.org|8480-6"
    assert icu.feature("creatinine").molar_mass == pytest.approx(113.12)
    vaso = icu.feature("vasopressor").fhir[0]
    assert vaso.resource == "MedicationAdministration"
    assert "http://www.nlm.nih.gov/research/umls/rxnorm|7512" in vaso.codes
    assert vaso.statuses == ("in-progress", "completed")


def test_a_spec_without_fhir_declarations_keeps_its_hash():
    data = load_task("icu_mortality_48h").model_dump(mode="json")
    for f in data["features"]:
        f["fhir"], f["molar_mass"] = [], None
    from clinical_mlops.tasks import task_from_mapping

    bare = task_from_mapping(data, source="x")
    spelled = {**data, "features": [{**f, "window": None} for f in data["features"]]}
    assert task_from_mapping(spelled, source="x").spec_hash() == bare.spec_hash()
    data["features"][4]["window"] = {"start_hours": 0, "end_hours": 12}
    assert task_from_mapping(data, source="x").spec_hash() != bare.spec_hash()


def test_the_recalibration_minimum_keeps_existing_hashes_at_its_default():
    # A spec written before the field hashes as before (the field is left out at its
    # default); declaring another minimum is a new spec.
    from clinical_mlops.tasks import task_from_mapping

    data = load_task("icu_mortality_48h").model_dump(mode="json")
    default = data["acceptance"].pop("min_recalibration_events")
    before = task_from_mapping(data, source="x")
    assert before.acceptance.min_recalibration_events == default
    assert before.spec_hash() == load_task("icu_mortality_48h").spec_hash()
    spelled = {**data, "acceptance": {**data["acceptance"], "min_recalibration_events": default}}
    assert task_from_mapping(spelled, source="x").spec_hash() == before.spec_hash()
    stricter = {**data, "acceptance": {**data["acceptance"], "min_recalibration_events": 80}}
    assert task_from_mapping(stricter, source="x").spec_hash() != before.spec_hash()
    with pytest.raises(Exception, match="acceptance.min_recalibration_events"):
        task_from_mapping(
            {**data, "acceptance": {**data["acceptance"], "min_recalibration_events": 0}},
            source="x",
        )


def test_evaluation_strata_are_declared_and_leave_existing_hashes_alone():
    from clinical_mlops.tasks import task_from_mapping

    spec = load_task("icu_mortality_48h")
    assert spec.evaluation.strata == ("site", "period")
    data = spec.model_dump(mode="json")
    assert task_from_mapping(data, source="x").spec_hash() == spec.spec_hash()
    data.pop("evaluation")
    assert task_from_mapping(data, source="x").spec_hash() == spec.spec_hash()
    data["evaluation"] = {"strata": ["site"]}
    only_site = task_from_mapping(data, source="x")
    assert only_site.evaluation.strata == ("site",)
    assert only_site.spec_hash() != spec.spec_hash()
    assert only_site.criteria_hash() == spec.criteria_hash()  # a stratum never changes a cohort
    data["evaluation"] = {"strata": ["site", "site"]}
    with pytest.raises(TaskSpecInvalid, match="distinct strata"):
        task_from_mapping(data, source="x")
