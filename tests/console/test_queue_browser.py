"""The escalation queue in headless Chromium: three scorings of one encounter are one case,
the queue shows the total, sorts by risk, and "Next case" walks it in that order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from console_world import CLINICIAN, NOW, PASSWORD, LiveConsole

from clinical_mlops.clock import FixedClock
from clinical_mlops.governance.queue import case_queue
from clinical_mlops.ledger import Ledger
from clinical_mlops.serving.predictor import PredictionRequest, Predictor

pytestmark = pytest.mark.slow

SITE = "demo-icu-north"


@pytest.fixture(scope="module")
def scored(world: dict[str, Any]) -> dict[str, Any]:
    """The world with one escalated patient's encounter scored three times (30 min apart)."""
    ws = world["ws"]
    with Ledger.open(ws) as led:
        first = led.read(world["escalated"][0]).payload or {}
    patient = "MRN-" + str(first["request_id"]).removeprefix("req-")
    clock = FixedClock(NOW - timedelta(minutes=50))
    seqs = []
    with Predictor.open(ws, site=SITE, clock=clock) as p:
        for _ in range(3):
            clock.advance(timedelta(minutes=10))
            [result] = p.predict_many(
                [
                    PredictionRequest(
                        subject_id=patient,
                        purpose="direct_care",
                        setting="icu",
                        features=first["inputs"],
                        encounter="ENC-WARD-7",
                    )
                ],
                requester="system:ehr-interface",
            )
            assert result.escalated, result
            seqs.append(result.audit_seq)
    return world | {"encounter_seqs": seqs}


@pytest.fixture(scope="module")
def live(scored: dict[str, Any]) -> Iterator[str]:
    with LiveConsole(scored["ws"], clock=FixedClock(NOW)) as server:
        yield server.url


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, base: str, name: str) -> None:
    page.goto(f"{base}/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()


def _percent(text: str) -> float:
    """Return the number of a risk as the queue shows it ("25.0 %", "<0.1 %", ">99.9 %")."""
    found = re.search(r"[\d.]+", text)
    assert found, text
    return float(found.group(0))


def _by_risk(ws: Any) -> tuple[list[Any], int]:
    """Return the open cases highest risk first (ties: the longest waiting) and their total."""
    with Ledger.open(ws) as led:
        found = case_queue(led, now=NOW, limit=1000)
    ordered = sorted(
        found.cases, key=lambda c: (-(c.probability or 0.0), c.escalation_seq, c.prediction_seq)
    )
    return ordered, found.total


def _rows(page: Any) -> list[tuple[int, float, int]]:
    """Return (case seq, risk shown, predictions) of every row of the queue, top to bottom."""
    out = []
    rows = page.locator("tr.case-row")
    for k in range(rows.count()):
        row = rows.nth(k)
        cells = row.locator("td")
        out.append(
            (
                int(row.get_attribute("data-case")),
                _percent(row.locator("td.risk-cell").inner_text()),
                int(cells.nth(3).inner_text()),
            )
        )
    return out


def test_one_encounter_is_one_case_the_total_is_shown_and_the_queue_sorts_by_risk(
    page: Any, live: str, scored: dict[str, Any]
) -> None:
    seqs = scored["encounter_seqs"]
    expected, total = _by_risk(scored["ws"])
    sign_in(page, live, CLINICIAN)
    # newest first, then the clinician picks the order by risk
    page.get_by_role("navigation", name="Order of the queue").get_by_role(
        "link", name="Newest"
    ).click()
    page.wait_for_url("**/console/queue?*sort=newest*")
    newest = _rows(page)
    page.get_by_role("navigation", name="Order of the queue").get_by_role(
        "link", name="Highest risk"
    ).click()
    page.wait_for_url("**/console/queue?*sort=risk*")
    rows = _rows(page)

    # three scorings of one encounter: one row, holding three predictions
    mine = [r for r in rows if r[0] in seqs]
    assert len(mine) == 1 and mine[0][0] == seqs[0] and mine[0][2] == 3
    assert all(r[0] not in seqs[1:] for r in rows)
    # the total
    count = page.locator("p.count").inner_text()
    assert count.startswith(f"{total} cases") and total == len(rows) > 5
    # by risk: highest first, several risks, and not the order they were scored in
    risks = [r[1] for r in rows]
    assert risks == sorted(risks, reverse=True) and len(set(risks)) >= 3
    assert [r[0] for r in rows] == [c.prediction_seq for c in expected]
    assert [r[0] for r in newest] != [r[0] for r in rows]
    assert sorted(r[0] for r in newest) == sorted(r[0] for r in rows)


def test_next_case_opens_the_highest_risk_case_and_continues_after_a_decision(
    page: Any, live: str, scored: dict[str, Any]
) -> None:
    order = [c.prediction_seq for c in _by_risk(scored["ws"])[0] if not c.sent_to_senior_review]
    sign_in(page, live, CLINICIAN)
    page.get_by_role("link", name="Next case").first.click()
    page.wait_for_url(f"**/console/cases/{order[0]}*")
    page.get_by_role("button", name="Accept the estimate").click()
    page.wait_for_url(f"**/console/cases/{order[0]}?recorded=*")
    assert page.get_by_role("status").filter(has_text="Recorded: accept").is_visible()
    page.get_by_role("link", name="Next case").click()
    page.wait_for_url(f"**/console/cases/{order[1]}*")
    assert page.get_by_role("heading", name=re.compile(rf"^Case {order[1]}\b")).is_visible()
