"""The trial dossier: a candidate release scored beside the live one, against outcomes.

A trial (``Governance.start_trial``) scores a candidate release on every request a site
serves, beside the live release, in ``silent`` or ``shadow`` mode; the Predictor writes
one ``trial_inference`` entry per candidate per request, paired with the live request
(``paired_request_id``), never shown. Where no release is live at the site, the
candidate's record is the request's own ``inference`` entry (mode ``silent`` or
``shadow``). :func:`trial_dossier` reads those records from the ledger and compares,
per site:

* **Outcomes.** A candidate record takes the outcome recorded for its paired live
  prediction (``outcome`` entries name the live prediction's seq); an unpaired record
  takes its own. The newest correction of an outcome is used.
* **Discrimination.** AUROC with a 95 % percentile bootstrap CI for each model on the
  same requests, and the paired difference (candidate minus live) on the same resamples.
* **Calibration.** Slope and calibration-in-the-large (logistic recalibration on the
  logit) and ECE (10 equal-width bins).
* **Workload.** Alerts per 100 (probability at or above the model's own threshold)
  and reviews per 100: for the live release the cases it actually queued; for the
  candidate the cases its own signed escalation policy would have queued (the
  Predictor routes the candidate with its ``ResolvedEscalation`` and records the
  reasons), over every paired request, outcome or not.
* **Net benefit** at each model's threshold (Vickers & Elkin: TP/n − FP/n · t/(1−t)).
* **Lead time**: for each prediction flagged at the model's threshold whose outcome was
  positive, the hours from the prediction to the outcome's time — ``observed_at`` when
  the outcome states one, else the time the outcome was recorded. Median and
  interquartile range; a flag raised after the outcome counts with a negative time.
* **Subgroup gaps**: per protected attribute of the task, the largest minus smallest
  subgroup AUROC with a bootstrap CI, among subgroups meeting the evaluation's
  small-subgroup rule (``evaluation.fairness``).
* **Disagreement**: requests one model flags and the other does not, with their
  outcomes.

A figure that needs outcomes is the text ``"insufficient data (...)"`` while fewer than
:attr:`TrialRules.min_events` positive or :attr:`TrialRules.min_non_events` negative
outcomes are linked: never a misleading number.

The go/no-go summary applies explicit rules (:class:`TrialRules`), per site:

1. *enough outcomes*: else ``insufficient``, whatever the other rules say (they are
   listed for information and decide nothing yet);
2. *discrimination not worse*: the lower bound of the AUROC difference's CI must be at
   least ``-auroc_margin`` (``go``); its upper bound below ``-auroc_margin`` is
   ``no-go``; between, ``insufficient`` (inconclusive: more outcomes needed). With no
   live release the candidate is held to its own validated AUROC the same way;
3. *calibrated*: slope within ``slope_range``, |calibration-in-the-large| at most
   ``max_abs_citl`` and ECE at most ``max_ece``, else ``no-go``;
4. *within the review budget*: the candidate's reviews per 100 at most its policy's
   ``max_reviews_per_100``, else ``no-go``.

A site is ``no-go`` if any rule says so, else ``insufficient`` if any does, else
``go``; the release's summary combines its sites the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.evaluation.fairness import MIN_PER_CLASS, MIN_STAYS, group_masks
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    calibration_slope_intercept,
    decision_curve,
    expected_calibration_error,
    percentile_ci,
    resample_counts,
)
from clinical_mlops.monitoring.records import epoch, iso
from clinical_mlops.registry.registry import Registry

__all__ = [
    "TRIAL_FORMAT",
    "TrialRules",
    "read_trial_records",
    "render_trial_dossier",
    "trial_dossier",
    "write_trial_dossier",
]

TRIAL_FORMAT = "clinical-mlops/trial-dossier/v1"
_MODES = ("silent", "shadow")


@dataclass(frozen=True)
class TrialRules:
    """The go/no-go rules of a trial dossier (see the module docstring)."""

    min_events: int = 10
    min_non_events: int = 10
    auroc_margin: float = 0.05
    slope_range: tuple[float, float] = (0.7, 1.4)
    max_abs_citl: float = 0.5
    max_ece: float = 0.1

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"slope_range": list(self.slope_range)}


def _insufficient(n_pos: int, n_neg: int) -> str:
    return f"insufficient data ({n_pos} with the outcome, {n_neg} without)"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass
class _Record:
    seq: int
    time: float
    site: str
    mode: str
    release: str
    probability: float
    threshold: float
    queued: bool
    inputs: dict[str, Any]
    outcome_seq: int  # the prediction whose outcome this record takes


def read_trial_records(
    ledger: Any, release: str, *, until: datetime, modes: Iterable[str] = _MODES
) -> dict[str, Any]:
    """Return a trial's records from the ledger up to ``until``: candidate, live and outcomes.

    ``{"candidate": [...], "live": {request_id: record}, "outcomes": {seq: (y, time)},
    "failed": {site: n}}``; ``modes`` selects silent and/or shadow records.
    """
    hi = iso(until.timestamp())
    wanted = set(modes)
    live_by_request: dict[str, _Record] = {}
    candidate: list[tuple[_Record, str | None]] = []
    failed: dict[str, int] = {}
    outcome_of: dict[int, tuple[int, float]] = {}
    outcome_entry: dict[int, int] = {}  # outcome entry seq -> prediction seq
    for view in ledger.read_from(1, types=("inference", "trial_inference", "outcome")):
        e = view.entry
        if e.time >= hi:
            break
        p = view.payload
        if view.status != "ok" or p is None:
            continue
        if e.type == "outcome":
            target = outcome_entry.get(int(p["corrects"])) if p.get("corrects") else None
            pred = int(p["prediction_seq"]) if target is None else target
            outcome_entry[e.seq] = pred
            try:
                value = float(p["outcome"])
            except (TypeError, ValueError):
                continue
            when = epoch(e.time)
            if isinstance(p.get("observed_at"), str):
                # a time that is not ISO-8601 (free text) leaves the recorded time
                with contextlib.suppress(ValueError):
                    when = epoch(p["observed_at"])
            if target is not None and pred in outcome_of:
                when = outcome_of[pred][1]
            outcome_of[pred] = (int(value), when)
            continue
        site = str((p.get("context") or {}).get("site", "*"))
        if e.type == "trial_inference":
            if p.get("release") != release or p.get("mode") not in wanted:
                continue
            if "failed" in p:
                failed[site] = failed.get(site, 0) + 1
                continue
            rec = _Record(
                e.seq,
                epoch(e.time),
                site,
                str(p["mode"]),
                release,
                float(p["probability"]),
                float(p["threshold"]),
                bool(p.get("escalation")),
                dict(p.get("inputs") or {}),
                -1,
            )
            candidate.append((rec, str(p["paired_request_id"])))
            continue
        rec = _Record(
            e.seq,
            epoch(e.time),
            site,
            str(p.get("mode")),
            str(p.get("release")),
            float(p["probability"]),
            float(p["threshold"]),
            bool(p.get("escalation")),
            dict(p.get("inputs") or {}),
            e.seq,
        )
        if p.get("release") == release and p.get("mode") in wanted:
            candidate.append((rec, None))  # no live release at the site: its own record
        elif p.get("request_id") is not None:
            # a request id is served once (the ledger's claims): it names one live record
            live_by_request[str(p["request_id"])] = rec
    return {
        "candidate": candidate,
        "live": live_by_request,
        "outcomes": outcome_of,
        "failed": failed,
    }


def _model_figures(
    p: np.ndarray,
    thr: np.ndarray,
    queued: np.ndarray,
    y: np.ndarray | None,
    has_y: np.ndarray,
    times: np.ndarray,
    outcome_times: np.ndarray,
    counts: np.ndarray | None,
    masks: dict[str, dict[str, np.ndarray]],
    rules: TrialRules,
) -> dict[str, Any]:
    n = len(p)
    flagged = p >= thr
    out: dict[str, Any] = {
        "n_predictions": n,
        "alerts_per_100": 100.0 * float(flagged.mean()) if n else None,
        "reviews_per_100": 100.0 * float(queued.mean()) if n else None,
        "threshold": float(thr[0]) if n else None,
    }
    yy = y[has_y] if y is not None else np.zeros(0, dtype=np.int64)
    pp, ff = p[has_y], flagged[has_y]
    n_pos, n_neg = int(yy.sum()), int(len(yy) - yy.sum())
    out |= {"n_outcomes": len(yy), "n_events": n_pos}
    if n_pos < rules.min_events or n_neg < rules.min_non_events or counts is None:
        text = _insufficient(n_pos, n_neg)
        for key in (
            "auroc",
            "calibration_slope",
            "calibration_in_the_large",
            "ece",
            "net_benefit",
            "lead_time_hours",
            "subgroup_gaps",
        ):
            out[key] = text
        return out
    area = auroc(yy, pp)
    out["auroc"] = {"value": area, "ci": list(percentile_ci(auroc_replicates(yy, pp, counts)))}
    cal = calibration_slope_intercept(yy, pp)
    out["calibration_slope"] = cal["slope"]
    out["calibration_in_the_large"] = cal["intercept"]
    out["ece"] = expected_calibration_error(yy, pp)
    t = float(thr[0])
    nb = decision_curve(yy, pp, thresholds=[t])[0]
    out["net_benefit"] = {
        "threshold": t,
        "model": nb["net_benefit_model"],
        "treat_all": nb["net_benefit_treat_all"],
    }
    lead = (outcome_times[has_y] - times[has_y])[(yy == 1) & ff] / 3600.0
    out["lead_time_hours"] = (
        {
            "n": len(lead),
            "median": float(np.median(lead)),
            "q1": float(np.percentile(lead, 25)),
            "q3": float(np.percentile(lead, 75)),
            "flagged_after_outcome": int((lead < 0).sum()),
        }
        if len(lead)
        else "no flagged prediction with a positive outcome"
    )
    gaps: dict[str, Any] = {}
    for attr, groups in masks.items():
        values, reps, kept = [], [], []
        for label, mask in groups.items():
            m = mask[has_y]
            g_pos, g_neg = int(yy[m].sum()), int(m.sum() - yy[m].sum())
            if m.sum() >= MIN_STAYS and g_pos >= MIN_PER_CLASS and g_neg >= MIN_PER_CLASS:
                kept.append(label)
                values.append(auroc(yy[m], pp[m]))
                reps.append(auroc_replicates(yy[m], pp[m], counts[:, m]))
        if len(kept) < 2:
            gaps[attr] = "fewer than two subgroups with sufficient data"
            continue
        rep = np.column_stack(reps)
        gaps[attr] = {
            "value": float(max(values) - min(values)),
            "ci": list(percentile_ci(rep.max(axis=1) - rep.min(axis=1))),
            "groups": dict(zip(kept, values, strict=True)),
        }
    out["subgroup_gaps"] = gaps
    return out


def _verdict(
    cand: dict[str, Any],
    difference: dict[str, Any] | str,
    reference: str,
    budget: float | None,
    rules: TrialRules,
) -> dict[str, Any]:
    reasons: list[tuple[str, str]] = []
    if isinstance(cand["auroc"], str):
        reasons.append(("insufficient", f"outcomes: {cand['auroc']}"))
    else:
        lo, hi = difference["ci"] if isinstance(difference, dict) else (math.nan, math.nan)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            reasons.append(("insufficient", "AUROC difference: no confidence interval"))
        elif lo >= -rules.auroc_margin:
            reasons.append(
                ("go", f"AUROC not worse than {reference} beyond {rules.auroc_margin:g}")
            )
        elif hi < -rules.auroc_margin:
            reasons.append(("no-go", f"AUROC worse than {reference} beyond {rules.auroc_margin:g}"))
        else:
            reasons.append(
                ("insufficient", f"AUROC against {reference} inconclusive: more outcomes needed")
            )
        slope, citl, ece = (
            cand["calibration_slope"],
            cand["calibration_in_the_large"],
            cand["ece"],
        )
        lo_s, hi_s = rules.slope_range
        calibrated = (
            math.isfinite(slope)
            and lo_s <= slope <= hi_s
            and abs(citl) <= rules.max_abs_citl
            and ece <= rules.max_ece
        )
        reasons.append(
            (
                "go" if calibrated else "no-go",
                f"calibration slope {slope:.2f} (bounds {lo_s:g}-{hi_s:g}), in the large "
                f"{citl:+.2f} (at most ±{rules.max_abs_citl:g}), ECE {ece:.3f} "
                f"(at most {rules.max_ece:g})",
            )
        )
    reviews = cand["reviews_per_100"]
    if budget is not None and reviews is not None:
        reasons.append(
            (
                "go" if reviews <= budget else "no-go",
                f"{reviews:.1f} reviews per 100 against the policy's budget of {budget:g}",
            )
        )
    found = {d for d, _ in reasons}
    decision = "no-go" if "no-go" in found else "insufficient" if "insufficient" in found else "go"
    if isinstance(cand["auroc"], str):
        decision = "insufficient"  # too few outcomes: no rule decides yet
    return {"decision": decision, "rules": [{"verdict": d, "rule": r} for d, r in reasons]}


def _combine(decisions: Iterable[str]) -> str:
    found = set(decisions)
    if not found:
        return "insufficient"
    return "no-go" if "no-go" in found else "insufficient" if "insufficient" in found else "go"


def trial_dossier(
    registry: Registry,
    ledger: Any,
    release: str,
    *,
    as_of: datetime,
    site: str | None = None,
    modes: Iterable[str] = _MODES,
    rules: TrialRules | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Return the trial dossier of ``release`` as of ``as_of``: per site, candidate vs live.

    ``site`` restricts it to one site; ``modes`` to silent and/or shadow records (the
    governance team's view is silent only). See the module docstring for every
    figure and the go/no-go rules.
    """
    rules = rules or TrialRules()
    rel = registry.get(release)
    bundle = registry.bundle(rel.version)
    spec = bundle.spec()
    policy = bundle.deployment.get("escalation") or {}
    budget = policy.get("max_reviews_per_100")
    found = bundle.report().test.auroc
    validated = float(found) if isinstance(found, int | float) else math.nan
    data = read_trial_records(ledger, rel.version, until=as_of, modes=modes)
    outcomes = data["outcomes"]
    by_site: dict[str, list[tuple[_Record, _Record | None]]] = {}
    for rec, paired in data["candidate"]:
        if site is not None and rec.site != site:
            continue
        live = None
        if paired is not None:
            live = data["live"].get(paired)
            if live is not None:
                rec.outcome_seq = live.seq
        else:
            rec.outcome_seq = rec.seq
        by_site.setdefault(rec.site, []).append((rec, live))
    sites_out = []
    for name in sorted(set(by_site) | ({site} if site else set())):
        pairs = by_site.get(name, [])
        sites_out.append(
            _site_figures(
                name,
                pairs,
                outcomes,
                spec,
                rules,
                budget,
                validated,
                n_boot,
                seed,
                data["failed"].get(name, 0),
            )
        )
    summary = _combine(s["verdict"]["decision"] for s in sites_out)
    dossier = {
        "format": TRIAL_FORMAT,
        "release": rel.version,
        "task": rel.task,
        "status": rel.status,
        "as_of": iso(as_of.timestamp()),
        "modes": sorted(set(modes)),
        "trials": registry.trials(version=rel.version, running=False),
        "rules": rules.to_json(),
        "validated_auroc": validated,
        "review_budget_per_100": budget,
        "sites": sites_out,
        "summary": {
            "decision": summary,
            "by_site": {s["site"]: s["verdict"]["decision"] for s in sites_out},
        },
    }
    return _clean(dossier)


def _site_figures(
    name: str,
    pairs: list[tuple[_Record, _Record | None]],
    outcomes: dict[int, tuple[int, float]],
    spec: Any,
    rules: TrialRules,
    budget: float | None,
    validated: float,
    n_boot: int,
    seed: int,
    failed: int,
) -> dict[str, Any]:
    cand = [r for r, _ in pairs]
    has_y = np.array([r.outcome_seq in outcomes for r in cand], dtype=bool)
    y = np.array([outcomes.get(r.outcome_seq, (0, 0.0))[0] for r in cand], dtype=np.int64)
    t_out = np.array([outcomes.get(r.outcome_seq, (0, 0.0))[1] for r in cand], dtype=float)
    p = np.array([r.probability for r in cand], dtype=float)
    thr = np.array([r.threshold for r in cand], dtype=float)
    queued = np.array([r.queued for r in cand], dtype=bool)
    times = np.array([r.time for r in cand], dtype=float)
    frame = pd.DataFrame.from_records([r.inputs for r in cand]) if cand else pd.DataFrame()
    masks = group_masks(spec, frame) if len(frame) else {}

    def figures(
        idx: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, routed: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray | None]:
        n_y = int(has_y[idx].sum())
        counts = resample_counts(n_y, n_boot=n_boot, seed=seed) if n_y else None
        sub = {a: {g: m[idx] for g, m in gs.items()} for a, gs in masks.items()}
        fig = _model_figures(
            probs,
            thresholds,
            routed,
            y[idx],
            has_y[idx],
            times[idx],
            t_out[idx],
            counts,
            sub,
            rules,
        )
        return fig, counts

    everything = np.arange(len(cand))
    c_fig, _ = figures(everything, p, thr, queued)
    out: dict[str, Any] = {
        "site": name,
        "modes": sorted({r.mode for r in cand}),
        "n_candidate": len(cand),
        "n_paired": sum(lv is not None for _, lv in pairs),
        "n_failed": failed,
        "candidate": c_fig,
        "live": None,
        "live_releases": sorted({lv.release for _, lv in pairs if lv is not None}),
        "auroc_difference": None,
        "disagreement": None,
    }
    reference = f"its validated AUROC {validated:.3f}"
    difference: dict[str, Any] | str = c_fig["auroc"] if isinstance(c_fig["auroc"], str) else {}
    idx = np.array([i for i, (_, lv) in enumerate(pairs) if lv is not None], dtype=np.int64)
    if len(idx):
        live = [pairs[i][1] for i in idx]
        lp = np.array([lv.probability for lv in live if lv is not None], dtype=float)
        lthr = np.array([lv.threshold for lv in live if lv is not None], dtype=float)
        lq = np.array([lv.queued for lv in live if lv is not None], dtype=bool)
        l_fig, counts = figures(idx, lp, lthr, lq)
        out["live"] = l_fig
        reference = "the live release"
        # the candidate on the same paired requests, for the paired difference
        c_pair, _ = figures(idx, p[idx], thr[idx], queued[idx])
        if isinstance(c_pair["auroc"], str) or counts is None:
            difference = c_pair["auroc"]
        else:
            ok = has_y[idx]
            yy, pc, pl = y[idx][ok], p[idx][ok], lp[ok]
            reps = auroc_replicates(yy, pc, counts) - auroc_replicates(yy, pl, counts)
            difference = {"value": auroc(yy, pc) - auroc(yy, pl), "ci": list(percentile_ci(reps))}
        cf, lf = p[idx] >= thr[idx], lp >= lthr
        yi, hi = y[idx], has_y[idx]
        out["disagreement"] = {
            side: {
                "n": int(mask.sum()),
                "n_outcomes": int((mask & hi).sum()),
                "n_events": int((mask & hi & (yi == 1)).sum()),
            }
            for side, mask in (("candidate_only", cf & ~lf), ("live_only", lf & ~cf))
        }
    elif not isinstance(c_fig["auroc"], str):
        a = c_fig["auroc"]
        difference = {
            "value": a["value"] - validated,
            "ci": [v - validated for v in a["ci"]],
            "against": "validated",
        }
    out["auroc_difference"] = difference
    out["verdict"] = _verdict(c_fig, difference, reference, budget, rules)
    return out


def _clean(obj: Any) -> Any:
    """Return ``obj`` with every non-finite number as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.floating | np.integer):
        return _clean(obj.item())
    return obj


# -- the written dossier ---------------------------------------------------------------------


def _plots(registry: Registry, ledger: Any, dossier: dict[str, Any]) -> dict[str, str]:
    """Return, per site, a ROC plot of candidate and live against outcomes (PNG data URI)."""
    from clinical_mlops.evaluation.plots import roc_plot

    out: dict[str, str] = {}
    data = read_trial_records(
        ledger,
        dossier["release"],
        until=datetime.fromisoformat(dossier["as_of"].replace("Z", "+00:00")),
        modes=dossier["modes"],
    )
    for s in dossier["sites"]:
        if isinstance(s["candidate"]["auroc"], str):
            continue
        y, pc, pl = [], [], []
        for rec, paired in data["candidate"]:
            if rec.site != s["site"]:
                continue
            live = None
            if paired is not None:
                live = data["live"].get(paired)
            seq = live.seq if live is not None else rec.seq
            if seq in data["outcomes"]:
                y.append(data["outcomes"][seq][0])
                pc.append(rec.probability)
                pl.append(live.probability if live is not None else math.nan)
        yy = np.asarray(y, dtype=np.int64)
        live_p = np.asarray(pl, dtype=float)
        out[s["site"]] = roc_plot(
            yy,
            np.asarray(pc, dtype=float),
            live_p if np.isfinite(live_p).all() else None,
            labels=("candidate", "live release"),
        )
    return out


def render_trial_dossier(dossier: dict[str, Any], plots: dict[str, str]) -> str:
    """Return the dossier as one HTML page (plots inline)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    from clinical_mlops.evaluation.render import fmt_num

    env = Environment(
        loader=PackageLoader("clinical_mlops.monitoring", "templates"),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num)
    env.tests["mapping"] = lambda v: isinstance(v, dict)
    return env.get_template("trial_dossier.html.j2").render(d=dossier, plots=plots)


def write_trial_dossier(
    registry: Registry, ledger: Any, dossier: dict[str, Any], out: Path
) -> dict[str, Path]:
    """Write ``trial.json`` and ``trial.html`` into ``out``; return their paths."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    stem = dossier["release"].replace("@", "-") + "-trial"
    paths = {"json": out / f"{stem}.json", "html": out / f"{stem}.html"}
    paths["json"].write_text(
        json.dumps(dossier, indent=2, sort_keys=True, allow_nan=False),
        encoding="utf-8",
    )
    html = render_trial_dossier(dossier, _plots(registry, ledger, dossier))
    paths["html"].write_text(html, encoding="utf-8")
    return paths
