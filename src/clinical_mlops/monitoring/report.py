"""The monitoring report: one self-contained HTML page over a period of evaluated windows.

Built from the windows a monitor run stored (``clinical-mlops monitor report``) or
from a simulated run (``clinical-mlops simulate drift --report``), in the style of
the validation report: headline cards, the alerts with their actions, and four
figures drawn with matplotlib's Agg canvas (never ``pyplot``) and embedded as PNG
data URIs:

* **drift timeline** — the largest input PSI and the score PSI per window against
  the PSI threshold, with every stream-detector detection and alert opening marked;
* **PSI heat map** — inputs by time (hourly maxima), so a single shifted input stands out;
* **rolling calibration** — live AUROC against the validated value and its
  degradation limit, and ECE against its limit, as outcomes arrive;
* **subgroup gaps** — per protected attribute, the best-minus-worst subgroup AUROC
  over time, and each subgroup's widening since validation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinical_mlops import __version__
from clinical_mlops.evaluation.plots import _data_uri as png_data_uri
from clinical_mlops.evaluation.plots import _new as new_figure
from clinical_mlops.evaluation.render import fmt_num, fmt_pct
from clinical_mlops.monitoring.alerts import Alert
from clinical_mlops.monitoring.windows import WindowResult
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["REPORT_FORMAT", "monitoring_report", "render_report", "write_report"]

REPORT_FORMAT = "clinical-mlops/monitoring-report/v1"
_BLUE = "#1f5fa8"
_RED = "#c0504d"
_GREY = "#777777"
_GREEN = "#4a9a4a"


def _series(windows: list[WindowResult], key: str) -> np.ndarray:
    out = np.full(len(windows), np.nan)
    for i, w in enumerate(windows):
        v = w.quantities.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            out[i] = float(v)
    return out


def _times(windows: list[WindowResult]) -> np.ndarray:
    """Return the window ends as UTC datetime64 (what matplotlib's date axis reads)."""
    return np.array([round(w.at * 1000) for w in windows], dtype="datetime64[ms]")


def _new(width: float = 9.0, height: float = 3.2) -> tuple[Figure, Any]:
    return new_figure(width, height)


def _uri(fig: Figure) -> str:
    return png_data_uri(fig)


def _legend(ax: Any, **kwargs: Any) -> None:
    """Draw the legend, or say there is nothing to show yet (a period without outcomes)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    else:
        ax.text(
            0.5,
            0.5,
            "no data in this period",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color=_GREY,
            fontsize=8,
        )


def _inputs(windows: list[WindowResult]) -> list[str]:
    names = {k.split(":", 1)[1] for w in windows for k in w.quantities if k.startswith("psi:")}
    names.discard("score")
    return sorted(names)


def drift_timeline_plot(
    windows: list[WindowResult], alerts: list[Alert], *, psi_threshold: float
) -> str:
    """Return the drift timeline: largest input PSI, score PSI, detections, alert openings."""
    fig, ax = _new()
    t = _times(windows)
    inputs = _inputs(windows)
    if inputs:
        stacked = np.vstack([_series(windows, f"psi:{n}") for n in inputs])
        top = np.fmax.reduce(stacked, axis=0)  # ignores NaN; NaN only where all are
        ax.plot(t, top, color=_BLUE, linewidth=1.2, label="largest input PSI")
    ax.plot(t, _series(windows, "psi:score"), color=_GREEN, linewidth=1, label="score PSI")
    ax.axhline(psi_threshold, color=_RED, linestyle="--", linewidth=1, label="PSI threshold")
    marked = False
    for w, when in zip(windows, t, strict=True):
        hits = sum(
            int(v or 0)
            for k, v in w.quantities.items()
            if k.startswith(("adwin:", "page_hinkley:")) and isinstance(v, int | float)
        )
        if hits:
            ax.plot(
                [when],
                [0],
                marker="^",
                color="#8a6d00",
                linestyle="none",
                label=None if marked else "ADWIN / Page-Hinkley detection",
            )
            marked = True
    for i, a in enumerate(alerts):
        when = np.datetime64(a.opened_at.replace("Z", ""), "ms")
        ax.axvline(when, color=_RED, alpha=0.35, linewidth=1, label=None if i else "alert opened")
    ax.set(ylabel="PSI")
    ax.set_ylim(bottom=-0.02)
    _legend(ax, loc="upper left", fontsize=7)
    fig.autofmt_xdate()
    return _uri(fig)


def psi_heatmap_plot(windows: list[WindowResult]) -> str:
    """Return the PSI heat map: one row per input, hourly maxima across the period."""
    inputs = [*_inputs(windows), "score"]
    t = np.array([w.at for w in windows])
    hours = np.floor((t - t[0]) / 3600.0).astype(int) if len(t) else np.zeros(0, dtype=int)
    n_cols = int(hours.max()) + 1 if len(hours) else 1
    grid = np.full((len(inputs), n_cols), np.nan)
    for r, name in enumerate(inputs):
        s = _series(windows, f"psi:{name}")
        for c in range(n_cols):
            vals = s[hours == c]
            if np.isfinite(vals).any():
                grid[r, c] = np.nanmax(vals)
    fig, ax = _new(9.0, 0.28 * len(inputs) + 1.2)
    image = ax.imshow(
        np.clip(grid, 0, 0.5), aspect="auto", cmap="Reds", vmin=0, vmax=0.5, interpolation="nearest"
    )
    ax.set_yticks(range(len(inputs)), inputs, fontsize=7)
    ax.set_xlabel("hours since the start of the period")
    fig.colorbar(image, ax=ax, label="PSI (clipped at 0.5)")
    return _uri(fig)


def calibration_plot(
    windows: list[WindowResult],
    *,
    validated_auroc: float | None,
    degradation: float,
    max_ece: float,
) -> str:
    """Return rolling AUROC (with the validated value and limit) and ECE (with its limit)."""
    fig = Figure(figsize=(9.0, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    t = _times(windows)
    left.plot(t, _series(windows, "auroc"), color=_BLUE, label="live AUROC")
    if validated_auroc:
        left.axhline(validated_auroc, color=_GREY, linestyle=":", label="validated")
        left.axhline(
            validated_auroc * (1 - degradation),
            color=_RED,
            linestyle="--",
            label=f"{100 * degradation:g} % degradation",
        )
    left.set(ylabel="AUROC")
    _legend(left, loc="lower left", fontsize=7)
    right.plot(t, _series(windows, "ece"), color=_BLUE, label="ECE")
    right.axhline(max_ece, color=_RED, linestyle="--", label="limit")
    right.plot(
        t,
        _series(windows, "calibration_slope") / 10,
        color=_GREEN,
        linewidth=0.8,
        label="calibration slope / 10",
    )
    right.set(ylabel="ECE")
    _legend(right, loc="upper left", fontsize=7)
    for ax in (left, right):
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_fontsize(7)
    return _uri(fig)


def subgroup_plot(windows: list[WindowResult], *, tolerance: float) -> str:
    """Return per-attribute AUROC gaps and per-subgroup widening over time."""
    fig = Figure(figsize=(9.0, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    t = _times(windows)
    keys = sorted({k for w in windows for k in w.quantities})
    for k in (k for k in keys if k.startswith("gap:")):
        left.plot(t, _series(windows, k), label=k.split(":", 1)[1])
    left.set(ylabel="best − worst subgroup AUROC")
    _legend(left, loc="upper left", fontsize=7)
    for k in (k for k in keys if k.startswith("widening:")):
        right.plot(t, _series(windows, k), linewidth=0.9, label=k.split(":", 1)[1])
    right.axhline(tolerance, color=_RED, linestyle="--", label="tolerance")
    right.set(ylabel="widening since validation")
    _legend(right, loc="upper left", fontsize=6, ncol=2)
    for ax in (left, right):
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_fontsize(7)
    return _uri(fig)


def monitoring_report(
    windows: list[WindowResult],
    alerts: list[Alert],
    *,
    spec: TaskSpec,
    release: str,
    validated_auroc: float | None,
    title: str,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the report as a dict: headline, alerts, per-kind counts and the four figures."""
    active = [w for w in windows if not w.idle]
    last = active[-1].quantities if active else {}
    counts = {
        k: sum(a.kind == k for a in alerts) for k in ("data", "concept", "workflow", "fairness")
    }
    plots = {}
    if windows:
        plots = {
            "drift_timeline": drift_timeline_plot(
                windows, alerts, psi_threshold=spec.thresholds.psi
            ),
            "psi_heatmap": psi_heatmap_plot(windows),
            "calibration": calibration_plot(
                windows,
                validated_auroc=validated_auroc,
                degradation=spec.thresholds.auroc_degradation,
                max_ece=spec.monitoring.max_ece,
            ),
            "subgroups": subgroup_plot(windows, tolerance=spec.thresholds.subgroup_auroc_gap),
        }
    return {
        "format": REPORT_FORMAT,
        "generator": f"clinical-mlops {__version__}",
        "title": title,
        "task": spec.name,
        "release": release,
        "period": {
            "start": windows[0].at_iso if windows else None,
            "end": windows[-1].at_iso if windows else None,
            "windows": len(windows),
            "idle_windows": len(windows) - len(active),
        },
        "validated_auroc": validated_auroc,
        "latest": {
            k: last.get(k)
            for k in (
                "auroc",
                "auroc_degradation",
                "ece",
                "calibration_slope",
                "n_outcomes",
                "override_rate",
                "alert_rate",
                "n_lookback",
            )
        },
        "alert_counts": counts,
        "alerts": [a.to_json() for a in alerts],
        "notes": list(notes or []),
        "extra": extra or {},
        "plots": plots,
    }


def render_report(report: dict[str, Any]) -> str:
    """Return the report as one HTML page (plots and CSS inline)."""
    env = Environment(
        loader=PackageLoader("clinical_mlops.monitoring", "templates"),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct)
    return env.get_template("monitoring_report.html.j2").render(report=report)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the HTML report to ``path`` and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(report), encoding="utf-8")
    return out
