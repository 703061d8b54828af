"""The release page lists the risks a release carries out of validation and lets a reviewer or
compliance officer acknowledge each with a reason; a refused form records nothing."""

from __future__ import annotations

import html
import re
from typing import Any

from console_world import (
    COMPLIANCE,
    ENGINEER,
    NOW,
    REVIEWER,
    console_client,
    fingerprint_of,
    form_token,
    sign_in,
)

from clinical_mlops.application import governance as act
from clinical_mlops.clock import FixedClock
from clinical_mlops.governance.board import Governance
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry

AUTHOR = "demo.alex.kim"


def _draft(world: dict[str, Any]) -> str:
    """Register a new draft release (threshold 0.3) of the world's model; return its version."""
    ws = world["ws"]
    with Registry.open(ws, clock=FixedClock(NOW)) as reg, Governance(reg) as gov:
        bundle = build_bundle(
            ws, model_version=world["model_version"], author=AUTHOR, threshold=0.3, clock=reg.clock
        )
        return gov.register(bundle, actor=AUTHOR, why="another threshold").version


def _acknowledged(ws: Any, version: str) -> list[tuple[str, str, str, str]]:
    with Registry.open(ws) as reg, Governance(reg) as gov:
        return [(a.risk, a.actor, a.role, a.reason) for a in gov.risk_acknowledgements(version)]


def _ledger_acks(ws: Any, version: str) -> list[tuple[str, dict[str, Any]]]:
    with Ledger.open(ws) as led:
        found = [
            (led.entry(s).actor, led.read(s).payload)
            for s in range(led.size())
            if led.entry(s).type == "risk_acknowledged"
        ]
    return [(actor, p) for actor, p in found if p["release"] == version]


def test_reviewer_acknowledges_each_risk_on_the_release_page_and_gate_3_then_passes(
    fresh_world: dict[str, Any],
) -> None:
    ws = fresh_world["ws"]
    v = _draft(fresh_world)
    with Registry.open(ws) as reg, Governance(reg) as gov:
        risks = act.release_risks(gov, v)
    assert risks, "the small test model is expected to carry a fairness alert"
    action = f"/console/releases/{v}/risks"

    # an engineer sees the risks but has no form, and may not post one
    engineer = console_client(ws)
    sign_in(engineer, ENGINEER)
    page = engineer.get(f"/console/releases/{v}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert all(r["id"] in text and r["words"] in text for r in risks)
    assert f'action="{action}"' not in page.text
    r = engineer.post(action, data={"risk": risks[0]["id"], "role": "engineering", "reason": "x"})
    assert r.status_code == 403 and "Not available to your role" in r.text

    reviewer = console_client(ws)
    sign_in(reviewer, REVIEWER)

    def post(**data: str) -> Any:
        page = reviewer.get(f"/console/releases/{v}")
        body = {
            "csrf_token": form_token(page.text, action),
            "fingerprint": fingerprint_of(page.text),
        }
        return reviewer.post(action, data=body | data, follow_redirects=False)

    # without a reason, or in a role the reviewer does not hold: refused, nothing recorded
    r = post(risk=risks[0]["id"], role="clinical", reason="   ")
    assert r.status_code == 422 and "reason" in r.text and "say why" in r.text
    r = post(risk=risks[0]["id"], role="compliance", reason="accepted")
    assert r.status_code == 403
    assert _acknowledged(ws, v) == [] and _ledger_acks(ws, v) == []

    # compliance opens the page now, while every risk is still open
    compliance = console_client(ws)
    sign_in(compliance, COMPLIANCE)
    stale = compliance.get(f"/console/releases/{v}").text

    # each open risk has its form; each acknowledgement is recorded and shown
    page = reviewer.get(f"/console/releases/{v}")
    assert len(re.findall(re.escape(f'action="{action}"'), page.text)) == len(risks)
    reason = "Gap stated in the model card; pilot at one site"
    for risk in risks:
        r = post(risk=risk["id"], role="clinical", reason=reason)
        assert r.status_code == 303, r.text
        assert r.headers["location"].endswith(f"/releases/{v}?recorded=acknowledgement")
    assert _acknowledged(ws, v) == [(k["id"], REVIEWER, "clinical", reason) for k in risks]
    assert [(actor, p["risk"], p["role"], p["reason"]) for actor, p in _ledger_acks(ws, v)] == [
        (REVIEWER, k["id"], "clinical", reason) for k in risks
    ]
    page = reviewer.get(f"/console/releases/{v}?recorded=acknowledgement")
    text = html.unescape(page.text)
    assert "Your acknowledgement was recorded" in text
    assert text.count(f"by {REVIEWER} as clinical") == len(risks) and reason in text
    assert f'action="{action}"' not in page.text  # nothing left to acknowledge

    # compliance submits the form loaded before: refused, nothing recorded twice
    r = compliance.post(
        action,
        data={
            "csrf_token": form_token(stale, action),
            "fingerprint": fingerprint_of(stale),
            "risk": risks[0]["id"],
            "role": "compliance",
            "reason": "also accepted",
        },
    )
    assert r.status_code == 409 and "changed since the page was loaded" in r.text
    assert _acknowledged(ws, v) == [(k["id"], REVIEWER, "clinical", reason) for k in risks]
    assert len(_ledger_acks(ws, v)) == len(risks)

    # the gates, run again, pass gate 3
    with Registry.open(ws, clock=FixedClock(NOW)) as reg, Governance(reg) as gov:
        gates = act.validate(gov, v, actor=AUTHOR)
    assert gates["evidence"].passed, gates["evidence"].failures
