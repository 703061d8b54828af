"""Data drift: inputs and scores against the release's reference profile, and score-stream detectors.

The reference is the bundle's ``reference_profile.json`` (aggregates of the locked
test stays, :mod:`clinical_mlops.registry.profile`). Every input is cut into the
profile's own bins, with the profile's own rule, so production and reference are
counted the same way:

* numeric inputs: the profile's decile edges; a value ``v`` falls in bin ``k`` when
  ``edge[k] <= v < edge[k+1]`` (values beyond the outer edges join the end bins);
* flags: two bins (0 and 1), the reference fraction of 1 being the profile mean;
* categorical inputs: one bin per category holding at least :data:`RARE` (2 %) of
  the reference, plus one pooling the rarer ones and any category the reference
  never saw (so a chi-square test never rests on expected counts near zero);
* the score: the profile's 20 equal-width bins of calibrated probability.

Missing values are counted apart (missingness) and left out of the bins.

Statistics, each over a look-back of several windows (ten stays make no distribution):

* **PSI** (population stability index) ``sum((a - e) * ln(a / e))`` over bins, with
  empty bins floored at :data:`PSI_FLOOR`; 0.1 is commonly read as a moderate and
  0.2 as a significant shift.
* **KS** for numeric inputs and the score, computed on the reference bin edges
  (the grouped Kolmogorov-Smirnov statistic, the largest gap between the two
  cumulative distributions at the edges); its p-value from the Kolmogorov
  distribution (``scipy.special.kolmogorov`` with Stephens' small-sample
  correction) is conservative for grouped or discrete data, so ties (GCS,
  isotonic probabilities) cannot make it fire by themselves.
* **chi-square** goodness of fit for flags and categorical inputs, Pearson's
  statistic with its p-value from ``scipy.special.chdtrc`` (the same as
  ``scipy.stats.chisquare``, without its per-call overhead).
* **missingness**: the fraction missing and an exact binomial test against the
  reference fraction (``scipy.stats.binomtest``).

ADWIN and Page-Hinkley run on the score stream and on every numeric input and
flag, one value per prediction (missing values skipped). They are river's own
(``river.drift.ADWIN``, ``river.drift.PageHinkley``), wrapped only to give them
one interface (:class:`StreamDetector`). Each stream is first standardised
against the reference (:func:`standardised`) so one set of parameters, in
reference standard deviations, serves inputs of any unit: a flag becomes
``(x - p) / sqrt(p (1 - p))``; a numeric input its reference mid-rank (the
middle of its reference bin on the cumulative scale, uniform under no drift),
centred and scaled; the score its probability, centred and scaled by the
reference score histogram. Page-Hinkley runs without forgetting (``alpha = 1``):
with forgetting, its cumulative sum settles into a random walk whose swings alone
cross the threshold on long stable streams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from river import drift as river_drift
from scipy import special, stats

from clinical_mlops.registry.profile import FeatureProfile, ScoreProfile

__all__ = [
    "MISSING",
    "PSI_FLOOR",
    "RARE",
    "Adwin",
    "BinnedReference",
    "InputBlock",
    "PageHinkley",
    "StreamDetector",
    "chi_square_p",
    "detection_times",
    "grouped_ks",
    "missingness_p",
    "psi",
    "reference_bins",
    "score_reference",
    "standardised",
]

#: Bin code of a missing value.
MISSING = -1
#: Fractions below this are raised to it before taking logs (an empty bin is not infinitely far).
PSI_FLOOR = 1e-4
#: Categories rarer than this in the reference share one bin.
RARE = 0.02


@dataclass(frozen=True)
class BinnedReference:
    """One monitored quantity's reference distribution and the rule that bins new values.

    ``kind`` is ``numeric`` (edges), ``flag`` (0/1) or ``categorical`` (labels);
    ``fractions`` sum to 1 over the bins; ``missing_fraction`` is the reference
    share of missing values.
    """

    name: str
    kind: str
    fractions: np.ndarray
    missing_fraction: float
    inner_edges: np.ndarray | None = None
    labels: tuple[str, ...] = ()

    @property
    def n_bins(self) -> int:
        return len(self.fractions)

    @property
    def ordered(self) -> bool:
        """True when the bins have an order (numeric, score), so a KS statistic means something."""
        return self.kind == "numeric"

    def codes(self, values: Any) -> np.ndarray:
        """Return the bin code of each value (:data:`MISSING` for a missing one)."""
        if self.kind == "categorical":
            index = {label: i for i, label in enumerate(self.labels)}
            other = len(self.labels) - 1
            out = np.empty(len(values), dtype=np.int16)
            for i, v in enumerate(values):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    out[i] = MISSING
                else:
                    out[i] = index.get(str(v), other)
            return out
        x = np.asarray(
            [np.nan if v is None else v for v in values]
            if not isinstance(values, np.ndarray)
            else values,
            dtype=float,
        )
        if self.kind == "flag":
            codes = (x >= 0.5).astype(np.int16)
        elif self.kind == "constant":
            codes = np.zeros(len(x), dtype=np.int16)
        else:
            assert self.inner_edges is not None
            codes = np.searchsorted(self.inner_edges, x, side="right").astype(np.int16)
        codes[np.isnan(x)] = MISSING
        return codes


def reference_bins(features: Mapping[str, FeatureProfile]) -> dict[str, BinnedReference]:
    """Return a :class:`BinnedReference` per input of a reference profile (in profile order).

    Inputs whose reference has fewer than two bins (a constant column) are left
    out: no distribution shift can be measured on them, only missingness.
    """
    out: dict[str, BinnedReference] = {}
    for name, entry in features.items():
        missing = float(entry.missing_fraction)
        if entry.kind == "categorical":
            cats = {str(k): float(v) for k, v in (entry.categories or {}).items()}
            common = sorted(c for c, f in cats.items() if f >= RARE)
            rare = sum(f for c, f in cats.items() if f < RARE)
            labels = (*common, "(other)")
            fractions = np.array([cats[c] for c in common] + [rare], dtype=float)
            ref = BinnedReference(
                name, "categorical", _normalised(fractions), missing, None, labels
            )
        elif entry.kind == "flag":
            mean = float("nan") if entry.mean is None else float(entry.mean)
            if not math.isfinite(mean):
                continue
            ref = BinnedReference(name, "flag", np.array([1.0 - mean, mean]), missing)
        else:
            edges = np.asarray(entry.edges or [], dtype=float)
            fractions = np.asarray(entry.fractions or [], dtype=float)
            if len(fractions) < 2 or len(edges) != len(fractions) + 1:
                ref = BinnedReference(name, "constant", np.array([1.0]), missing)
            else:
                ref = BinnedReference(
                    name, "numeric", _normalised(fractions), missing, edges[1:-1].copy()
                )
        out[name] = ref
    return out


def score_reference(score: ScoreProfile) -> BinnedReference:
    """Return the reference distribution of calibrated probability (profile score histogram)."""
    edges = np.asarray(score.bin_edges, dtype=float)
    fractions = np.asarray(score.fractions, dtype=float)
    return BinnedReference("score", "numeric", _normalised(fractions), 0.0, edges[1:-1].copy())


def _normalised(fractions: np.ndarray) -> np.ndarray:
    total = fractions.sum()
    return fractions / total if total > 0 else fractions


def psi(counts: np.ndarray, reference: np.ndarray) -> float:
    """Return the PSI of observed bin ``counts`` against reference bin fractions (nan if empty)."""
    n = counts.sum()
    if n <= 0:
        return float("nan")
    a = np.maximum(counts / n, PSI_FLOOR)
    e = np.maximum(reference, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def grouped_ks(counts: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Return the grouped KS statistic and its (conservative) p-value for ordered bins."""
    n = int(counts.sum())
    if n <= 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(counts) / n - np.cumsum(reference))))
    root = math.sqrt(n)
    return d, float(special.kolmogorov((root + 0.12 + 0.11 / root) * d))


def chi_square_p(counts: np.ndarray, reference: np.ndarray) -> float:
    """Return the Pearson chi-square goodness-of-fit p-value of ``counts`` against ``reference``.

    Expected counts are floored at :data:`PSI_FLOOR` so a bin the reference never
    filled does not divide by zero (rare categories are pooled by :func:`reference_bins`).
    """
    n = counts.sum()
    if n <= 0 or len(counts) < 2:
        return float("nan")
    expected = np.maximum(reference * n, PSI_FLOOR)
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return float(special.chdtrc(len(counts) - 1, statistic))


def missingness_p(missing: int, n: int, reference: float) -> float:
    """Return the two-sided exact binomial p-value of ``missing`` of ``n`` against ``reference``."""
    if n <= 0:
        return float("nan")
    ref = min(max(reference, 1e-6), 1 - 1e-6)
    return float(stats.binomtest(int(missing), int(n), ref).pvalue)


class InputBlock:
    """Running bin counts of many inputs side by side, so a window's statistics are a few array ops.

    Built once per monitor run from every input's bin codes; :meth:`stats` returns,
    for the records ``lo:hi``, each input's non-missing count, missing count, PSI,
    and the KS (ordered inputs) or chi-square (flags, categories) statistic and
    p-value — the same numbers as :func:`psi`, :func:`grouped_ks` and
    :func:`chi_square_p` one input at a time.
    """

    def __init__(self, refs: list[BinnedReference], codes: list[np.ndarray], *, n_records: int):
        self.refs = refs
        self.names = [r.name for r in refs]
        sizes = np.array([r.n_bins for r in refs], dtype=np.int64)
        self.starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
        self.sizes = sizes
        self.ordered = np.array([r.ordered for r in refs], dtype=bool)
        self.expected = np.concatenate([r.fractions for r in refs]) if refs else np.zeros(0)
        self._e_floor = np.maximum(self.expected, PSI_FLOOR)
        self._e_cum = _segment_cumsum(self.expected, self.starts, sizes)
        n = n_records
        self.cum = np.zeros((n + 1, int(sizes.sum())), dtype=np.int32)
        self.missing = np.zeros((n + 1, len(refs)), dtype=np.int32)
        for j, (ref, c) in enumerate(zip(refs, codes, strict=True)):
            start = int(self.starts[j])
            onehot = c[:, None] == np.arange(ref.n_bins, dtype=c.dtype)[None, :]
            np.cumsum(onehot, axis=0, out=self.cum[1:, start : start + ref.n_bins])
            np.cumsum(c == MISSING, out=self.missing[1:, j])

    def stats(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Return per-input arrays ``n``, ``missing``, ``psi``, ``ks``, ``p`` for records ``lo:hi``."""
        counts = (self.cum[hi] - self.cum[lo]).astype(float)
        missing = (self.missing[hi] - self.missing[lo]).astype(float)
        if not len(counts):
            empty = np.zeros(0)
            return {"n": empty, "missing": missing, "psi": empty, "ks": empty, "p": empty}
        n = np.add.reduceat(counts, self.starts)
        n_rep = np.repeat(n, self.sizes)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n_rep > 0, counts / np.maximum(n_rep, 1.0), 0.0)
            a = np.maximum(share, PSI_FLOOR)
            psi_all = np.add.reduceat((a - self._e_floor) * np.log(a / self._e_floor), self.starts)
            gap = np.abs(_segment_cumsum(share, self.starts, self.sizes) - self._e_cum)
            ks = np.maximum.reduceat(gap, self.starts)
            root = np.sqrt(n)
            p_ks = special.kolmogorov((root + 0.12 + 0.11 / np.maximum(root, 1e-9)) * ks)
            exp = np.maximum(self.expected * n_rep, PSI_FLOOR)
            chi = np.add.reduceat((counts - exp) ** 2 / exp, self.starts)
            p_chi = special.chdtrc(self.sizes - 1, chi)
        is_empty = n <= 0
        psi_all[is_empty] = np.nan
        ks = np.where(is_empty | ~self.ordered, np.nan, ks)
        p = np.where(self.ordered, p_ks, p_chi)
        p[is_empty] = np.nan
        return {"n": n, "missing": missing, "psi": psi_all, "ks": ks, "p": p}


def _segment_cumsum(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Return the cumulative sum of ``values`` restarted at every segment start."""
    if len(values) == 0:
        return values
    total = np.cumsum(values)
    before = np.r_[0.0, total][starts]
    return total - np.repeat(before, sizes)


def standardised(ref: BinnedReference, values: np.ndarray, *, score: bool = False) -> np.ndarray:
    """Return ``values`` on the reference's standard scale (mean 0, SD 1; NaN where missing).

    ``score=True`` treats ``values`` as probabilities scaled by the reference score
    histogram (bin mid-points); otherwise flags and numeric inputs as described in
    the module docstring. Categorical inputs have no order and are not standardised.
    """
    if ref.kind not in ("numeric", "flag") and not score:
        return np.full(len(values), np.nan)
    x = np.asarray(values, dtype=float)
    if score:
        assert ref.inner_edges is not None
        edges = np.r_[0.0, ref.inner_edges, 1.0]
        mids = (edges[:-1] + edges[1:]) / 2
        mean = float(np.sum(ref.fractions * mids))
        sd = math.sqrt(float(np.sum(ref.fractions * (mids - mean) ** 2)))
        return (x - mean) / sd if sd > 0 else np.full(len(x), np.nan)
    if ref.kind == "flag":
        p = float(ref.fractions[1])
        sd = math.sqrt(p * (1 - p))
        return (x - p) / sd if sd > 0 else np.full(len(x), np.nan)
    cum = np.cumsum(ref.fractions)
    mid = cum - ref.fractions / 2
    mean = float(np.sum(ref.fractions * mid))
    sd = math.sqrt(float(np.sum(ref.fractions * (mid - mean) ** 2)))
    codes = ref.codes(x)
    out = np.full(len(x), np.nan)
    ok = codes != MISSING
    if sd > 0:
        out[ok] = (mid[codes[ok]] - mean) / sd
    return out


def detection_times(detector: StreamDetector, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return the times at which ``detector`` detected a change, fed ``values`` in order.

    Missing (NaN) values are skipped. Detectors are causal: a detection at a
    value depends only on the values before it, so one pass serves every window.
    """
    hits = []
    ok = ~np.isnan(values)
    pairs = zip(times[ok].tolist(), values[ok].tolist(), strict=True)
    inner = getattr(detector, "river", None)
    if inner is not None:  # the same updates without a wrapper call per value
        for t, v in pairs:
            inner.update(v)
            if inner.drift_detected:
                hits.append(t)
    else:
        for t, v in pairs:
            if detector.update(v):
                hits.append(t)
    return np.asarray(hits, dtype=float)


class StreamDetector(Protocol):
    """A change detector fed one value at a time; ``update`` returns True when it detects."""

    name: str

    def update(self, value: float) -> bool: ...


class Adwin:
    """river's ADWIN (adaptive windowing) on a stream of values in [0, 1] or residuals."""

    def __init__(self, *, delta: float, name: str = "adwin"):
        self.name = name
        self.delta = delta
        self.river = river_drift.ADWIN(delta=delta)

    def update(self, value: float) -> bool:
        self.river.update(value)
        return bool(self.river.drift_detected)

    @property
    def estimation(self) -> float:
        """ADWIN's current mean of the values in its window."""
        return float(self.river.estimation)


class PageHinkley:
    """river's two-sided Page-Hinkley test on a stream of values."""

    def __init__(
        self, *, delta: float, threshold: float, min_instances: int, name: str = "page_hinkley"
    ):
        self.name = name
        self.river = river_drift.PageHinkley(
            min_instances=min_instances, delta=delta, threshold=threshold, alpha=1.0, mode="both"
        )

    def update(self, value: float) -> bool:
        self.river.update(value)
        return bool(self.river.drift_detected)
