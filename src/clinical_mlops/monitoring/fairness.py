"""Fairness monitoring (R-O2): per-subgroup metrics on linked outcomes and the gaps between them.

For each protected attribute of the task spec and each of its groups, over the
same outcome window as the overall metrics: AUROC (with its Hanley-McNeil
standard error), precision, recall and F1 at the operating threshold (fairlearn's
and scikit-learn's definitions: precision = PPV, recall = sensitivity), and per
attribute the AUROC gap (best group minus worst group).

The alert asks whether one group has fallen behind *since validation*. A gap the
release was validated and approved with is the baseline (it is in the validation
report and was gated); what must not happen silently is that a group degrades
more than the population does. For group ``g`` (a group too small to have a
validated AUROC of its own takes the population's)::

    widening_g = (validated_g - live_g) - (validated_all - live_all)

and the fairness rule fires when ``widening_g - z * se_g`` exceeds the task's
subgroup AUROC tolerance, ``z`` being the one-sided normal quantile at the
configured confidence, Bonferroni-corrected over every group compared. Groups
with fewer than ``fairness_min_group_positives`` stays with or without the
outcome are not compared (their AUROC is reported as None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from clinical_mlops.monitoring.outcomes import auroc_se, rank_auroc

__all__ = ["GroupFinding", "group_metrics", "subgroup_findings"]


def group_metrics(
    y: np.ndarray, p: np.ndarray, *, threshold: float, min_per_class: int
) -> dict[str, Any]:
    """Return n, positives, AUROC and its SE, precision, recall and F1 of one group."""
    n, n_pos = len(y), int(np.sum(y))
    flagged = p >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = n_pos - tp
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / n_pos if n_pos else None
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    area = se = None
    if n_pos >= min_per_class and n - n_pos >= min_per_class:
        area = rank_auroc(y, p)
        se = auroc_se(area, n_pos, n - n_pos)
    return {
        "n": n,
        "n_positive": n_pos,
        "auroc": area,
        "auroc_se": se,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


@dataclass(frozen=True)
class GroupFinding:
    """How far one subgroup has fallen behind the population since validation."""

    attribute: str
    group: str
    live: float
    validated: float
    widening: float
    se: float
    lower_bound: float

    @property
    def subgroup(self) -> str:
        return f"{self.attribute}={self.group}"


def subgroup_findings(
    groups: dict[str, dict[str, dict[str, Any]]],
    *,
    live_overall: float,
    validated_overall: float,
    validated_groups: dict[str, float],
    confidence: float,
) -> list[GroupFinding]:
    """Return a finding per comparable group, the Bonferroni-corrected lower bound included.

    ``groups`` is ``{attribute: {group: group_metrics(...)}}``; ``validated_groups``
    maps ``"attribute=group"`` to the validated AUROC. A group too small to be
    validated on its own is held to the population's validated AUROC.
    """
    comparable = [
        (attr, group, m)
        for attr, by_group in groups.items()
        for group, m in by_group.items()
        if m["auroc"] is not None
    ]
    if not comparable:
        return []
    z = float(stats.norm.ppf(1 - (1 - confidence) / len(comparable)))
    out = []
    for attr, group, m in comparable:
        validated = validated_groups.get(f"{attr}={group}", validated_overall)
        widening = (validated - m["auroc"]) - (validated_overall - live_overall)
        out.append(
            GroupFinding(
                attribute=attr,
                group=group,
                live=float(m["auroc"]),
                validated=float(validated),
                widening=float(widening),
                se=float(m["auroc_se"]),
                lower_bound=float(widening - z * m["auroc_se"]),
            )
        )
    return out
