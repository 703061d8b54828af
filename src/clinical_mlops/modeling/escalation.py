"""Escalation policies resolved for one release: who goes to human review, within a budget (R-H5).

A task spec declares the policy (:class:`~clinical_mlops.tasks.spec.EscalationPolicy`):
the conditions that route a case to review, in precedence order, the review budget
``max_reviews_per_100`` and what happens beyond it. A release fixes its operating
threshold; :func:`resolve` turns policy + threshold into numbers, on the model's
held-out conformal-calibration stays (the :class:`EscalationReference` training keeps,
never the test set):

- **The review band** (condition ``near_threshold``). Sized by a share ``b`` per 100:
  the band is ``|p - t| <= w`` around the threshold ``t`` with ``w`` the largest
  half-width that holds at most ``m`` calibration stays, ``m`` the largest count with
  ``(m + 1) / (n + 1) <= b / 100``. For exchangeable stays and distinct scores, the rank
  argument of split conformal prediction bounds the chance that a new stay falls in the
  band by ``(m + 1) / (n + 1)``, so the expected band load is at most ``b`` per 100.
  A declared band (``band: [lo, hi]``) is used as written.
- **The budget.** Calibration stays meeting any condition are ranked by the first
  condition they meet (its place in ``review_on``), then by calibrated risk, highest
  first. With ``beyond_budget: defer`` the first ``K`` are reviewed, ``K`` the largest
  count with ``(K + 1) / (n + 1) <= budget / 100``; the rank of the ``K``-th becomes the
  **cutoff**, and a case ranked below it is flagged ``review_deferred`` and not queued.
  Conditions that depend on the moment (``drift_alert``) or on inputs the calibration
  stays cannot show are never deferred by the cutoff's risk part: they rank by their place.

The resolution is deterministic (same model, threshold and policy, same numbers) and is
recorded in the release's ``deployment.json`` and validation report, so the service, the
evidence and a replay all route the same cases. The conformal sets keep their own
guarantee (coverage per class at ``1 - alpha``); they are shown, and route a case only
when the policy names ``ambiguous_set``, ``empty_set`` or ``low_confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.tasks.spec import EscalationPolicy
from clinical_mlops.vocabulary import REVIEW_REASONS, Flag

__all__ = [
    "REFERENCE_FILE",
    "EscalationReference",
    "ResolvedEscalation",
    "Routing",
    "input_flags",
    "resolve",
]

REFERENCE_FILE = "escalation_reference.json"
REFERENCE_SCHEMA = "clinical-mlops/escalation-reference/v1"
RESOLVED_FORMAT = "clinical-mlops/escalation/v1"
#: the flags that depend on a stay's inputs, not on its score: kept per calibration stay
_INPUT_FLAGS = (Flag.MISSING_INPUTS, Flag.OUT_OF_SCOPE, Flag.OUT_OF_RANGE)
#: conditions known only when a case is scored (never present among calibration stays)
_LIVE_CONDITIONS = (str(Flag.DRIFT_ALERT),)


def input_flags(
    p: np.ndarray,
    sets: np.ndarray,
    *,
    missing_count: np.ndarray,
    n_features: int,
    max_missing: float,
    out_of_range: np.ndarray | None = None,
    too_early: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Return each flag a scored prediction can carry, as a bool array per flag (one definition).

    ``sets``: bool (n, 2), column 0 = "no" in the conformal set, column 1 = "yes";
    ``missing_count``: inputs not measured per case; ``max_missing``: the cohort's
    ``max_missing_feature_fraction``; ``out_of_range`` (beyond the validation profile)
    and ``too_early`` (scored before the prediction time) when known, else all false.
    """
    p = np.asarray(p, dtype=np.float64)
    sets = np.asarray(sets, dtype=bool).reshape(len(p), 2)
    size = sets.sum(axis=1)
    missing = np.asarray(missing_count, dtype=np.int64)
    none = np.zeros(len(p), dtype=bool)
    early = none if too_early is None else np.asarray(too_early, dtype=bool)
    return {
        Flag.LOW_CONFIDENCE: size != 1,
        Flag.AMBIGUOUS_SET: size == 2,
        Flag.EMPTY_SET: size == 0,
        Flag.OUT_OF_RANGE: none if out_of_range is None else np.asarray(out_of_range, dtype=bool),
        Flag.MISSING_INPUTS: missing > 0,
        Flag.OUT_OF_SCOPE: (missing / max(n_features, 1) > max_missing) | early,
    }


@dataclass(frozen=True)
class EscalationReference:
    """Held-out calibration stays as the escalation policy sees them: risk, set, input flags.

    The stays are the conformal-calibration half of the training period (the model
    never trained on them, the test set is not among them). No identifier is kept:
    only calibrated probabilities (rounded to 1e-9), conformal sets and input flags.
    """

    probabilities: np.ndarray
    sets: np.ndarray
    flags: dict[str, np.ndarray]

    @classmethod
    def build(
        cls,
        p: np.ndarray,
        sets: np.ndarray,
        *,
        missing_count: np.ndarray,
        n_features: int,
        max_missing: float,
    ) -> EscalationReference:
        """Return the reference of calibration stays scored ``p`` with conformal ``sets``."""
        flags = input_flags(
            p, sets, missing_count=missing_count, n_features=n_features, max_missing=max_missing
        )
        order = np.lexsort((np.asarray(sets)[:, 1], np.asarray(sets)[:, 0], np.round(p, 9)))
        return cls(
            probabilities=np.round(np.asarray(p, dtype=np.float64), 9)[order],
            sets=np.asarray(sets, dtype=bool)[order],
            flags={k: flags[k][order] for k in _INPUT_FLAGS},
        )

    def all_flags(self) -> dict[str, np.ndarray]:
        """Return every flag of the calibration stays (score flags recomputed from the sets)."""
        base = input_flags(
            self.probabilities,
            self.sets,
            missing_count=np.zeros(len(self.probabilities)),
            n_features=1,
            max_missing=1.0,
        )
        return base | dict(self.flags)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REFERENCE_SCHEMA,
            "stays": "held-out conformal-calibration stays of the training period",
            "n": len(self.probabilities),
            "probabilities": [float(v) for v in self.probabilities],
            "sets": ["".join("1" if b else "0" for b in row) for row in self.sets],
            "flags": {
                k: [int(i) for i in np.flatnonzero(v)] for k, v in sorted(self.flags.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EscalationReference:
        if data.get("schema") != REFERENCE_SCHEMA:
            raise ValueInvalid(
                f"escalation reference: expected schema {REFERENCE_SCHEMA}, "
                f"got {data.get('schema')!r}"
            )
        p = np.asarray(data["probabilities"], dtype=np.float64)
        sets = np.array([[c == "1" for c in row] for row in data["sets"]], dtype=bool)
        flags = {}
        for k in _INPUT_FLAGS:
            mask = np.zeros(len(p), dtype=bool)
            mask[np.asarray(data["flags"].get(k, []), dtype=np.int64)] = True
            flags[str(k)] = mask
        return cls(probabilities=p, sets=sets.reshape(len(p), 2), flags=flags)


@dataclass(frozen=True)
class Routing:
    """Where each case goes: meets a condition (``eligible``), ``queued``, or ``deferred``."""

    conditions: np.ndarray  # bool (n, len(review_on)): which conditions each case meets
    review_on: tuple[str, ...]
    eligible: np.ndarray
    queued: np.ndarray
    deferred: np.ndarray

    def reasons(self, i: int) -> list[str]:
        """Return the conditions case ``i`` meets, in the policy's precedence order."""
        return [c for c, met in zip(self.review_on, self.conditions[i], strict=True) if met]


def _largest_count(share_per_100: float, n: int) -> int:
    """Return the largest ``m`` with ``(m + 1) / (n + 1) <= share / 100`` (0 at least)."""
    return max(math.floor(share_per_100 / 100.0 * (n + 1) + 1e-9) - 1, 0)


@dataclass(frozen=True)
class ResolvedEscalation:
    """An escalation policy in numbers for one release (threshold, band, budget cutoff)."""

    review_on: tuple[str, ...]
    threshold: float
    band: tuple[float, float] | None
    band_sizing: str  # "declared" | "sized on calibration stays" | "not used"
    max_reviews_per_100: float
    beyond_budget: str
    #: a case is queued when its first condition ranks before ``condition``, or is it and its
    #: risk is at least ``min_probability`` (None: no case of it); None: every eligible case
    cutoff: dict[str, Any] | None
    calibration: dict[str, Any]

    # -- routing -----------------------------------------------------------------------
    def conditions(
        self, p: np.ndarray, flags: Mapping[str, np.ndarray], *, drift_alert: bool = False
    ) -> np.ndarray:
        """Return bool (n, len(review_on)): the conditions each case meets."""
        p = np.asarray(p, dtype=np.float64)
        cols = []
        for c in self.review_on:
            if c == Flag.NEAR_THRESHOLD:
                if self.band is None:
                    cols.append(np.zeros(len(p), dtype=bool))
                else:
                    lo, hi = self.band
                    cols.append((p >= lo) & (p <= hi))
            elif c == Flag.DRIFT_ALERT:
                cols.append(np.full(len(p), drift_alert, dtype=bool) & (p >= self.threshold))
            else:
                cols.append(np.asarray(flags[c], dtype=bool))
        return np.column_stack(cols) if cols else np.zeros((len(p), 0), dtype=bool)

    def route(
        self, p: np.ndarray, flags: Mapping[str, np.ndarray], *, drift_alert: bool = False
    ) -> Routing:
        """Return the routing of cases scored ``p`` with ``flags`` (see :func:`input_flags`)."""
        p = np.asarray(p, dtype=np.float64)
        met = self.conditions(p, flags, drift_alert=drift_alert)
        eligible: np.ndarray = np.asarray(met.any(axis=1), dtype=bool)
        queued: np.ndarray = eligible.copy()
        if self.cutoff is not None and met.shape[1]:
            first = met.argmax(axis=1)
            rank = self.review_on.index(self.cutoff["condition"])
            floor = self.cutoff["min_probability"]
            at_rank = (first == rank) & (p >= (math.inf if floor is None else floor))
            live = np.isin(
                first, [i for i, c in enumerate(self.review_on) if c in _LIVE_CONDITIONS]
            )
            queued = np.asarray(eligible & ((first < rank) | at_rank | live), dtype=bool)
        return Routing(
            conditions=met,
            review_on=self.review_on,
            eligible=eligible,
            queued=queued,
            deferred=np.asarray(eligible & ~queued, dtype=bool),
        )

    # -- words and records -------------------------------------------------------------
    def statement(self) -> str:
        """Return the policy in words, with the guarantee it gives."""
        words = [REVIEW_REASONS.get(c, c) for c in self.review_on]
        parts = [f"A case goes to clinician review when {', or '.join(words) or 'never'}."]
        if self.band is not None:
            lo, hi = self.band
            parts.append(
                f"The review band is calibrated risk {lo:.1%} to {hi:.1%} around the alert "
                f"threshold {self.threshold:.0%} ({self.band_sizing})."
            )
            bound = self.calibration.get("band_bound_per_100")
            if bound is not None:
                parts.append(
                    f"For stays exchangeable with the {self.calibration['n']} held-out "
                    f"calibration stays, the chance a stay falls in the band is at most "
                    f"{bound:.1f} in 100 (rank bound)."
                )
        parts.append(f"Review budget: {self.max_reviews_per_100:g} per 100 stays;")
        if self.cutoff is None:
            parts[-1] += " every case meeting a condition is queued."
        else:
            parts[-1] += (
                " beyond it (ranked by condition, then risk) cases are flagged as deferred, "
                "not queued."
            )
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESOLVED_FORMAT,
            "review_on": [str(c) for c in self.review_on],
            "threshold": self.threshold,
            "band": None if self.band is None else [self.band[0], self.band[1]],
            "band_sizing": self.band_sizing,
            "max_reviews_per_100": self.max_reviews_per_100,
            "beyond_budget": self.beyond_budget,
            "cutoff": self.cutoff,
            "calibration": self.calibration,
            "statement": self.statement(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedEscalation:
        if data.get("format") != RESOLVED_FORMAT:
            raise ValueInvalid(
                f"escalation: expected format {RESOLVED_FORMAT}, got {data.get('format')!r}"
            )
        band = data.get("band")
        return cls(
            review_on=tuple(str(c) for c in data["review_on"]),
            threshold=float(data["threshold"]),
            band=None if band is None else (float(band[0]), float(band[1])),
            band_sizing=str(data["band_sizing"]),
            max_reviews_per_100=float(data["max_reviews_per_100"]),
            beyond_budget=str(data["beyond_budget"]),
            cutoff=data.get("cutoff"),
            calibration=dict(data["calibration"]),
        )


def _sized_band(p: np.ndarray, threshold: float, share_per_100: float) -> tuple[float, int]:
    """Return the half-width holding at most the share's count of ``p``, and that count."""
    n = len(p)
    m = _largest_count(share_per_100, n)
    d = np.sort(np.abs(p - threshold))
    if m == 0 or n == 0:
        return -1.0, 0
    # The largest width whose closed band holds at most m stays: stop before a tie at d[m].
    if m >= n:
        return float(d[-1]), n
    cut = d[m]
    held = int(np.searchsorted(d, cut, side="left"))
    if held == 0:
        return -1.0, 0
    return float(d[held - 1]), held


def resolve(
    policy: EscalationPolicy, *, threshold: float, reference: EscalationReference
) -> ResolvedEscalation:
    """Return ``policy`` resolved for a release at ``threshold`` on the calibration stays.

    Raises :class:`ValueInvalid` naming ``escalation.near_threshold.band`` when a declared
    band does not hold the threshold.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueInvalid(f"threshold: must lie strictly between 0 and 1, got {threshold}")
    p = reference.probabilities
    n = len(p)
    review_on = tuple(str(c) for c in policy.review_on)
    calibration: dict[str, Any] = {
        "n": n,
        "stays": "held-out conformal-calibration stays of the training period",
    }
    band: tuple[float, float] | None = None
    sizing = "not used"
    if Flag.NEAR_THRESHOLD in review_on:
        declared = policy.near_threshold.band
        if declared is not None:
            lo, hi = declared
            if not lo <= threshold <= hi:
                raise ValueInvalid(
                    f"escalation.near_threshold.band: [{lo:g}, {hi:g}] does not hold the "
                    f"release's operating threshold {threshold:g}"
                )
            band, sizing = (float(lo), float(hi)), "declared"
        else:
            share = policy.band_share_per_100 or 0.0
            width, held = _sized_band(p, threshold, share)
            sizing = f"sized to hold at most {share:g} in 100 held-out calibration stays"
            if width >= 0:
                band = (
                    round(max(threshold - width, 0.0), 9),
                    round(min(threshold + width, 1.0), 9),
                )
                calibration["band_bound_per_100"] = round(100.0 * (held + 1) / (n + 1), 4)
            calibration["band_stays"] = held
    resolved = ResolvedEscalation(
        review_on=review_on,
        threshold=float(threshold),
        band=band,
        band_sizing=sizing,
        max_reviews_per_100=float(policy.max_reviews_per_100),
        beyond_budget=policy.beyond_budget,
        cutoff=None,
        calibration=calibration,
    )
    routing = resolved.route(p, reference.all_flags())
    eligible = int(routing.eligible.sum())
    calibration["eligible_per_100"] = round(100.0 * eligible / max(n, 1), 4)
    cutoff: dict[str, Any] | None = None
    if policy.beyond_budget == "defer" and n:
        k = _largest_count(policy.max_reviews_per_100, n)
        if eligible > k:
            first = routing.conditions.argmax(axis=1)[routing.eligible]
            risk = p[routing.eligible]
            order = np.lexsort((-risk, first))  # by condition rank, then risk, highest first
            if k == 0:
                cutoff = {"condition": review_on[0], "min_probability": None}
            else:
                last = order[k - 1]
                cutoff = {
                    "condition": review_on[int(first[last])],
                    "min_probability": float(risk[last]),
                }
    final = replace(resolved, cutoff=cutoff, calibration=calibration)
    queued = final.route(p, reference.all_flags()).queued
    calibration["reviews_per_100"] = round(100.0 * int(queued.sum()) / max(n, 1), 4)
    return final
