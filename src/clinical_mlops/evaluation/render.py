"""Jinja2 rendering of the report and model-card templates, with the number filters they share."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from clinical_mlops.evaluation.phrases import risk_percent

__all__ = ["fmt_ci", "fmt_num", "fmt_pct", "fmt_risk", "fmt_when", "fmt_years", "render"]

_DASH = "—"


def fmt_num(value: Any, digits: int = 3) -> str:
    """Return a number rounded to ``digits``; strings (e.g. "insufficient data") pass through."""
    if value is None or isinstance(value, bool):
        return _DASH if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else _DASH
    return str(value)


def fmt_pct(value: Any, digits: int = 1) -> str:
    """Return a fraction as a percentage (``0.113`` -> ``"11.3 %"``); strings pass through."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{100 * value:.{digits}f} %"
    return fmt_num(value)


def fmt_ci(value: Any, digits: int = 3) -> str:
    """Return ``[lo, hi]`` as ``"lo–hi"``; a string (insufficient data) passes through."""
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = value
        if lo is None or hi is None:
            return _DASH
        return f"{fmt_num(lo, digits)}–{fmt_num(hi, digits)}"
    return fmt_num(value)


def fmt_risk(value: Any) -> str:
    """Return a calibrated risk by the one display rule (``phrases.risk_percent``): ``"<0.1 %"``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return risk_percent(float(value))
    return fmt_num(value)


def fmt_years(value: Any) -> str:
    """Return a year or a span of years as dates read (``2008–2016``), never as ``2,008``."""
    if isinstance(value, list | tuple):
        return "–".join(str(v) for v in value) if value else _DASH
    return _DASH if value is None else str(value)


def fmt_when(value: Any) -> str:
    """Return an ISO time as ``2026-03-02 09:00 UTC``; anything else passes through."""
    if not isinstance(value, str) or not value:
        return _DASH if value in (None, "") else str(value)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        env = Environment(
            loader=PackageLoader("clinical_mlops.evaluation", "templates"),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters.update(
            num=fmt_num, pct=fmt_pct, ci=fmt_ci, risk=fmt_risk, years=fmt_years, when=fmt_when
        )
        _ENV = env
    return _ENV


def render(template: str, **context: Any) -> str:
    """Return the named template (under ``evaluation/templates``) rendered with ``context``."""
    return _env().get_template(template).render(**context)
