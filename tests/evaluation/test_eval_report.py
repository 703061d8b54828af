"""The validation report and the model card: schema, serialisation, rendering, determinism."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clinical_mlops.evaluation import SCHEMA, evaluate, write_model_card, write_report
from clinical_mlops.evaluation.fairness import FAIRNESS_METRICS
from clinical_mlops.evaluation.metrics import auroc
from clinical_mlops.evaluation.model_card import CARD_APPENDIX, CARD_SECTIONS
from conftest import LABS, make_input

TEST_KEYS = {
    "auroc", "auroc_ci", "sensitivity", "specificity", "ppv", "npv", "brier", "ece",
    "ece_binning", "calibration_slope", "calibration_intercept", "conformal_coverage",
    "conformal_coverage_by_class", "set_types", "n", "prevalence", "threshold",
}  # fmt: skip
TOP_KEYS = {
    "schema", "test", "subgroups", "fairness", "fairness_alerts", "baseline", "decision_curve",
    "workload", "robustness", "error_examples", "calibration", "conformal", "cv",
    "global_importance", "cohort", "limitations", "published_comparison",
}  # fmt: skip


def test_report_has_the_contracted_keys(report):
    assert report["schema"] == SCHEMA == "clinical-mlops/validation-report/v1"
    assert set(report) >= TOP_KEYS
    assert set(report["test"]) >= TEST_KEYS
    assert report["test"]["threshold"] == 0.40
    assert "10 equal-width bins" in report["test"]["ece_binning"]
    for row in report["subgroups"].values():
        assert {
            "auroc",
            "auroc_ci",
            "sensitivity",
            "specificity",
            "ppv",
            "brier",
            "ece",
            "n",
        } <= set(row)
    assert "sex=Female" in report["subgroups"] and "age_group=18-44" in report["subgroups"]
    for name in FAIRNESS_METRICS:
        m = report["fairness"][name]
        assert {"value", "ci", "attribute", "by_attribute"} <= set(m)
        assert set(m["by_attribute"]) == {"sex", "age_group", "ethnicity"}
    for key in ("name", "auroc", "auroc_ci", "source", "auroc_difference"):
        assert key in report["baseline"]
    assert set(report["robustness"]["masked"]) == set(LABS) | {
        "gcs",
        "map",
        "heart_rate",
        "resp_rate",
        "temperature",
        "spo2",
    }


def test_report_numbers_agree_with_the_inputs(report, evaluation_input):
    inp = evaluation_input
    assert report["test"]["auroc"] == pytest.approx(auroc(inp.y_true, inp.p_cal), abs=1e-12)
    assert report["test"]["n"] == len(inp.y_true)
    assert report["test"]["prevalence"] == pytest.approx(inp.y_true.mean())
    assert report["robustness"]["reference_matches_evaluated_probabilities"] is True
    # Masking a lab nobody measured more often changes at least one probability.
    assert report["robustness"]["masked"]["lactate"]["mean_abs_probability_change"] > 0
    imp = report["global_importance"]
    assert imp == sorted(imp, key=lambda r: -r["mean_abs_contribution"])
    assert "bias" not in {r["feature"] for r in imp}
    assert report["cohort"]["cohort_flow"][0]["step"] == "ICU stays in source"
    published = {r["metric"]: r for r in report["published_comparison"]["rows"]}
    assert published["test auroc"]["published"] == 0.847


def test_report_is_strict_json(report):
    text = json.dumps(report, allow_nan=False)  # raises on NaN / inf
    assert json.loads(text) == report


def test_limitations_are_honest(report):
    text = " ".join(report["limitations"])
    assert "temporal" in text
    assert "SOFA" in text and "PaO2/FiO2" in text
    assert "discharge" in text  # the diagnosis-code caveat from the spec
    assert "UNKNOWN" in text


def test_error_examples_are_anonymised(report, evaluation_input):
    text = json.dumps(report["error_examples"])
    for stay_id in evaluation_input.test_frame["stay_id"]:
        assert str(stay_id) not in text
    fn = report["error_examples"]["false_negatives"]
    fp = report["error_examples"]["false_positives"]
    assert len(fn) == len(fp) == 3
    words = evaluation_input.spec.words()
    assert all(e["risk"] < 0.4 and e["outcome"] == words.event for e in fn)
    assert all(e["outcome"] == words.non_event for e in fp)
    assert all(e["risk"] >= 0.4 for e in fp)
    assert all(re.fullmatch(r"\d+-\d+ years", e["values"]["age"]) for e in fn + fp)
    assert not re.search(r"Age \d+(\.\d+)? years", text)
    assert all(len(e["top_contributions"]) == 3 for e in fn)


def test_same_seed_same_report_and_other_seed_other_cis(report):
    again = evaluate(make_input(), n_boot=200).to_json()
    assert again == report
    other = evaluate(make_input(seed=8), n_boot=200).to_json()
    assert other["test"]["auroc_ci"] != report["test"]["auroc_ci"]


def test_default_thousand_resamples(evaluation_input, report):
    full = evaluate(evaluation_input).to_json()
    assert full["methods"]["n_boot"] == 1000
    assert full["test"]["auroc"] == report["test"]["auroc"]
    lo, hi = full["test"]["auroc_ci"]
    assert lo < full["test"]["auroc"] < hi
    for name in FAIRNESS_METRICS:
        assert full["fairness"][name]["ci"][0] <= full["fairness"][name]["value"]


def test_write_report_json_and_html(tmp_path, report, validation_report, evaluation_input):
    paths = write_report(validation_report, evaluation_input, tmp_path)
    assert set(paths) == {"json", "html"}
    text = paths["json"].read_text(encoding="utf-8")
    assert json.loads(text) == report
    assert text == json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    html = paths["html"].read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 6
    assert not re.search(r"\bnan\b", html, flags=re.IGNORECASE)
    for heading in ("Headline", "Cohort", "Subgroups (Table 2)", "Fairness", "Limitations"):
        assert heading in html
    assert "SOFA-like score" in html and "Vincent" in html
    assert "Fairness alert" in html or "No subgroup AUROC gap" in html


def test_model_card_has_every_section(tmp_path, validation_report, evaluation_input):
    paths = write_model_card(validation_report, evaluation_input, tmp_path)
    assert set(paths) == {"json", "md", "html"}
    card = json.loads(paths["json"].read_text(encoding="utf-8"))
    md = paths["md"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    for key, title in CARD_SECTIONS:
        assert key in card
        assert f"## {title}" in md
        assert f'<section id="{key}">' in html
    for key, title in CARD_APPENDIX:
        if key != "environment":  # the fixture's lineage records no package list
            assert f"### {title}" in md
            assert f'<section id="{key}">' in html
    assert set(card["key_metrics"]) == {
        "usefulness_usability_efficacy", "fairness_equity", "safety_reliability",
    }  # fmt: skip
    for group in card["key_metrics"].values():
        for metric in group:
            assert set(metric) == {
                "name",
                "goal",
                "result",
                "interpretation",
                "test_type",
                "test_data",
            }
    spec = evaluation_input.spec
    for use in spec.non_intended_uses:
        assert use in md
    for feature in spec.approved_features:
        assert feature.justification in md
    tripod = {i["topic"] for i in card["tripod_ai"]}
    assert {"Data sources", "Missing data", "Class imbalance", "Calibration", "Fairness"} <= tripod
    # TRIPOD+AI's numbering, in its order: the outcome is 8a, class imbalance 13, fairness 14
    numbered = {i["topic"]: i["item"] for i in card["tripod_ai"]}
    assert numbered["Outcome definition"] == "8a" and numbered["Predictors"] == "9b"
    assert numbered["Class imbalance"] == "13" and numbered["Fairness"] == "14"
    assert numbered["Poor or missing inputs in deployment"] == "27a"
    order = [int(re.match(r"\d+", i["item"]).group()) for i in card["tripod_ai"]]  # type: ignore[union-attr]
    assert order == sorted(order)
    assert evaluation_input.model_version in md
    assert not re.search(r"\bnan\b", md + html, flags=re.IGNORECASE)


def test_public_surface():
    import clinical_mlops.evaluation as ev

    assert sorted(ev.__all__) == sorted(
        ["SCHEMA", "EvaluationInput", "evaluate", "write_model_card", "write_report"]
    )
    assert callable(ev.evaluate) and np is not None
