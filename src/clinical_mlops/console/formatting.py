"""How the console writes numbers, times, ages and pseudonyms (Jinja filters)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clinical_mlops.evaluation.phrases import risk_percent

__all__ = ["FILTERS", "age", "ci", "num", "pct", "psn", "risk", "sentence", "when"]


def age(seconds: float | None) -> str:
    """Return a waiting time as a clinician reads it: ``45 min``, ``3 h 12 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def pct(p: Any, digits: int = 1) -> str:
    """Return a measured fraction as a percentage (``33.3 %``); text values pass through."""
    if not _number(p):
        return "—" if p is None else str(p)
    return f"{100 * p:.{digits}f} %"


def risk(p: Any) -> str:
    """Return an estimated probability by the one display rule (``evaluation.phrases.risk_percent``).

    ``>99.9 %`` rather than ``100.0 %``, ``<0.1 %`` rather than ``0.0 %``; text values pass through.
    """
    if not _number(p):
        return "—" if p is None else str(p)
    return risk_percent(float(p))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 3) -> str:
    """Return a number with ``digits`` decimals; text values (e.g. insufficient data) pass through."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "—" if x is None else str(x)
    return f"{x:.{digits}f}"


def ci(pair: Any, digits: int = 3) -> str:
    """Return a confidence interval as ``0.745–0.938``."""
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return f"{num(pair[0], digits)}–{num(pair[1], digits)}"
    return "—" if pair is None else str(pair)


def psn(pseudonym: str | None) -> str:
    """Return a pseudonym shortened for tables (``psn_1a2b3c4d…``); full text stays in title."""
    if not pseudonym:
        return "—"
    return pseudonym if len(pseudonym) <= 14 else pseudonym[:12] + "…"


def when(iso: str | None) -> str:
    """Return a ledger time (ISO UTC) as ``2026-03-02 09:00 UTC``."""
    if not iso:
        return "—"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M UTC")


def sentence(text: str | None) -> str:
    """Return ``text`` with its first letter in upper case (library messages start lower)."""
    if not text:
        return ""
    return text[:1].upper() + text[1:]


FILTERS = {
    "age": age,
    "pct": pct,
    "risk": risk,
    "num": num,
    "ci": ci,
    "psn": psn,
    "when": when,
    "sentence": sentence,
}
