"""Server-drawn SVG line plots for the alert drill-down (no JavaScript, no external assets).

The plot shows a monitored quantity over time with its threshold as a dashed line
and the window the alert opened in marked; the same points are also given as a
table on the page, for screen readers and for copying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

__all__ = ["series_svg"]

W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 16, 44


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12:
        out.append(round(v, 12))
        v += step
    return out


def series_svg(
    points: Sequence[dict[str, Any]],
    *,
    title: str,
    threshold: float | None = None,
    marker: str | None = None,
) -> Markup:
    """Return an accessible inline SVG of ``points`` (``{"at": ISO, "value": float|None}``)."""
    pts = [(p["at"], p["value"]) for p in points if p.get("value") is not None]
    if not pts:
        return Markup('<p class="muted">No values recorded for this alert yet.</p>')
    xs = [_t(a) for a, _ in pts]
    ys = [float(v) for _, v in pts]
    lo_y = min([*ys, threshold] if threshold is not None else ys)
    hi_y = max([*ys, threshold] if threshold is not None else ys)
    pad = (hi_y - lo_y) * 0.1 or (abs(hi_y) * 0.1 or 1.0)
    lo_y, hi_y = lo_y - pad, hi_y + pad
    lo_x, hi_x = min(xs), max(xs)
    span_x = (hi_x - lo_x) or 1.0

    def X(x: float) -> float:
        return LEFT + (x - lo_x) / span_x * (W - LEFT - RIGHT)

    def Y(y: float) -> float:
        return TOP + (hi_y - y) / (hi_y - lo_y) * (H - TOP - BOTTOM)

    parts = [
        f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-labelledby="plot-title" '
        f'xmlns="http://www.w3.org/2000/svg"><title id="plot-title">{escape(title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'class="plot-area"/>',
    ]
    for tick in _ticks(lo_y, hi_y):
        y = Y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(tick)}</text>'
        )
    first, last = pts[0][0], pts[-1][0]
    parts.append(
        f'<text x="{LEFT}" y="{H - 14}" class="tick">{escape(first[:16].replace("T", " "))}</text>'
        f'<text x="{W - RIGHT}" y="{H - 14}" class="tick" text-anchor="end">'
        f"{escape(last[:16].replace('T', ' '))} UTC</text>"
    )
    if threshold is not None:
        y = Y(threshold)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="threshold"/>'
            f'<text x="{W - RIGHT - 4}" y="{y - 6:.1f}" class="tick threshold-label" '
            f'text-anchor="end">threshold {_fmt(threshold)}</text>'
        )
    if marker is not None:
        try:
            mx = X(min(max(_t(marker), lo_x), hi_x))
            right = mx > (LEFT + W - RIGHT) / 2
            parts.append(
                f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{H - BOTTOM}" class="marker"/>'
                f'<text x="{mx - 6 if right else mx + 6:.1f}" y="{TOP + 14}" class="tick" '
                f'text-anchor="{"end" if right else "start"}">alert opened</text>'
            )
        except ValueError:
            pass
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{X(x):.1f},{Y(y):.1f}"
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    )
    parts.append(f'<path d="{path}" class="line"/>')
    for x, y in zip(xs, ys, strict=True):
        parts.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" class="dot"/>')
    parts.append("</svg>")
    # Every text in ``parts`` went through ``escape``; the rest are numbers we formatted.
    return Markup("".join(parts))  # noqa: S704
