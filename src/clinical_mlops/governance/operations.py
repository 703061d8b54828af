"""Operations metrics (R-L9), computed from the audit ledger alone.

Deployments (promotions and rollbacks), validation lead time (registration to first
approval for limited rollout, in days), rollbacks, incidents opened and still open,
refused governance actions, and how fast people answer monitoring alerts:

* time to acknowledge: from an alert's ``opened`` event to the first ``acknowledged``
  event (a person's act), in minutes;
* time to triage: from ``opened`` to the first act of a person deciding what happens
  to it: a review opened from it, or its resolution (whichever comes first), in minutes.

Each is reported as ``n`` (alerts that reached that point), ``median`` and ``p90``
(nearest-rank), overall and for critical alerts; alerts not yet acknowledged or
triaged are counted in ``waiting``.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries

__all__ = ["operations_metrics"]

_TYPES = (
    "release_registered",
    "status_change",
    "deployment",
    "incident",
    "governance_refused",
    "alert",
)
#: alert events by which a person decides what happens to an alert
_TRIAGE_EVENTS = ("review_opened", "resolved")


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def operations_metrics(workspace: Any) -> dict[str, Any]:
    """Return deployments, lead time, rollbacks, incidents and alert response times from the ledger."""
    with Ledger.open(workspace) as led:
        with led.store.engine.connect() as conn:
            seqs = (
                conn.execute(
                    sa.select(entries.c.seq)
                    .where(entries.c.type.in_(_TYPES))
                    .order_by(entries.c.seq)
                )
                .scalars()
                .all()
            )
        events = [(led.entry(s), led.read(s).payload or {}) for s in seqs]
    registered: dict[str, str] = {}
    lead: list[float] = []
    deployments = rollbacks = refused = 0
    incidents: dict[str, str] = {}
    alerts: dict[str, dict[str, Any]] = {}
    for entry, p in events:
        if entry.type == "release_registered":
            registered[p["release"]] = entry.time
        elif entry.type == "status_change" and p.get("to_status") == "approved_limited":
            if p["release"] in registered:
                lead.append(
                    (_t(entry.time) - _t(registered.pop(p["release"]))).total_seconds() / 86400
                )
        elif entry.type == "deployment":
            deployments += 1
            rollbacks += p.get("action") == "rollback"
        elif entry.type == "incident":
            incidents[p["incident_id"]] = p.get("status", "open")
        elif entry.type == "governance_refused":
            refused += 1
        elif entry.type == "alert" and p.get("alert_id"):
            _alert_event(alerts, entry, p)
    return {
        "deployments": deployments,
        "rollbacks": rollbacks,
        "validation_lead_time_days": {
            "n": len(lead),
            "median": round(statistics.median(lead), 4) if lead else None,
        },
        "incidents_opened": len(incidents),
        "open_incidents": sum(1 for s in incidents.values() if s != "resolved"),
        "refused_governance_actions": refused,
        "time_to_acknowledge_minutes": _response(alerts, "acknowledged"),
        "time_to_triage_minutes": _response(alerts, "triaged"),
    }


def _alert_event(alerts: dict[str, dict[str, Any]], entry: Any, p: dict[str, Any]) -> None:
    """Note the times an alert opened, was first acknowledged and first triaged by a person."""
    event = p.get("event")
    a = alerts.setdefault(p["alert_id"], {})
    if event == "opened":
        a["opened"] = _t(entry.time)
        a["severity"] = p.get("severity")
    elif str(entry.actor).startswith("system:"):
        return
    elif event == "acknowledged":
        a.setdefault("acknowledged", _t(entry.time))
    if event in _TRIAGE_EVENTS:
        a.setdefault("triaged", _t(entry.time))


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _summary(minutes: list[float], waiting: int) -> dict[str, Any]:
    return {
        "n": len(minutes),
        "median": round(statistics.median(minutes), 2) if minutes else None,
        "p90": round(_nearest_rank(minutes, 0.9), 2) if minutes else None,
        "waiting": waiting,
    }


def _response(alerts: dict[str, dict[str, Any]], point: str) -> dict[str, Any]:
    """Return minutes from opening to ``point`` over the alerts, overall and for critical ones."""
    out: dict[str, Any] = {}
    for name, keep in (("all", None), ("critical", "critical")):
        chosen = [a for a in alerts.values() if "opened" in a and keep in (None, a["severity"])]
        minutes = [(a[point] - a["opened"]).total_seconds() / 60 for a in chosen if point in a]
        out[name] = _summary(minutes, sum(1 for a in chosen if point not in a))
    return out
