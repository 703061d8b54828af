"""Figures for the validation report, returned as PNG ``data:`` URIs to embed in HTML.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, never through ``pyplot``, so no global backend or figure state is touched
(safe in a server process and in parallel tests).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinical_mlops.evaluation.baseline import score_for
from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.metrics import roc_curve_points
from clinical_mlops.evaluation.validation_report import (
    BaselineComparison,
    Matrix,
    MatrixAuroc,
    SubgroupMetrics,
    ValidationReport,
)

__all__ = [
    "contribution_summary_plot",
    "decision_curve_plot",
    "forest_plot",
    "matrix_plot",
    "reliability_plot",
    "report_plots",
    "roc_plot",
]

_MODEL = "#1f5fa8"
_BASE = "#c0504d"
_GREY = "#777777"


def _new(width: float = 5.2, height: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    # No "Software" metadata: the same figure gives the same bytes across matplotlib builds.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_plot(
    y_true: np.ndarray,
    p: np.ndarray,
    baseline_score: np.ndarray | None,
    *,
    labels: tuple[str, str],
) -> str:
    """Return the ROC curves of the model and the baseline score (if any) as a PNG data URI."""
    fig, ax = _new()
    curves = [(p, labels[0], _MODEL)]
    if baseline_score is not None:
        curves.append((baseline_score, labels[1], _BASE))
    for score, label, colour in curves:
        fpr, tpr = roc_curve_points(y_true, score)
        ax.step(fpr, tpr, where="post", color=colour, label=label)
    ax.plot([0, 1], [0, 1], color=_GREY, linestyle=":", linewidth=1)
    ax.set(xlabel="1 − specificity", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _data_uri(fig)


def reliability_plot(points: list[dict[str, Any]], *, title: str) -> str:
    """Return the reliability diagram (observed rate vs mean predicted probability per bin)."""
    fig, ax = _new()
    x = [pt["mean_predicted"] for pt in points]
    y = [pt["observed_rate"] for pt in points]
    sizes = [max(12.0, 200.0 * pt["n"] / max(1, sum(q["n"] for q in points))) for pt in points]
    ax.plot([0, 1], [0, 1], color=_GREY, linestyle=":", linewidth=1, label="perfect calibration")
    ax.plot(x, y, color=_MODEL, linewidth=1)
    ax.scatter(x, y, s=sizes, color=_MODEL, label="bins (area ∝ stays)", zorder=3)
    ax.set(xlabel="Mean predicted probability", ylabel="Observed outcome rate", xlim=(0, 1))
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return _data_uri(fig)


def decision_curve_plot(points: list[dict[str, Any]], *, operating_threshold: float) -> str:
    """Return net benefit of model, treat-all and treat-none against the threshold probability."""
    fig, ax = _new()
    t = [pt["threshold"] for pt in points]
    model = [pt["net_benefit_model"] for pt in points]
    treat_all = [pt["net_benefit_treat_all"] for pt in points]
    ax.plot(t, model, color=_MODEL, label="model")
    ax.plot(t, treat_all, color=_BASE, linestyle="--", label="alert everyone")
    ax.axhline(0, color=_GREY, linewidth=1, label="alert no one")
    ax.axvline(operating_threshold, color=_GREY, linestyle=":", linewidth=1)
    top = max([v for v in model if v is not None] + [0.01])
    ax.set_ylim(-0.05 * top - 0.01, top * 1.15)
    ax.set(xlabel="Threshold probability", ylabel="Net benefit")
    ax.legend(loc="upper right", fontsize=8)
    return _data_uri(fig)


def forest_plot(subgroups: Mapping[str, SubgroupMetrics], overall: SubgroupMetrics) -> str:
    """Return subgroup AUROCs with 95 % CIs beside the overall AUROC (small groups omitted)."""
    rows = [
        (key, row.auroc, row.auroc_ci)
        for key, row in subgroups.items()
        if isinstance(row.auroc, float) and isinstance(row.auroc_ci, list)
    ]
    fig, ax = _new(5.6, 0.32 * len(rows) + 1.4)
    for i, (_key, value, (lo, hi)) in enumerate(rows):
        y = len(rows) - i
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=_MODEL, linewidth=1.5)
        ax.plot([value], [y], marker="s", color=_MODEL)
    if isinstance(overall.auroc, float):
        ax.axvline(overall.auroc, color=_BASE, linestyle="--", linewidth=1, label="overall")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_yticks(range(len(rows), 0, -1), [key for key, _, _ in rows], fontsize=8)
    ax.set_xlabel("AUROC (95 % CI)")
    return _data_uri(fig)


def contribution_summary_plot(inp: EvaluationInput, *, top: int = 10) -> str:
    """Return a SHAP-style summary: each stay's contribution per feature, coloured by value rank."""
    contrib = inp.contributions.drop(columns=["bias"], errors="ignore")
    order = contrib.abs().mean().sort_values(ascending=False).index[:top][::-1]
    fig, ax = _new(5.8, 0.38 * len(order) + 1.4)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for i, name in enumerate(order):
        x = contrib[name].to_numpy(dtype=float)
        raw = inp.test_frame[name]
        if raw.dtype.kind in "fiub":
            colour = raw.rank(pct=True).to_numpy(dtype=float)
        else:
            colour = raw.astype("category").cat.codes.to_numpy(dtype=float)
            colour = colour / max(1.0, np.nanmax(colour))
        measured = np.isfinite(colour)
        jitter = rng.uniform(-0.3, 0.3, len(x))
        ax.scatter(x[~measured], i + jitter[~measured], s=3, color="#bbbbbb", alpha=0.6)
        ax.scatter(
            x[measured], i + jitter[measured], s=3, c=colour[measured], cmap="coolwarm",
            vmin=0, vmax=1, alpha=0.7,
        )  # fmt: skip
    ax.axvline(0, color=_GREY, linewidth=1)
    labels = [inp.spec.feature(n).label for n in order]
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    ax.set_xlabel("Contribution to log-odds of the outcome")
    ax.set_title("colour: blue = low value, red = high value, grey = not measured", fontsize=8)
    return _data_uri(fig)


def matrix_plot(matrix: Matrix, overall: Any) -> str:
    """Return AUROC with its 95 % CI per site (one series each) across periods, as a PNG.

    Cells the insufficient-data rule withholds are left out, never drawn as a number.
    """
    periods = sorted({r.period for r in matrix.rows})
    sites = sorted({r.site for r in matrix.rows})
    fig, ax = _new(6.2, 3.8)
    width = 0.6 / max(1, len(sites))
    palette = ("#1f5fa8", "#c0504d", "#4a9a4a", "#8064a2", "#f79646", "#4bacc6")
    for k, site in enumerate(sites):
        xs, ys, lows, highs = [], [], [], []
        for r in matrix.rows:
            if r.site != site or not isinstance(r.auroc, MatrixAuroc):
                continue
            if not isinstance(r.auroc.value, float):
                continue
            ci = r.auroc.ci if isinstance(r.auroc.ci, list) else [None, None]
            lo, hi = ci[0], ci[1]
            xs.append(periods.index(r.period) + (k - (len(sites) - 1) / 2) * width)
            ys.append(r.auroc.value)
            lows.append(r.auroc.value - lo if isinstance(lo, float) else 0.0)
            highs.append(hi - r.auroc.value if isinstance(hi, float) else 0.0)
        if xs:
            ax.errorbar(
                xs, ys, yerr=[lows, highs], fmt="s", capsize=3, label=site,
                color=palette[k % len(palette)],
            )  # fmt: skip
    if isinstance(overall, float):
        ax.axhline(overall, color=_GREY, linestyle="--", linewidth=1, label="overall")
    ax.set_xticks(range(len(periods)), periods)
    ax.set(xlabel="Test year", ylabel="AUROC (95 % CI)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, ncol=min(4, len(sites) + 1))
    return _data_uri(fig)


def report_plots(report: ValidationReport, inp: EvaluationInput) -> dict[str, str]:
    """Return every report figure as ``{name: PNG data URI}``."""
    y = np.asarray(inp.y_true, dtype=int)
    p = np.asarray(inp.p_cal, dtype=float)
    score = score_for(inp.spec)
    base = None if score is None else score.score(inp.test_frame).astype(float)
    test, baseline = report.test, report.baseline

    def auc_label(name: str, value: Any) -> str:
        return f"{name} (AUROC {value:.3f})" if isinstance(value, float) else name

    base_label = (
        auc_label(baseline.name, baseline.auroc)
        if isinstance(baseline, BaselineComparison)
        else "no clinical baseline"
    )

    return {
        "roc": roc_plot(
            y,
            p,
            base,
            labels=(
                auc_label("model", test.auroc),
                base_label,
            ),
        ),
        "reliability": reliability_plot(
            report.calibration.reliability_curve,
            title=f"Calibrated probabilities, {report.calibration.ece_binning}",
        ),
        "decision_curve": decision_curve_plot(
            report.decision_curve.points,
            operating_threshold=float(report.decision_curve.operating_threshold),
        ),
        "forest": forest_plot(report.subgroups, test),
        "contributions": contribution_summary_plot(inp),
    } | ({} if report.matrix is None else {"matrix": matrix_plot(report.matrix, test.auroc)})
