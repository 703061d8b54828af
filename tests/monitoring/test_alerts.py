"""The alert store: de-duplication, acknowledge and resolve, ledger events, time series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clinical_mlops.clock import FixedClock, utc_iso
from clinical_mlops.errors import AlertNotFound, AlertTransitionInvalid
from clinical_mlops.ledger import Ledger
from clinical_mlops.monitoring.alerts import (
    AlertSignal,
    AlertStore,
    acknowledge_alert,
    alert_counts,
    alert_series,
    get_alert,
    list_alerts,
    resolve_alert,
)
from clinical_mlops.workspace import Workspace
from identities import console

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def signal(minutes: int, *, value: float = 0.3, rule: str = "input_psi", **kw) -> AlertSignal:
    at = utc_iso(T0 + timedelta(minutes=minutes))
    base = {
        "rule": rule,
        "kind": "data",
        "severity": "warning",
        "owner_role": "ml_engineer",
        "action": "escalate",
        "at": at,
        "summary": f"PSI {value:.2f} on ventilation",
        "quantity": "psi:ventilation",
        "value": value,
        "threshold": 0.2,
        "release": "icu_mortality_48h@1",
        "model_version": "icu_mortality_48h-abc",
        "subgroup": "ventilation",
        "series": ((utc_iso(T0 + timedelta(minutes=minutes - 15)), 0.1),),
    }
    return AlertSignal(**(base | kw))


def alert_entries(ws: Workspace) -> list[dict]:
    with Ledger.open(ws) as led:
        out = []
        for seq in range(led.size()):
            view = led.read(seq)
            if view.entry.type == "alert":
                out.append(view.payload | {"actor": view.entry.actor})
        return out


def test_one_shift_is_one_alert_counting_occurrences(workspace: Workspace) -> None:
    with AlertStore.open(workspace, clock=FixedClock(T0)) as store:
        results = [store.raise_alert(signal(15 * k), actor="system:monitor") for k in range(60)]
    assert [created for _, created in results].count(True) == 1
    (alert,) = list_alerts(workspace)
    assert alert.occurrences == 60
    assert alert.status == "open" and alert.kind == "data" and alert.action == "escalate"
    assert alert.opened_at == utc_iso(T0)
    assert alert.last_seen_at == utc_iso(T0 + timedelta(minutes=15 * 59))
    # One ledger event for the opening, not 60.
    (entry,) = alert_entries(workspace)
    assert entry["event"] == "opened" and entry["alert_id"] == alert.id
    assert entry["actor"] == "system:monitor" and entry["kind"] == "data"


def test_rerun_of_counted_windows_changes_nothing(workspace: Workspace) -> None:
    with AlertStore.open(workspace) as store:
        for k in range(5):
            store.raise_alert(signal(15 * k), actor="m")
        before = store.get(list_alerts(workspace)[0].id)
        again = [store.raise_alert(signal(15 * k), actor="m") for k in range(5)]
    assert all(a is None and not created for a, created in again)
    assert get_alert(workspace, before.id) == before


def test_subgroups_and_rules_are_separate_alerts(workspace: Workspace) -> None:
    with AlertStore.open(workspace) as store:
        store.raise_alert(signal(0), actor="m")
        store.raise_alert(signal(0, subgroup="lactate"), actor="m")
        store.raise_alert(signal(0, rule="score_psi", subgroup=None), actor="m")
    assert len(list_alerts(workspace)) == 3
    assert alert_counts(workspace) == {("open", "data", "warning"): 3}


def test_acknowledge_then_resolve_then_a_new_firing_opens_a_new_alert(
    workspace: Workspace,
) -> None:
    with AlertStore.open(workspace) as store:
        first, _ = store.raise_alert(signal(0), actor="m")
    assert first is not None
    acked = acknowledge_alert(
        workspace, first.id, actor="user:lena", identity=console("lena"), comment="looking into it"
    )
    assert acked.status == "acknowledged"
    with AlertStore.open(workspace) as store:
        store.raise_alert(signal(15), actor="m")  # still counts while acknowledged
    assert get_alert(workspace, first.id).occurrences == 2
    with pytest.raises(AlertTransitionInvalid, match="only an open alert"):
        acknowledge_alert(
            workspace, first.id, actor="user:lena", identity=console("lena"), comment="again"
        )
    with pytest.raises(AlertTransitionInvalid, match="needs a comment"):
        resolve_alert(workspace, first.id, actor="user:lena", comment=" ")
    done = resolve_alert(workspace, first.id, actor="user:lena", comment="ventilation audit done")
    assert done.status == "resolved"
    assert [h["event"] for h in done.history] == ["opened", "acknowledged", "resolved"]
    with AlertStore.open(workspace) as store:
        stale, created = store.raise_alert(signal(15), actor="m")
        assert stale is None and not created  # a window the resolved alert already covered
        fresh, created = store.raise_alert(signal(60), actor="m")
    assert created and fresh is not None and fresh.id != first.id
    assert list_alerts(workspace, status="open") == [get_alert(workspace, fresh.id)]
    assert [a.id for a in list_alerts(workspace, status="resolved")] == [first.id]
    events = [e["event"] for e in alert_entries(workspace)]
    assert events == ["opened", "acknowledged", "resolved", "opened"]


def test_series_holds_the_lookback_and_every_firing(workspace: Workspace) -> None:
    with AlertStore.open(workspace) as store:
        a, _ = store.raise_alert(signal(15, value=0.25), actor="m")
        store.raise_alert(signal(30, value=0.35), actor="m")
    assert a is not None
    s = alert_series(workspace, a.id)
    assert s["quantity"] == "psi:ventilation" and s["threshold"] == 0.2
    assert [p["value"] for p in s["points"]] == [0.1, 0.25, 0.35]
    assert [p["at"] for p in s["points"]] == sorted(p["at"] for p in s["points"])


def test_filters_and_unknown_ids(workspace: Workspace) -> None:
    with AlertStore.open(workspace) as store:
        store.raise_alert(signal(0), actor="m")
        store.raise_alert(
            signal(30, rule="fairness_gap", kind="fairness", subgroup="age_group"), actor="m"
        )
    assert [a.rule for a in list_alerts(workspace, kind="fairness")] == ["fairness_gap"]
    assert [a.rule for a in list_alerts(workspace, since=T0 + timedelta(minutes=20))] == [
        "fairness_gap"
    ]
    with pytest.raises(AlertNotFound, match="no alert 'alt-nope'"):
        get_alert(workspace, "alt-nope")
    with pytest.raises(ValueError, match="status: expected one of"):
        list_alerts(workspace, status="closed")


def test_alert_store_on_sqlite_and_postgresql(meta_backend: str, tmp_path) -> None:
    """The same records and de-duplication on both metadata databases (SQLAlchemy Core)."""
    ws = Workspace.open(tmp_path / meta_backend)
    with AlertStore.open(ws, clock=FixedClock(T0)) as store:
        for k in range(3):
            store.raise_alert(signal(15 * k, value=0.3 + k / 10), actor="system:monitor")
    (alert,) = list_alerts(ws, status="open")
    assert alert.occurrences == 3 and alert.detail["value"] == pytest.approx(0.5)
    assert [p["value"] for p in alert_series(ws, alert.id)["points"]] == pytest.approx(
        [0.1, 0.3, 0.4, 0.5]
    )
    acknowledge_alert(ws, alert.id, actor="user:lena", identity=console("lena"), comment="seen")
    assert resolve_alert(ws, alert.id, actor="user:lena", comment="fixed").status == "resolved"
    assert [e["event"] for e in alert_entries(ws)] == ["opened", "acknowledged", "resolved"]
