"""Operations metrics (R-L9), computed from the audit ledger alone.

Deployments (promotions and rollbacks), validation lead time (registration to first
approval for limited rollout, in days), rollbacks, incidents opened and still open,
and refused governance actions.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries

__all__ = ["operations_metrics"]

_TYPES = ("release_registered", "status_change", "deployment", "incident", "governance_refused")


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def operations_metrics(workspace: Any) -> dict[str, Any]:
    """Return deployment count, validation lead time, rollbacks and incidents from the ledger."""
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
    }
