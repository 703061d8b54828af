"""Rendering a model card: the registry's status as of a date, cards of earlier layouts,
workload figures a report may carry, and the one display rule for calibrated risks."""

from __future__ import annotations

import html as html_lib
import json
import re
from typing import Any

import pytest

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.model_card import model_card, render_card
from clinical_mlops.evaluation.phrases import risk_percent
from clinical_mlops.evaluation.validation_report import ValidationReport


def text_of(html: str) -> str:
    """The visible text of an HTML page, in reading order."""
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", html.split("<body>", 1)[1]))


@pytest.fixture(scope="module")
def card(validation_report: ValidationReport, evaluation_input: EvaluationInput) -> dict[str, Any]:
    return model_card(validation_report, evaluation_input)


def _as_of() -> dict[str, Any]:
    return {
        "rendered_at": "2026-03-05T14:30:00.000000Z",
        "release": "icu_mortality_48h@1",
        "status": "approved",
        "approvals": [
            {
                "person": "dr.kim",
                "role": "clinical",
                "decision": "approve",
                "why": "clinically sound",
                "time": "2026-03-02T10:00:00.000000Z",
            },
            {
                "person": "cora",
                "role": "compliance",
                "decision": "approve",
                "why": "documentation ok",
                "time": "2026-03-02T11:15:00.000000Z",
            },
        ],
        "acknowledged_risks": [
            {
                "risk": "fairness:age_group:auroc_gap",
                "words": "AUROC gap 0.118 between age groups",
                "actor": "dr.kim",
                "role": "clinical",
                "reason": "older patients are reviewed by the outreach team",
                "at": "2026-03-02T09:45:00.000000Z",
            }
        ],
    }


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_card_rendered_as_of_a_date_shows_status_approvals_and_risks(
    card: dict[str, Any], fmt: str
) -> None:
    text = render_card(card, as_of=_as_of(), fmt=fmt)
    if fmt == "html":
        text = text_of(text)
    assert "Status as of 2026-03-05 14:30 UTC" in text
    assert "approved" in text and "awaiting" not in text.lower()
    assert "approve by dr.kim as clinical, 2026-03-02 10:00 UTC" in text
    assert "approve by cora as compliance, 2026-03-02 11:15 UTC" in text
    assert "fairness:age_group:auroc_gap" in text
    assert "accepted by dr.kim as clinical, 2026-03-02 09:45 UTC" in text
    assert "older patients are reviewed by the outreach team" in text
    # the status comes first; the point of the card still follows within reach
    assert text.index("Status as of") < text.index("Key metrics") < text.index("Appendix")


def test_render_card_refuses_an_unknown_format_naming_it(card: dict[str, Any]) -> None:
    with pytest.raises(ValueInvalid, match=r"format 'pdf': expected one of md, html"):
        render_card(card, as_of=None, fmt="pdf")


def test_cards_written_before_this_layout_still_render(card: dict[str, Any]) -> None:
    old = json.loads(json.dumps(card))
    for key in ("key_results", "workload", "status_and_approvals"):
        old.pop(key)
    old["schema"] = "clinical-mlops/model-card/v1"
    old["release_info"]["stage"] = "validated; awaiting clinical review and approvals"
    md = render_card(old, as_of=_as_of(), fmt="md")
    assert "Status as of 2026-03-05 14:30 UTC" in md
    assert "awaiting" not in md  # the stale stage of an old card is not shown


def test_workload_shows_reviews_and_the_escalation_policy_when_the_report_has_them(
    validation_report: ValidationReport, evaluation_input: EvaluationInput
) -> None:
    workload = validation_report.workload.model_copy(
        update={
            "alerts_per_100_ci": [8.1, 10.6],
            "reviews_per_100": 4.2,
            "reviews_per_100_ci": [3.5, 4.9],
            "deferred_per_100": 1.3,
            "reviews_by_reason": {"near_threshold": 3.0, "out_of_scope": 1.2},
        }
    )
    statement = "Cases within the band 0.30-0.50 are reviewed, at most 5 per 100."
    report = validation_report.model_copy(
        update={"workload": workload, "escalation": {"statement": statement}}
    )
    card = model_card(report, evaluation_input)
    md = render_card(card, as_of=None, fmt="md")
    key = md[md.index("## Key metrics") : md.index("## Workload")]
    assert "| Reviews per 100 patients | 4.2 (95 % CI 3.5–4.9) |" in key
    assert "(95 % CI 8.1–10.6)" in key
    assert statement in key
    workload_part = md[md.index("## Workload") : md.index("## Limitations")]
    assert "near threshold" in workload_part and "1.3" in workload_part
    # and without them (a report from before review budgets), neither row appears
    plain = render_card(model_card(validation_report, evaluation_input), as_of=None, fmt="md")
    assert "Reviews per 100" not in plain and "Escalation policy" not in plain


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (0.0002, "<0.1 %"),
        (0.0, "<0.1 %"),
        (0.0004, "<0.1 %"),
        (0.0012, "0.1 %"),
        (0.123, "12.3 %"),
        (0.9996, ">99.9 %"),
        (1.0, ">99.9 %"),
    ],
)
def test_risk_percent_never_reads_zero_or_certain(p: float, shown: str) -> None:
    assert risk_percent(p) == shown
