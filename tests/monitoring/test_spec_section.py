"""The task spec's monitoring section: defaults, per-task values, validation, hash stability."""

from __future__ import annotations

import pytest
import yaml

from clinical_mlops.errors import TaskSpecInvalid
from clinical_mlops.monitoring.rules import DEFAULT_RULES, RULE_KINDS, WORKLOAD_RULES, rule_table
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import MONITORING_RULES, MonitoringSpec, task_from_mapping


def _icu_mapping() -> dict:
    from importlib import resources

    text = resources.files("clinical_mlops.tasks").joinpath("icu_mortality_48h.yaml").read_text()
    return yaml.safe_load(text)


def test_icu_spec_spells_out_the_defaults_and_keeps_its_hash() -> None:
    icu = load_task("icu_mortality_48h")
    assert icu.monitoring == MonitoringSpec()
    without = _icu_mapping()
    del without["monitoring"]
    # A spec that spells out the defaults hashes like one that omits them: snapshots stay valid.
    assert task_from_mapping(without, source="x").spec_hash() == icu.spec_hash()
    changed = _icu_mapping()
    changed["monitoring"]["input_lookback_hours"] = 12
    assert task_from_mapping(changed, source="x").spec_hash() != icu.spec_hash()


def test_readmission_watches_a_slower_ward_over_longer_look_backs() -> None:
    readm = load_task("readmission_30d").monitoring
    icu = load_task("icu_mortality_48h").monitoring
    assert readm.input_lookback_hours > icu.input_lookback_hours
    assert readm.outcome_max_age_days > icu.outcome_max_age_days
    assert load_task("readmission_30d").thresholds.subgroup_auroc_gap == 0.05


def test_every_rule_has_a_kind_severity_owner_and_action() -> None:
    # the workload rules' limits are read from the spec when it declares them
    assert set(DEFAULT_RULES) == set(MONITORING_RULES) | set(WORKLOAD_RULES)
    assert {RULE_KINDS[r] for r in WORKLOAD_RULES} == {"workflow"}
    assert DEFAULT_RULES["auroc_degradation"].action == "suspend"
    assert {r.action for r in DEFAULT_RULES.values()} <= {"open_review", "escalate", "suspend"}


def test_rule_overrides_and_bad_sections_are_named() -> None:
    data = _icu_mapping()
    data["monitoring"]["rules"] = {
        "calibration": {"severity": "critical", "owner_role": "reviewer", "action": "suspend"}
    }
    spec = task_from_mapping(data, source="x")
    assert rule_table(spec)["calibration"].action == "suspend"
    assert rule_table(spec)["input_psi"] == DEFAULT_RULES["input_psi"]
    data["monitoring"]["rules"] = {
        "retrain": {"severity": "info", "owner_role": "reviewer", "action": "open_review"}
    }
    with pytest.raises(TaskSpecInvalid, match="unknown rule"):
        task_from_mapping(data, source="x")
    data = _icu_mapping()
    data["monitoring"]["rules"] = {
        "calibration": {"severity": "info", "owner_role": "reviewer", "action": "retrain"}
    }
    with pytest.raises(TaskSpecInvalid, match=r"monitoring\.rules\.calibration\.action"):
        task_from_mapping(data, source="x")
    data = _icu_mapping()
    data["monitoring"]["alert_volume_band"] = [2.0, 0.5]
    with pytest.raises(TaskSpecInvalid, match="alert_volume_band"):
        task_from_mapping(data, source="x")
