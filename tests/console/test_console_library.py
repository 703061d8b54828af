"""The library behind the console: the escalation queue, one decision per case, the
ledger search, the release dossier and its fingerprint, console users, the plot."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from typing import Any

import pytest
from console_world import COMPLIANCE, NOW, REVIEWER

from clinical_mlops.application.dossier import (
    release_dossier,
    release_fingerprint,
    service_status,
)
from clinical_mlops.application.governance import approve, decide_case, reject
from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.console.plots import series_svg
from clinical_mlops.console.users import UserDirectory, hash_password, verify_password
from clinical_mlops.errors import (
    CaseAlreadyDecided,
    ConsoleUserInvalid,
    GovernanceError,
    InputInvalid,
    NotAuthenticated,
    OverrideInvalid,
    PredictionNotFound,
    ReleaseChanged,
)
from clinical_mlops.governance.audit_search import parse_bound, search_ledger
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.queue import (
    ESCALATION_REASONS,
    case,
    escalated_cases,
    identifier_of,
)
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore
from clinical_mlops.monitoring.escalation import MONITOR_ACTOR, escalate_cases
from clinical_mlops.monitoring.records import read_ledger_records
from clinical_mlops.registry.registry import Registry
from clinical_mlops.vocabulary import REVIEW_REASONS
from identities import console
from registry_helpers import REVIEW_UNSURE


@pytest.fixture(scope="module")
def led(world: dict[str, Any]) -> Any:
    with Ledger.open(world["ws"], clock=FixedClock(NOW)) as ledger:
        yield ledger


def _all(led: Ledger) -> list[Any]:
    return [led.read(s) for s in range(led.size())]


def test_queue_lists_every_escalation_with_its_reasons_and_age(
    led: Ledger, world: dict[str, Any]
) -> None:
    cases = escalated_cases(led, now=NOW, state="all")
    entries = _all(led)
    escalations = [e for e in entries if e.entry.type == "escalation"]
    assert len(cases) == len(escalations) == len(world["escalated"])
    assert sorted(c.prediction_seq for c in cases) == sorted(world["escalated"])
    assert [c.escalation_seq for c in cases] == sorted(
        (c.escalation_seq for c in cases), reverse=True
    )
    for c in cases:
        inference = entries[c.prediction_seq]
        assert inference.entry.type == "inference"
        assert inference.payload["request_id"] == entries[c.escalation_seq].payload["request_id"]
        flags = inference.payload["flags"]
        assert c.reasons == [REVIEW_REASONS[f] for f in REVIEW_UNSURE.review_on if f in flags]
        assert c.age_seconds == (NOW - _t(entries[c.escalation_seq].entry.time)).total_seconds()
        assert c.pseudonym == inference.entry.subject
        assert c.contributions == inference.payload["explanation_shown"]
    # The four batches were scored 1, 2.5, 4 and 5.5 hours after T0: NOW is T0 + 7 h.
    assert {round(c.age_seconds / 3600, 1) for c in cases} <= {6.0, 4.5, 3.0, 1.5}


def _t(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_monitoring_escalations_join_the_queue(fresh_world: dict[str, Any]) -> None:
    """Cases routed by a monitoring alert (``monitoring.escalation``) are queued too; a case
    routed by both the Predictor and monitoring is one case with both reasons."""
    ws, v1 = fresh_world["ws"], fresh_world["v1"]
    clock = FixedClock(NOW)
    with Ledger.open(ws, clock=clock) as ledger:
        records = read_ledger_records(ledger)["inferences"][v1]
        before = {c.prediction_seq: c for c in escalated_cases(ledger, now=NOW, state="all")}
    with AlertStore.open(ws, clock=clock) as store:
        alert, created = store.raise_alert(
            AlertSignal(
                rule="ece_rise",
                kind="concept",
                severity="critical",
                owner_role="reviewer",
                action="escalate",
                at=utc_iso(NOW),
                summary="AUROC fell 7 % below the validated value",
                quantity="auroc_drop",
                value=0.07,
                threshold=0.05,
                release=v1,
                model_version=fresh_world["model_version"],
            ),
            actor=MONITOR_ACTOR,
        )
        assert created and alert is not None
        done = escalate_cases(
            store, alert, records, actor=MONITOR_ACTOR, after_seq=int(records.seq[-6])
        )
    routed = [int(s) for s in records.seq[-5:]]
    assert done.detail["cases"] == 5
    with Ledger.open(ws, clock=clock) as ledger:
        after = {c.prediction_seq: c for c in escalated_cases(ledger, now=NOW, state="all")}
        by_monitor = escalated_cases(ledger, now=NOW, state="all", reason="monitoring_alert")
        one = case(ledger, routed[-1], now=NOW)
    assert set(after) == set(before) | set(routed)
    assert sorted(c.prediction_seq for c in by_monitor) == sorted(routed)
    for seq in routed:
        item = after[seq]
        assert f"monitoring alert {alert.id} (ece_rise)" in item.reasons[-1]
        assert "monitoring_alert" in item.reason_flags
        if seq in before:  # escalated at serving too: both reasons, waiting since the first
            assert item.reasons[:-1] == before[seq].reasons
            assert item.escalated_at == before[seq].escalated_at
        else:
            assert item.escalated_at == utc_iso(NOW)
    assert one.reasons == after[routed[-1]].reasons


def test_queue_filters(led: Ledger, world: dict[str, Any]) -> None:
    every = escalated_cases(led, now=NOW, state="all")
    for flag in ESCALATION_REASONS:
        kept = escalated_cases(led, now=NOW, state="all", reason=flag)
        assert kept == [c for c in every if flag in c.reason_flags]
    old = escalated_cases(led, now=NOW, state="all", min_age_hours=4)
    assert old == [c for c in every if c.age_seconds >= 4 * 3600] and 0 < len(old) < len(every)
    assert escalated_cases(led, now=NOW, state="all", site="elsewhere") == []
    assert escalated_cases(led, now=NOW, state="all", release=world["v1"]) == every
    assert escalated_cases(led, now=NOW, state="all", release=world["model_version"]) == every
    assert len(escalated_cases(led, now=NOW, state="all", limit=3)) == 3
    with pytest.raises(ValueError, match="unknown escalation reason"):
        escalated_cases(led, now=NOW, reason="bored")


def test_one_decision_per_case_nothing_recorded_twice(led: Ledger, world: dict[str, Any]) -> None:
    seq = world["escalated"][1]
    assert case(led, seq, now=NOW).state == "open"
    sent = decide_case(led, seq, action="escalate", actor="user:dr.x", comment="senior please")
    with pytest.raises(CaseAlreadyDecided, match="already sent to senior review"):
        decide_case(led, seq, action="escalate", actor="user:dr.y")
    made = decide_case(
        led, seq, action="override", actor="user:dr.x", reason_code="goals-of-care", comment=" "
    )
    size = led.size()
    for action in ("accept", "override"):
        with pytest.raises(
            CaseAlreadyDecided, match="already decided: override by user:dr.x"
        ) as info:
            decide_case(led, seq, action=action, actor="user:dr.y")
        assert info.value.decision["seq"] == made.seq
    assert led.size() == size
    after = case(led, seq, now=NOW)
    assert after.state == "decided" and after.sent_to_senior_review
    assert [d.seq for d in after.decisions] == [sent.seq, made.seq]
    assert made.comment is None  # blank comments are not stored
    stored = led.read(made.seq).payload
    assert stored["reason"] == "Goals of care or patient preference make it not applicable"
    assert seq not in [c.prediction_seq for c in escalated_cases(led, now=NOW)]
    assert seq in [c.prediction_seq for c in escalated_cases(led, now=NOW, state="decided")]


def test_decisions_are_checked_by_the_override_library(led: Ledger, world: dict[str, Any]) -> None:
    seq = world["escalated"][2]
    size = led.size()
    with pytest.raises(OverrideInvalid, match="action 'ignore' is not declared"):
        decide_case(led, seq, action="ignore", actor="user:dr.x")
    with pytest.raises(OverrideInvalid, match="reason code 'tired'"):
        decide_case(led, seq, action="override", actor="user:dr.x", reason_code="tired")
    with pytest.raises(PredictionNotFound):
        decide_case(led, world["escalated"][2] + 1, action="accept", actor="user:dr.x")
    assert led.size() == size


def test_a_prediction_not_escalated_is_a_case_without_reasons(
    led: Ledger, world: dict[str, Any]
) -> None:
    if not world["not_escalated"]:
        pytest.fail("the world should hold at least one prediction that was not escalated")
    c = case(led, world["not_escalated"][0], now=NOW)
    assert c.reasons == [] and c.escalation_seq == -1 and c.state == "open"


def test_identifier_only_through_the_vault(led: Ledger, world: dict[str, Any]) -> None:
    c = case(led, world["escalated"][0], now=NOW)
    mrn = identifier_of(led, c.pseudonym)
    assert mrn is not None and mrn.startswith("MRN-")
    assert led.vault.pseudonym_for(mrn, create=False) == c.pseudonym
    assert identifier_of(led, "psn_" + "0" * 32) is None


def _brute(led: Ledger, keep: Any) -> list[int]:
    return [v.entry.seq for v in reversed(_all(led)) if keep(v)]


def test_search_agrees_with_a_full_scan(led: Ledger, world: dict[str, Any]) -> None:
    n = led.size()
    hits = search_ledger(led, types=["inference"], limit=n)
    assert [h.seq for h in hits.hits] == _brute(led, lambda v: v.entry.type == "inference")
    subject = case(led, world["escalated"][0], now=NOW).pseudonym
    hits = search_ledger(led, subject=subject, limit=n)
    assert [h.seq for h in hits.hits] == _brute(led, lambda v: v.entry.subject == subject)
    hits = search_ledger(led, model_version=world["v2"], limit=n)
    expected = _brute(
        led,
        lambda v: (
            world["v2"]
            in ((v.payload or {}).get("model_version"), (v.payload or {}).get("release"))
        ),
    )
    assert [h.seq for h in hits.hits] == expected and expected
    since = parse_bound("2026-03-02T13:00", where="since")
    until = parse_bound("2026-03-02T14:00", where="until", end=True)
    hits = search_ledger(led, since=since, until=until, limit=n)
    assert [h.seq for h in hits.hits] == _brute(
        led, lambda v: "2026-03-02T13:00" <= v.entry.time < "2026-03-02T14:00"
    )
    assert hits.hits and all(h.time.startswith("2026-03-02T13") for h in hits.hits)


def test_search_pages_and_summaries(led: Ledger) -> None:
    first = search_ledger(led, limit=10)
    second = search_ledger(led, limit=10, before=first.next_before)
    assert [h.seq for h in first.hits] == list(range(led.size() - 1, led.size() - 11, -1))
    assert second.hits[0].seq == first.hits[-1].seq - 1
    approval = search_ledger(led, types=["approval"], limit=1).hits[0]
    assert {"release", "decision", "role", "why"} <= set(approval.summary)


def test_search_input_errors() -> None:
    assert parse_bound("2026-03-02", where="until", end=True) == "2026-03-03T00:00:00.000000Z"
    assert parse_bound("2026-03-02", where="since") == "2026-03-02T00:00:00.000000Z"
    assert parse_bound("  ", where="since") is None
    with pytest.raises(InputInvalid, match="not an ISO date"):
        parse_bound("yesterday", where="since")
    with pytest.raises(InputInvalid, match="unknown entry type"):
        search_ledger(None, types=["gossip"])  # type: ignore[arg-type]


def test_dossier_shows_the_report_and_the_release_notes(world: dict[str, Any]) -> None:
    with Registry.open(world["ws"]) as reg, Governance(reg) as gov:
        d = release_dossier(gov, world["v2"])
        report = reg.bundle(world["v2"]).read_json("report.json")
    v = d["validation"]
    assert v["auroc"] == report["test"]["auroc"] and v["auroc_ci"] == report["test"]["auroc_ci"]
    assert v["ece"] == report["test"]["ece"]
    assert v["auroc_gain"] == report["baseline"]["auroc_difference"]["value"]
    assert v["alerts_per_100"] == report["workload"]["alerts_per_100"]
    assert d["changes"]["against"] == world["v1"]
    assert d["changes"]["change_class"] == "clinical-impacting"
    assert any(
        n.startswith("Operating threshold moved 0.40 -> 0.35") for n in d["changes"]["notes"]
    )
    assert d["pending_decision"] and d["active"] == world["v1"]
    assert set(d["gates"]) == {"schema_contract", "metrics", "evidence"}


def test_fingerprint_guards_decisions_and_refusals_are_audited(fresh_world: dict[str, Any]) -> None:
    ws, v2 = fresh_world["ws"], fresh_world["v2"]
    with Registry.open(ws, clock=FixedClock(NOW)) as reg, Governance(reg) as gov:
        before = release_fingerprint(gov, v2)
        assert release_fingerprint(gov, v2) == before  # stable while nothing changes
        approve(
            gov,
            v2,
            fingerprint=before,
            person=COMPLIANCE,
            role="compliance",
            why="evidence read",
            identity=console(COMPLIANCE),
        )
        after = release_fingerprint(gov, v2)
        assert after != before
        with pytest.raises(ReleaseChanged, match="changed since the page was loaded"):
            approve(
                gov,
                v2,
                fingerprint=before,
                person=REVIEWER,
                role="clinical",
                why="ok",
                identity=console(REVIEWER),
            )
        with pytest.raises(GovernanceError, match="a comment saying why is required"):
            reject(
                gov,
                v2,
                fingerprint=after,
                person=REVIEWER,
                role="clinical",
                why="",
                identity=console(REVIEWER),
            )
        assert [a.person for a in gov.approvals(v2)] == [COMPLIANCE]
        # A change elsewhere in the task (the rollout) also changes the fingerprint.
        gov.set_rollout(
            world_v1 := fresh_world["v1"],
            site="ward-7",
            mode="full",
            actor=REVIEWER,
            identity=console(REVIEWER),
            why="x",
        )
        assert release_fingerprint(gov, v2) != after
        assert world_v1 in {r["version"] for t in service_status(gov) for r in t["releases"]}
    with Ledger.open(ws) as led:
        refused = [v.payload for v in _all(led) if v.entry.type == "governance_refused"]
    assert [r["rule"] for r in refused][-2:] == ["ReleaseChanged", "GovernanceError"]


def test_users_store_only_scrypt_hashes(tmp_path: Any) -> None:
    from clinical_mlops.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    users = UserDirectory.open(ws)
    user = users.add("dr.b", roles=["clinician", "reviewer"], password="twelve chars!!")
    assert user.actor == "user:dr.b" and user.governance_roles == ["clinical"]
    raw = users.path.read_text()
    assert "twelve chars!!" not in raw
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    stored = json.loads(raw)["users"]["dr.b"]["password"]
    scheme, n, r, p, salt, digest = stored.split("$")
    expected = hashlib.scrypt(
        b"twelve chars!!", salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    assert scheme == "scrypt" and base64.b64decode(digest) == expected
    assert users.authenticate("dr.b", "twelve chars!!").roles == ("clinician", "reviewer")
    for name, password in (("dr.b", "twelve chars!?"), ("nobody", "twelve chars!!")):
        with pytest.raises(NotAuthenticated, match="user name or password is not correct"):
            users.authenticate(name, password)
    for kwargs, words in (
        ({"roles": ["clinician"], "password": "short"}, "shorter than 12"),
        ({"roles": ["surgeon"], "password": "long enough pw"}, "surgeon"),
        ({"roles": ["system"], "password": "long enough pw"}, "API keys"),
        ({"roles": [], "password": "long enough pw"}, "at least one"),
    ):
        with pytest.raises(ConsoleUserInvalid, match=words):
            users.add("dr.c", **kwargs)
    with pytest.raises(ConsoleUserInvalid, match="lower-case"):
        users.add("Dr C", roles=["clinician"], password="long enough pw")
    users.remove("dr.b")
    assert users.list() == []


def test_password_hash_round_trip() -> None:
    stored = hash_password("correct horse battery")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterz", stored)
    assert not verify_password("x", "not-a-hash")
    assert hash_password("same", salt=b"0" * 16) == hash_password("same", salt=b"0" * 16)


def test_plot_draws_every_point_and_escapes_text() -> None:
    points = [{"at": f"2026-03-02T1{i}:00:00Z", "value": 0.1 * i} for i in range(5)]
    points.append({"at": "2026-03-02T16:00:00Z", "value": None})
    svg = str(series_svg(points, title="<psi> & co", threshold=0.2, marker="2026-03-02T13:00:00Z"))
    assert svg.count('class="dot"') == 5
    assert "&lt;psi&gt; &amp; co" in svg and "<psi>" not in svg
    assert 'class="threshold"' in svg and "alert opened" in svg
    assert "No values" in str(series_svg([], title="t"))


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_stylesheet_colours_meet_wcag_aa_contrast() -> None:
    """Every text colour of the stylesheet on its background: at least 4.5:1 (WCAG 2.1 AA)."""
    import re
    from pathlib import Path

    import clinical_mlops.console as console

    css = (Path(console.__file__).parent / "static" / "console.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [
        ("ink", "page"),
        ("ink", "card"),
        ("muted", "page"),
        ("muted", "card"),
        ("muted", "soft"),
        ("accent", "card"),
        ("accent-dark", "info-bg"),
        ("ok-ink", "ok-bg"),
        ("warn-ink", "warn-bg"),
        ("danger-ink", "danger-bg"),
        ("info-ink", "info-bg"),
        ("neutral-ink", "neutral-bg"),
        ("danger-ink", "card"),
    ]
    for fg, bg in pairs:
        assert _contrast(var[fg], var[bg]) >= 4.5, (fg, bg, round(_contrast(var[fg], var[bg]), 2))
    for bg in ("brand", "accent", "accent-dark", "danger"):  # white text on buttons and header
        assert _contrast("#ffffff", var[bg]) >= 4.5, bg
    # Focus indicators (non-text contrast, 3:1): a dark ring on the pages, amber on the header.
    assert _contrast(var["focus-ring"], var["page"]) >= 3
    assert _contrast(var["focus-ring"], var["card"]) >= 3
    assert _contrast(var["focus"], var["brand"]) >= 3
