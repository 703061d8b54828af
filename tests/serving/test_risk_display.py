"""A calibrated risk reads the same wherever a person sees it: CDS Hooks card, FHIR note,
console, validation report and model card; never 0 for a positive probability, never certain."""

from __future__ import annotations

import pytest

from clinical_mlops.console.formatting import risk
from clinical_mlops.serving import PredictionResult
from clinical_mlops.serving.cds_hooks import card_for
from clinical_mlops.serving.fhir import risk_assessment
from clinical_mlops.tasks import load_task

SPEC = load_task("icu_mortality_48h")
# (calibrated probability, what a person reads)
EXTREMES = [(0.00002, "<0.1 %"), (0.0, "<0.1 %"), (0.2346, "23.5 %"), (0.99997, ">99.9 %")]


def _scored(p: float) -> PredictionResult:
    return PredictionResult(
        status="scored",
        request_id="r",
        audit_seq=11,
        release="icu_mortality_48h@1",
        model_version="m-1",
        probability=p,
        risk="low" if p < 0.4 else "high",
        conformal_set=["no"] if p < 0.4 else ["yes"],
        coverage=0.9,
        completeness=1.0,
    )


@pytest.mark.parametrize(("p", "shown"), EXTREMES)
def test_cds_card_summary_uses_the_one_display_rule(p: float, shown: str) -> None:
    card = card_for(_scored(p), origin="o", model_card_url="http://x/card", outcome_words="Risk")
    assert card is not None
    assert card["summary"].startswith(f"Risk: {shown} (")
    assert "0%" not in card["summary"].split("(")[0]


@pytest.mark.parametrize(("p", "shown"), EXTREMES)
def test_fhir_note_uses_the_one_display_rule(p: float, shown: str) -> None:
    ra = risk_assessment(
        _scored(p),
        spec=SPEC,
        patient_reference="Patient/p1",
        basis=[],
        occurrence="2026-03-02T09:00:00Z",
        scale="unit",
    )
    note = ra["note"][0]["text"]
    assert note.startswith(f"{SPEC.words().risk_words}: {shown} (calibrated probability)")
    assert "0.0000" not in note
    # the machine-readable value is untouched
    assert ra["prediction"][0]["probabilityDecimal"] == pytest.approx(p)


@pytest.mark.parametrize(("p", "shown"), EXTREMES)
def test_console_report_and_card_filters_agree(p: float, shown: str) -> None:
    from clinical_mlops.evaluation.render import fmt_risk  # the report's and card's filter

    assert risk(p) == fmt_risk(p) == shown
