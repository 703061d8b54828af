"""The model card as people read it: the point first, reference material last, years as
dates, no status that goes stale, and extreme calibrated risks by one display rule."""

from __future__ import annotations

import dataclasses
import html as html_lib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from clinical_mlops.evaluation import evaluate, write_model_card, write_report
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.validation_report import ValidationReport

# A lineage as training records it: the environment lists every installed package.
PACKAGES = {f"package-{i:03d}": f"{i % 7}.{i % 5}.{i % 3}" for i in range(300)}
FIRST_SCREEN_LINES = 40


def text_of(html: str) -> str:
    """The visible text of an HTML page, in reading order."""
    body = html.split("<body>", 1)[1]
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.fixture(scope="module")
def with_packages(evaluation_input: EvaluationInput) -> EvaluationInput:
    lineage = dict(evaluation_input.lineage)
    lineage["environment"] = {"python": "3.11.7", "packages": PACKAGES}
    return dataclasses.replace(evaluation_input, lineage=lineage)


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory,
    validation_report: ValidationReport,
    with_packages: EvaluationInput,
) -> dict[str, str]:
    paths = write_model_card(validation_report, with_packages, tmp_path_factory.mktemp("card"))
    return {fmt: path.read_text(encoding="utf-8") for fmt, path in paths.items()}


def test_key_metrics_come_first_and_reference_material_last_in_markdown(
    written: dict[str, str],
) -> None:
    md = written["md"]
    lines = md.splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    order = ["## Intended use", "## Key metrics", "## Workload", "## Limitations and warnings"]
    assert [h for h in headings if h in order] == order
    key_line = lines.index("## Key metrics")
    assert key_line < FIRST_SCREEN_LINES, f"key metrics start at line {key_line + 1}"
    appendix = lines.index("## Appendix")
    assert headings[-1] == "## Appendix"  # nothing but reference material after it
    first_package = min(i for i, line in enumerate(lines) if "package-000" in line)
    assert key_line < appendix < first_package
    # the first screenful already holds the discrimination, calibration and alert figures
    first_screen = "\n".join(lines[:FIRST_SCREEN_LINES])
    for measure in ("AUROC", "Calibration", "Alerts per 100 patients"):
        assert measure in first_screen
    # the non-intended uses are part of the intended-use section, before key metrics
    not_for = md.index("**Not intended for**")
    assert md.index("## Intended use") < not_for < md.index("## Key metrics")


def test_key_metrics_come_first_and_reference_material_last_in_html(
    written: dict[str, str],
) -> None:
    text = text_of(written["html"])
    places = [
        text.index(title)
        for title in ("Intended use", "Key metrics", "Workload", "Limitations and warnings")
    ]
    assert places == sorted(places)
    assert text.index("Key metrics") < text.index("Appendix") < text.index("package-000")
    # the package list is one paragraph, not hundreds of lines before anything else
    assert len(text[: text.index("Key metrics")].split()) < 400


def test_years_render_as_dates(
    written: dict[str, str], validation_report: ValidationReport, with_packages: EvaluationInput
) -> None:
    split = with_packages.spec.split
    years = [*split.train_years, *split.test_years]
    assert all(y >= 1000 for y in years)
    for fmt in ("md", "html"):
        for y in years:
            assert f"{y:,}" not in written[fmt], (fmt, y)
        assert "–".join(str(y) for y in split.train_years) in written[fmt]
    card = json.loads(written["json"])
    assert card["trust_ingredients"]["development_data"]["train_years"] == list(split.train_years)


def test_report_html_years_are_dates(
    tmp_path: Path, validation_report: ValidationReport, evaluation_input: EvaluationInput
) -> None:
    html = write_report(validation_report, evaluation_input, tmp_path)["html"].read_text("utf-8")
    split = evaluation_input.spec.split
    for y in (*split.train_years, *split.test_years):
        assert f"{y:,}" not in html
    assert "–".join(str(y) for y in split.test_years) in html


def test_signed_card_states_no_status_and_points_to_the_registry(
    written: dict[str, str],
) -> None:
    for fmt, text in written.items():
        assert "awaiting" not in text.lower(), fmt
        assert "clinical-mlops registry card" in text, fmt
        assert "Status as of" not in text, fmt


# -- extreme calibrated risks: one display rule everywhere --------------------------------


@pytest.fixture(scope="module")
def death_at_tiny_risk(evaluation_input: EvaluationInput) -> EvaluationInput:
    """The input with its lowest-risk death estimated at 0.02 %."""
    p = np.array(evaluation_input.p_cal, dtype=float)
    deaths = np.flatnonzero(evaluation_input.y_true == 1)
    p[deaths[np.argmin(p[deaths])]] = 0.0002
    return dataclasses.replace(evaluation_input, p_cal=p)


@pytest.fixture(scope="module")
def tiny_risk_report(death_at_tiny_risk: EvaluationInput) -> ValidationReport:
    return evaluate(death_at_tiny_risk, n_boot=50)


def test_report_shows_a_death_at_tiny_risk_as_below_a_bound(
    tmp_path: Path, tiny_risk_report: ValidationReport, death_at_tiny_risk: EvaluationInput
) -> None:
    missed = tiny_risk_report.error_examples.false_negatives[0]
    assert 0 < missed["risk"] < 0.001  # the report keeps the risk, not a rounded 0
    html = write_report(tiny_risk_report, death_at_tiny_risk, tmp_path)["html"]
    text = text_of(html.read_text(encoding="utf-8"))
    assert "Risk <0.1 %" in text
    assert "Risk 0.000" not in text and "Risk 0.0 %" not in text


def test_card_shows_a_death_at_tiny_risk_as_below_a_bound(
    tmp_path: Path, tiny_risk_report: ValidationReport, death_at_tiny_risk: EvaluationInput
) -> None:
    paths = write_model_card(tiny_risk_report, death_at_tiny_risk, tmp_path)
    for fmt in ("md", "html"):
        text = paths[fmt].read_text(encoding="utf-8")
        text = text_of(text) if fmt == "html" else text
        assert "had an estimated risk of <0.1 %" in text, fmt
        assert not re.search(r"risk of 0(\.0+)? ?%", text), fmt
