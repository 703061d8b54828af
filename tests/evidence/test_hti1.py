"""HTI-1 source attributes: all 31, inputs classified from the feature contract, local validity as of a time."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from evidence_world import EARLY

from clinical_mlops.evidence.facts import gather_facts
from clinical_mlops.evidence.fields import field_problems
from clinical_mlops.evidence.hti1 import ATTRIBUTES, HTI1_FILE, build_hti1, classify_inputs
from clinical_mlops.tasks import load_task


def _used(task: str) -> dict[str, list[str]]:
    features = [f.model_dump(mode="json") for f in load_task(task).features]
    return {k: [m["feature"] for m in v] for k, v in classify_inputs(features).items() if v}


def test_exactly_31_attributes_each_with_value_and_pointer_or_owner(world: dict[str, Any]) -> None:
    doc = build_hti1(gather_facts(world["ws"], world["release"]))
    assert len(ATTRIBUTES) == 31 and [n for n, _, _ in ATTRIBUTES] == list(range(1, 32))
    assert [f.key for f in doc.fields] == [f"hti1/{n}" for n in range(1, 32)]
    assert field_problems(doc) == []
    for f in doc.fields:
        assert (f.value is not None and f.pointers) or (f.value is None and f.owner), f.key
    body = json.loads(doc.files[HTI1_FILE])
    assert body["regulation"] == "45 CFR 170.315(b)(11)(iv)(B)"
    assert [a["number"] for a in body["attributes"]] == list(range(1, 32))
    inputs = doc.field("hti1/12")
    assert inputs.value["sex"].startswith("used: sex") and inputs.value["date of birth"].startswith(
        "used: age"
    )
    assert inputs.value["race"] == "not used"


def test_demographic_inputs_are_detected_from_the_feature_contract() -> None:
    assert _used("icu_mortality_48h") == {"sex": ["sex"], "date of birth": ["age"]}
    assert _used("readmission_30d") == {"sex": ["sex"], "date of birth": ["age"]}


def test_social_and_health_status_inputs_are_detected_by_their_words() -> None:
    features = [
        {"name": "housing_unstable", "label": "Unstable housing"},
        {"name": "payer", "label": "Insurance type"},
        {"name": "adl_score", "label": "Functional status (activities of daily living)"},
        {"name": "preferred_language", "label": "Preferred language"},
        {"name": "race", "label": "Race", "status": "withdrawn"},
        {"name": "heart_rate", "label": "Heart rate (highest)"},
    ]
    used = classify_inputs(features)
    assert [m["feature"] for m in used["social determinants of health"]] == [
        "housing_unstable",
        "payer",
    ]
    assert [m["feature"] for m in used["health status assessments"]] == ["adl_score"]
    assert [m["feature"] for m in used["language"]] == ["preferred_language"]
    assert used["race"] == []  # a withdrawn feature is no input
    assert not any(m["feature"] == "heart_rate" for v in used.values() for m in v)


def _window(ws: Any, release: str, at: Any, auroc: float, female: float) -> None:
    from clinical_mlops.database import open_metadata_engine
    from clinical_mlops.monitoring import schema as t
    from clinical_mlops.monitoring.records import epoch
    from clinical_mlops.monitoring.runs import store_windows
    from clinical_mlops.monitoring.windows import WindowResult

    quantities = {
        "idle": 0,
        "n_window": 40,
        "n_outcomes": 600,
        "n_outcome_positives": 61,
        "auroc": auroc,
        "auroc_se": 0.02,
        "auroc_degradation": 0.87 - auroc,
        "ece": 0.04,
        "brier": 0.07,
        "calibration_slope": 0.95,
        "auroc:sex=Female": female,
        "auroc:sex=Male": auroc,
        "gap:sex": abs(auroc - female),
    }
    engine = open_metadata_engine(ws.database_url("meta"), t.metadata)
    try:
        store_windows(engine, release, [WindowResult(at=epoch(at), quantities=quantities)])
    finally:
        engine.dispose()


def test_local_validity_and_fairness_refresh_from_monitoring_as_of(world: dict[str, Any]) -> None:
    ws, release, t0 = world["ws"], world["release"], world["t0"]

    def local(as_of: Any) -> tuple[Any, Any]:
        doc = build_hti1(gather_facts(ws, release, as_of=as_of))
        assert field_problems(doc) == []
        return doc.field("hti1/27"), doc.field("hti1/29")

    before = local(EARLY)
    assert [f.value for f in before] == [None, None]
    assert [f.owner for f in before] == ["deployer (hospital)"] * 2

    _window(ws, release, t0 + timedelta(days=1), auroc=0.81, female=0.78)
    _window(ws, release, t0 + timedelta(days=2), auroc=0.74, female=0.69)

    assert [f.value for f in local(EARLY)] == [None, None]  # windows after as_of are not read
    validity, fairness = local(t0 + timedelta(days=1, hours=1))
    assert validity.value["auroc"] == 0.81 and validity.value["n_outcomes"] == 600
    assert fairness.value["subgroup_auroc"] == {"sex=Female": 0.78, "sex=Male": 0.81}
    assert validity.pointers[0].kind == "monitoring" and "ending" in validity.pointers[0].ref
    validity, fairness = local(t0 + timedelta(days=3))
    assert validity.value["auroc"] == 0.74
    assert round(fairness.value["gaps"]["sex"], 6) == 0.05
