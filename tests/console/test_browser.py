"""End to end in headless Chromium: the console served by uvicorn, driven by Playwright.

The must-show scenarios of the console: a clinician overrides an escalated case in
at most two clicks from the queue and the ledger holds the override with the
explanation shown; a reviewer approves a release; a clinician cannot reach the
approval or suspension pages; the audit page's verify button reports OK, and
FAILED on a tampered copy of the ledger. Screenshots of the main pages are saved
(``$CLINICAL_MLOPS_SCREENSHOTS=docs/images`` refreshes the documentation's).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_world import (
    AUDITOR,
    CLINICIAN,
    COMPLIANCE,
    ENGINEER,
    NOW,
    PASSWORD,
    REVIEWER,
    LiveConsole,
    save_screen,
    screenshot_dir,
)

from clinical_mlops.clock import FixedClock
from clinical_mlops.governance.board import Governance
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(world: dict[str, Any]) -> Iterator[str]:
    with LiveConsole(world["ws"], clock=FixedClock(NOW)) as server:
        yield server.url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


class Clicks:
    """Counts the clicks a scenario needs (the must-show bound is on this count)."""

    def __init__(self, page: Any):
        self.page = page
        self.n = 0

    def click(self, locator: Any) -> None:
        self.n += 1
        locator.click()


def sign_in(page: Any, base: str, name: str) -> None:
    page.goto(f"{base}/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()


def test_clinician_overrides_an_escalated_case_in_two_clicks(
    page: Any, live: str, world: dict[str, Any], shots: Path
) -> None:
    sign_in(page, live, CLINICIAN)
    assert page.url.endswith("/console/queue")
    assert page.get_by_role("heading", name="Escalation queue").is_visible()
    save_screen(page, shots, "queue")
    clicks = Clicks(page)
    first = page.locator("a.case-link").first
    seq = int(first.get_attribute("href").rsplit("/", 1)[1])
    assert seq in world["escalated"]
    clicks.click(first)
    page.wait_for_url(f"**/console/cases/{seq}")
    assert page.get_by_text("Why this case is here").is_visible()
    assert page.get_by_role("link", name=f"Model card of {world['v1']}").is_visible()
    save_screen(page, shots, "case")
    clicks.click(
        page.get_by_role(
            "button", name="Override: Clinical assessment of the patient differs from the estimate"
        )
    )
    page.wait_for_url(f"**/console/cases/{seq}?recorded=*")
    assert page.get_by_role("status").filter(has_text="Recorded: override").is_visible()
    assert clicks.n <= 2

    with Ledger.open(world["ws"]) as led:
        inference = led.read(seq)
        overrides = [
            led.read(s)
            for s in range(seq + 1, led.size())
            if led.entry(s).type == "override"
            and (led.read(s).payload or {}).get("prediction_seq") == seq
        ]
    assert len(overrides) == 1
    entry = overrides[0]
    assert entry.entry.actor == f"user:{CLINICIAN}"
    assert entry.entry.subject == inference.entry.subject
    p = entry.payload
    assert p["action"] == "override"
    assert p["reason_code"] == "clinical-judgement"
    assert p["source"] == "console"
    assert p["model_version"] == inference.payload["model_version"]
    assert p["explanation_shown"] == inference.payload["explanation_shown"]
    assert p["probability_shown"] == inference.payload["probability"]


def test_reviewer_approves_a_release(
    page: Any, live: str, world: dict[str, Any], shots: Path
) -> None:
    sign_in(page, live, REVIEWER)
    page.get_by_role("link", name=world["v2"]).first.click()
    page.wait_for_url(f"**/console/releases/{world['v2']}")
    assert page.get_by_text("Operating threshold moved 0.40 -> 0.35").is_visible()
    save_screen(page, shots, "release")
    page.get_by_label("Comment (required").fill("Validation evidence and release notes read.")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url("**?recorded=approve")
    assert page.get_by_role("status").filter(has_text="was recorded").is_visible()
    with Registry.open(world["ws"]) as reg, Governance(reg) as gov:
        decisions = [a.to_json() for a in gov.approvals(world["v2"])]
    assert [(d["person"], d["role"], d["decision"]) for d in decisions] == [
        (REVIEWER, "clinical", "approve")
    ]
    assert decisions[0]["why"] == "Validation evidence and release notes read."


def test_clinician_cannot_reach_approval_or_suspend_pages(
    page: Any, live: str, world: dict[str, Any]
) -> None:
    sign_in(page, live, CLINICIAN)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Escalation queue").is_visible()
    assert nav.get_by_role("link", name="Releases").count() == 0
    for path in (
        f"/console/releases/{world['v2']}",
        "/console/releases",
        f"/console/models/{world['v1']}/suspend",
        f"/console/models/{world['v1']}/rollback",
    ):
        response = page.goto(live + path)
        assert response.status == 403, path
        assert page.get_by_role("heading", name="Not available to your role").is_visible()
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.get_by_role("button", name=f"Suspend {world['v1']}").count() == 0
    page.goto(live + "/console/models")
    assert page.get_by_role("link", name="Suspend…").count() == 0


def test_audit_verify_reports_ok_then_failure_on_a_tampered_copy(
    page: Any, live: str, world: dict[str, Any], shots: Path, tmp_path: Path
) -> None:
    sign_in(page, live, AUDITOR)
    page.get_by_role("button", name="Verify the ledger now").click()
    result = page.locator("#verify-result")
    assert result.get_by_text("Verification OK").is_visible()
    save_screen(page, shots, "audit")

    copy = tmp_path / "tampered"
    shutil.copytree(world["root"], copy)
    with sqlite3.connect(copy / "ledger.db") as db:
        db.execute("UPDATE ledger_entries SET actor = 'user:mallory' WHERE seq = 3")
    with LiveConsole(Workspace.open(copy), clock=FixedClock(NOW)) as tampered:
        sign_in(page, tampered.url, AUDITOR)
        page.get_by_role("button", name="Verify the ledger now").click()
        result = page.locator("#verify-result")
        assert result.get_by_text("Verification FAILED").is_visible()
        assert "first bad entry: 3" in result.inner_text()
        save_screen(page, shots, "audit-tampered")


def test_main_pages_are_labelled_keyboard_reachable_and_saved(
    page: Any, live: str, world: dict[str, Any], shots: Path
) -> None:
    pages: list[tuple[str, str | None, str | None]] = [
        (ENGINEER, "/console/alerts", "alerts"),
        (ENGINEER, None, "alert"),
        (COMPLIANCE, "/console/models", "models"),
        (COMPLIANCE, f"/console/reviews/{world['v1']}", "review"),
        (COMPLIANCE, "/console/incidents", None),
    ]
    signed = None
    for user, path, name in pages:
        if user != signed:
            sign_in(page, live, user)
            signed = user
        if path is None:
            page.goto(live + "/console/alerts")
            page.locator("table.data a").first.click()
            page.wait_for_url("**/console/alerts/alt-*")
            assert page.locator("svg.plot path.line").count() == 1
        else:
            assert page.goto(live + path).status == 200
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))
                 .map(el => el.name || el.id)"""
        )
        assert unlabelled == [], (path, unlabelled)
        if name:
            save_screen(page, shots, name)
    # The incident workflow, by keyboard-free form filling: open, then a communication step.
    page.goto(live + "/console/incidents")
    assert page.get_by_label("Release").input_value() == world["v1"]
    page.get_by_label("Severity").select_option("high")
    page.get_by_label("What happened").fill("Lactate sent in mg/dL by one analyser since 06:00")
    page.get_by_label("Incident lead").fill(COMPLIANCE)
    page.get_by_label("Clinical lead").fill(REVIEWER)
    page.get_by_label("Communications lead").fill(ENGINEER)
    page.get_by_role("button", name="Open the incident").click()
    page.wait_for_url("**/console/incidents/inc-*")
    page.get_by_label("Step", exact=True).select_option("communication")
    page.get_by_label("Detail").fill("ICU consultants and the lab told by the incident lead")
    page.get_by_role("button", name="Record the step").click()
    page.wait_for_load_state()
    steps = page.locator("ol.timeline li")
    assert steps.count() == 2 and "communication" in steps.nth(1).inner_text()
    save_screen(page, shots, "incident")
    # Keyboard: the first Tab reaches the skip link, which is visibly focused.
    page.goto(live + "/console/models")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.textContent.trim(), "
        "getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused == ["Skip to main content", "solid"]
