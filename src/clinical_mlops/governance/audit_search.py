"""Search the audit ledger the way an auditor asks: by time, entry type, pseudonym, actor
and model version.

Type, time, pseudonym and actor are columns of the ledger and filtered in the
database. The model version lives in the encrypted payload, so that filter opens
payloads newest first and stops after ``scan_limit`` entries (the result says how
far it got and where to continue). Payloads that were erased or purged are listed
with their status and never match a model version. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import InputInvalid
from clinical_mlops.ledger import SCHEMAS, Ledger
from clinical_mlops.ledger.store import entries

__all__ = ["SUMMARY_KEYS", "Hit", "SearchResult", "entry_types", "parse_bound", "search_ledger"]

#: payload fields shown in a result row, in this order, when present
SUMMARY_KEYS = (
    "model_version",
    "release",
    "action",
    "decision",
    "role",
    "from_status",
    "to_status",
    "prediction_seq",
    "reason_code",
    "probability",
    "mode",
    "kind",
    "gate",
    "passed",
    "outcome",
    "incident_id",
    "reason",
    "why",
    "message",
)
_BATCH = 500


@dataclass(frozen=True)
class Hit:
    """One matching entry: its columns, payload status and a short summary of its payload."""

    seq: int
    time: str
    type: str
    actor: str
    subject: str | None
    payload_status: str
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "type": self.type,
            "actor": self.actor,
            "subject": self.subject,
            "payload_status": self.payload_status,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class SearchResult:
    """Hits newest first; ``next_before`` continues the search when more may match."""

    hits: list[Hit]
    scanned: int
    next_before: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": [h.to_json() for h in self.hits],
            "scanned": self.scanned,
            "next_before": self.next_before,
        }


def entry_types() -> list[str]:
    """Return every declared ledger entry type, sorted."""
    return sorted(SCHEMAS)


def parse_bound(value: str | None, *, where: str, end: bool = False) -> str | None:
    """Return an ISO date or date-time as a ledger time string (UTC); None for empty.

    A date alone means the start of that day, or (``end``) the start of the next
    day, so ``until=2026-03-02`` includes the whole of 2 March. Times without a
    zone are taken as UTC.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return utc_iso(start + timedelta(days=1) if end else start)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputInvalid(
            [(where, f"{value!r} is not an ISO date (2026-03-02) or date-time (2026-03-02T09:00)")]
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return utc_iso(when)


def _summary(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        value = payload.get(key)
        if value is None or isinstance(value, dict | list):
            continue
        if isinstance(value, float):
            value = round(value, 4)
        if isinstance(value, str) and len(value) > 160:
            value = value[:157] + "..."
        out[key] = value
    return out


def search_ledger(
    ledger: Ledger,
    *,
    types: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    subject: str | None = None,
    actor: str | None = None,
    model_version: str | None = None,
    before: int | None = None,
    limit: int = 50,
    scan_limit: int = 5_000,
) -> SearchResult:
    """Return the entries matching every given filter, newest first (at most ``limit``).

    ``since``/``until`` are ledger time strings (see :func:`parse_bound`; ``until`` is
    exclusive); ``subject`` is a pseudonym; ``model_version`` matches a payload's
    ``model_version`` or ``release`` exactly; ``before`` continues from a previous
    result's ``next_before``. Raises ``InputInvalid`` for an undeclared entry type.
    """
    unknown = sorted(set(types or []) - set(SCHEMAS))
    if unknown:
        raise InputInvalid([("type", f"unknown entry type(s) {unknown}; see the declared types")])
    query = sa.select(
        entries.c.seq, entries.c.time, entries.c.type, entries.c.actor, entries.c.subject
    )
    if types:
        query = query.where(entries.c.type.in_(types))
    if since:
        query = query.where(entries.c.time >= since)
    if until:
        query = query.where(entries.c.time < until)
    if subject:
        query = query.where(entries.c.subject == subject.strip())
    if actor:
        query = query.where(entries.c.actor == actor.strip())
    hits: list[Hit] = []
    scanned = 0
    cursor = before
    wanted = (model_version or "").strip() or None
    while len(hits) < limit and scanned < scan_limit:
        page = query
        if cursor is not None:
            page = page.where(entries.c.seq < cursor)
        with ledger.store.engine.connect() as conn:
            rows = list(conn.execute(page.order_by(entries.c.seq.desc()).limit(_BATCH)))
        if not rows:
            return SearchResult(hits=hits, scanned=scanned, next_before=None)
        for row in rows:
            cursor = int(row.seq)
            scanned += 1
            view = ledger.read(cursor)
            payload = view.payload or {}
            if wanted and wanted not in (payload.get("model_version"), payload.get("release")):
                if scanned >= scan_limit:
                    break
                continue
            hits.append(
                Hit(
                    seq=cursor,
                    time=str(row.time),
                    type=str(row.type),
                    actor=str(row.actor),
                    subject=row.subject,
                    payload_status=view.status,
                    summary=_summary(payload),
                )
            )
            if len(hits) >= limit or scanned >= scan_limit:
                break
    return SearchResult(hits=hits, scanned=scanned, next_before=cursor)
