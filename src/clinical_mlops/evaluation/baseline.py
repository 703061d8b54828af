"""A clinical baseline: the score clinicians already use, computed on the same test stays.

A task spec's ``clinical_baseline`` is a built-in points score (``sofa_like``,
``lace_like``: their point tables are below, as data), a points score declared in
the spec over its own features (``kind: points``), a column of a table task holding
the score as charted (``kind: column``), or ``kind: none`` with the written reason
there is none. :func:`score_for` returns the score (``None`` for ``none``).

The built-in SOFA-like score:

The Sequential Organ Failure Assessment (SOFA; Vincent et al., Intensive Care
Med 1996;22:707-710) scores six organ systems 0-4. The point table lives in
:data:`SOFA_LIKE` as data. What the 17 ICU features allow, and what was
approximated:

* coagulation (lowest platelets), liver (highest bilirubin) and central nervous
  system (lowest GCS) follow the published table;
* renal uses the highest creatinine only (no urine output is available);
* cardiovascular uses MAP < 70 mmHg for 1 point; the vasopressor flag carries no
  drug or dose, so any vasopressor scores 3 points (the published 2-4 points
  depend on the agent and dose);
* respiratory needs PaO2/FiO2, which is not available: it is replaced by our own,
  unvalidated surrogate from the lowest SpO2 (>= 94 %: 0, 90-93 %: 1, < 90 %: 2
  points) plus 2 points for invasive ventilation (SOFA gives 3-4 points only
  with respiratory support);
* a missing measurement scores 0 (assumed normal), the usual SOFA convention.

The score therefore is *SOFA-like*; its AUROC is a fair comparator for ranking
but not a reproduction of published SOFA performance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinical_mlops.errors import EvaluationError
from clinical_mlops.evaluation.metrics import (
    auroc,
    auroc_replicates,
    check_binary,
    confusion_at,
    percentile_ci,
)
from clinical_mlops.tasks.spec import (
    BASELINE_COLUMN,
    ColumnBaseline,
    NoBaseline,
    PointsBaseline,
    TaskSpec,
)

__all__ = [
    "LACE_LIKE",
    "SCORES",
    "SOFA_LIKE",
    "Band",
    "ClinicalScore",
    "Component",
    "FlagModifier",
    "baseline_comparison",
    "no_baseline",
    "score_for",
]

_INF = float("inf")
_MISSING_SCORES_ZERO = "a missing measurement scores 0 points (assumed normal)"


def _floats(values: pd.Series) -> np.ndarray:
    """Return ``values`` as floats, NaN where missing (nullable integers included)."""
    return pd.to_numeric(values, errors="coerce").astype(float).to_numpy()


@dataclass(frozen=True)
class Band:
    """``points`` when ``low <= value < high``."""

    low: float
    high: float
    points: int


@dataclass(frozen=True)
class FlagModifier:
    """A 0/1 feature that raises a component: to ``at_least`` points, or ``add`` points (max 4)."""

    feature: str
    effect: Literal["at_least", "add"]
    points: int


@dataclass(frozen=True)
class Component:
    """One organ system (or score item): a feature scored by bands or by category.

    A numeric feature is scored by ``bands`` (a flag too: one band from 1), optionally
    modified by a flag; a categorical one by ``categories`` (category -> points).
    """

    organ: str
    feature: str
    bands: tuple[Band, ...] = ()
    modifier: FlagModifier | None = None
    approximation: str | None = None
    categories: Mapping[str, int] | None = None

    def points(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the component's points per row (0 where the feature is missing)."""
        pts = np.zeros(len(frame), dtype=np.int64)
        if self.categories is not None:
            values = frame[self.feature].astype("string").str.strip()
            for category, points in self.categories.items():
                pts[(values == category).fillna(False).to_numpy(dtype=bool)] = points
            return pts
        values = _floats(frame[self.feature])
        for band in self.bands:
            with np.errstate(invalid="ignore"):
                pts[(values >= band.low) & (values < band.high)] = band.points
        if self.modifier is not None:
            flag = _floats(frame[self.modifier.feature]) == 1
            if self.modifier.effect == "at_least":
                pts = np.where(flag, np.maximum(pts, self.modifier.points), pts)
            else:
                pts = np.where(flag, np.minimum(pts + self.modifier.points, 4), pts)
        return pts


@dataclass(frozen=True)
class ClinicalScore:
    """A points score: the sum of its components, or the whole points read from ``column``."""

    name: str
    source: str
    components: tuple[Component, ...]
    column: str | None = None
    declared_max: int | None = None
    missing_values: str = field(default=_MISSING_SCORES_ZERO)

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature the score reads."""
        names = [c.feature for c in self.components]
        names += [c.modifier.feature for c in self.components if c.modifier]
        return tuple(dict.fromkeys(names))

    @property
    def approximations(self) -> list[str]:
        """Honest sentences on where the score departs from its source."""
        return [f"{c.organ}: {c.approximation}" for c in self.components if c.approximation]

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the total points per row of ``frame`` (raw, unimputed features)."""
        if self.column is not None:
            if self.column not in frame.columns:
                raise EvaluationError(f"{self.name}: the frame lacks the column {self.column!r}")
            return np.nan_to_num(_floats(frame[self.column]), nan=0.0).astype(np.int64)
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise EvaluationError(f"{self.name}: the frame lacks the feature columns {missing}")
        return np.sum([c.points(frame) for c in self.components], axis=0)

    @property
    def max_points(self) -> int:
        """The largest possible total."""
        if self.declared_max is not None:
            return self.declared_max
        total = 0
        for c in self.components:
            top = max(c.categories.values()) if c.categories else max(b.points for b in c.bands)
            if c.modifier is not None:
                top = (
                    max(top, c.modifier.points)
                    if c.modifier.effect == "at_least"
                    else min(top + c.modifier.points, 4)
                )
            total += top
        return total


SOFA_LIKE = ClinicalScore(
    name="SOFA-like score",
    source=(
        "Vincent JL et al. The SOFA (Sepsis-related Organ Failure Assessment) score to "
        "describe organ dysfunction/failure. Intensive Care Med 1996;22:707-710"
    ),
    components=(
        Component(
            organ="coagulation",
            feature="platelets",
            bands=(
                Band(150, _INF, 0),
                Band(100, 150, 1),
                Band(50, 100, 2),
                Band(20, 50, 3),
                Band(-_INF, 20, 4),
            ),
        ),
        Component(
            organ="liver",
            feature="bilirubin",
            bands=(
                Band(-_INF, 1.2, 0),
                Band(1.2, 2.0, 1),
                Band(2.0, 6.0, 2),
                Band(6.0, 12.0, 3),
                Band(12.0, _INF, 4),
            ),
        ),
        Component(
            organ="central nervous system",
            feature="gcs",
            bands=(
                Band(15, _INF, 0),
                Band(13, 15, 1),
                Band(10, 13, 2),
                Band(6, 10, 3),
                Band(-_INF, 6, 4),
            ),
        ),
        Component(
            organ="renal",
            feature="creatinine",
            bands=(
                Band(-_INF, 1.2, 0),
                Band(1.2, 2.0, 1),
                Band(2.0, 3.5, 2),
                Band(3.5, 5.0, 3),
                Band(5.0, _INF, 4),
            ),
            approximation="creatinine only; urine output is not available",
        ),
        Component(
            organ="cardiovascular",
            feature="map",
            bands=(Band(70, _INF, 0), Band(-_INF, 70, 1)),
            modifier=FlagModifier("vasopressor", "at_least", 3),
            approximation=(
                "the vasopressor flag has no agent or dose, so any vasopressor scores 3 points "
                "(published: 2-4 by agent and dose)"
            ),
        ),
        Component(
            organ="respiratory",
            feature="spo2",
            bands=(Band(94, _INF, 0), Band(90, 94, 1), Band(-_INF, 90, 2)),
            modifier=FlagModifier("ventilation", "add", 2),
            approximation=(
                "PaO2/FiO2 is not available; replaced by an unvalidated surrogate: lowest SpO2 "
                "(>=94 %: 0, 90-93 %: 1, <90 %: 2 points) plus 2 points for invasive ventilation"
            ),
        ),
    ),
)


LACE_LIKE = ClinicalScore(
    name="LACE-like index",
    source=(
        "van Walraven C et al. Derivation and validation of an index to predict early death "
        "or unplanned readmission after discharge from hospital to the community. "
        "CMAJ 2010;182:551-557"
    ),
    components=(
        Component(
            organ="length of stay (L)",
            feature="length_of_stay",
            bands=(
                Band(-_INF, 1, 0),
                Band(1, 2, 1),
                Band(2, 3, 2),
                Band(3, 4, 3),
                Band(4, 7, 4),
                Band(7, 14, 5),
                Band(14, _INF, 7),
            ),
        ),
        Component(
            organ="comorbidity (C)",
            feature="charlson_index",
            bands=(
                Band(-_INF, 1, 0),
                Band(1, 2, 1),
                Band(2, 3, 2),
                Band(3, 4, 3),
                Band(4, _INF, 5),
            ),
        ),
        Component(
            organ="emergency visits (E)",
            feature="prior_admissions_12m",
            bands=(
                Band(-_INF, 1, 0),
                Band(1, 2, 1),
                Band(2, 3, 2),
                Band(3, 4, 3),
                Band(4, _INF, 4),
            ),
            approximation=(
                "emergency-department visits in the previous 6 months are not available; "
                "admissions in the previous 12 months stand in for them"
            ),
        ),
    ),
)
"""LACE without its A (acuity) term: the readmission features carry no admission type."""

SCORES: dict[str, ClinicalScore] = {"sofa_like": SOFA_LIKE, "lace_like": LACE_LIKE}


def score_for(spec: TaskSpec) -> ClinicalScore | None:
    """Return the clinical baseline score a task spec declares; ``None`` when it declares none.

    Raises :class:`EvaluationError` when the spec leaves ``clinical_baseline`` unset
    (R-L4 asks for a comparison with the score clinicians already use, or a written
    reason there is none) or when a built-in score reads a feature the spec does not
    declare or has not approved. ``tasks check`` runs this rule, so ``train`` never
    meets these errors after minutes of work.
    """
    declared = spec.clinical_baseline
    if declared is None:
        raise EvaluationError(
            f"task {spec.name!r} declares no clinical_baseline; declare one in its task spec so "
            "the report can compare the model with the score clinicians already use: a built-in "
            f"score ({', '.join(sorted(SCORES))}), a points score over the task's features "
            "(kind: points), a column of the table holding the score (kind: column), or "
            "kind: none with the reason there is none"
        )
    if isinstance(declared, NoBaseline):
        return None
    if isinstance(declared, PointsBaseline):
        return ClinicalScore(
            name=declared.name,
            source=declared.citation,
            components=tuple(
                Component(
                    organ=item.label or spec.feature(item.feature).label,
                    feature=item.feature,
                    bands=tuple(
                        Band(
                            -_INF if b.low is None else b.low,
                            _INF if b.high is None else b.high,
                            b.points,
                        )
                        for b in item.bands or ()
                    )
                    or ((Band(1, _INF, item.points),) if item.points is not None else ()),
                    categories=item.categories,
                    approximation=item.approximation,
                )
                for item in declared.items
            ),
        )
    if isinstance(declared, ColumnBaseline):
        return ClinicalScore(
            name=declared.name,
            source=declared.citation,
            components=(),
            column=BASELINE_COLUMN,
            declared_max=declared.max_points,
            missing_values=(
                f"the score is read from table column {declared.column!r} as charted; "
                "a missing value scores 0 points"
            ),
        )
    score = SCORES[declared]
    missing = [f for f in score.features if f not in spec.feature_names]
    if missing:
        raise EvaluationError(
            f"task {spec.name!r}: clinical_baseline {declared} needs feature(s) {missing} the "
            "spec does not declare"
        )
    unapproved = [f for f in score.features if spec.feature(f).status != "approved"]
    if unapproved:
        raise EvaluationError(
            f"task {spec.name!r}: clinical_baseline {declared} reads feature(s) {unapproved} "
            "the spec has not approved"
        )
    return score


def no_baseline(spec: TaskSpec) -> dict[str, Any]:
    """Return the report's baseline section of a task that declares none: the reason, stated."""
    declared = spec.clinical_baseline
    reason = declared.reason if isinstance(declared, NoBaseline) else ""
    return {
        "declared": False,
        "reason": reason,
        "statement": (
            "No clinical baseline: the model is not compared with an established score, and "
            "release gate 2 does not require beating one. Reason given in the task spec: "
            f"{reason}"
        ),
    }


def _workload_matched_cutoff(score: np.ndarray, alert_fraction: float, max_points: int) -> int:
    """Smallest integer cut-off whose alert fraction does not exceed ``alert_fraction``."""
    for cut in range(max_points + 2):
        if np.mean(score >= cut) <= alert_fraction:
            return cut
    return max_points + 1


def baseline_comparison(
    y_true: np.ndarray,
    p_model: np.ndarray,
    frame: pd.DataFrame,
    *,
    threshold: float,
    counts: np.ndarray,
    score: ClinicalScore = SOFA_LIKE,
) -> dict[str, Any]:
    """Return the baseline score's test performance and its paired comparison with the model.

    * ``auroc``/``auroc_ci`` of the score; ``auroc_difference`` = model AUROC minus
      baseline AUROC with a paired bootstrap CI (same resamples ``counts`` for both).
    * Sensitivity, specificity and PPV at a workload-matched cut-off: the
      smallest integer score whose alert rate does not exceed the model's at
      ``threshold``, so both flag (at most) as many patients.
    * ``operating_points``: sensitivity/specificity/PPV at every integer cut-off.
    """
    y = check_binary(y_true, p_model, frame)
    p = np.asarray(p_model, dtype=float)
    points = score.score(frame).astype(float)
    model_alert_fraction = float(np.mean(p >= threshold))
    cut = _workload_matched_cutoff(points, model_alert_fraction, score.max_points)
    at_cut = confusion_at(y, points, threshold=cut)
    model_auc, base_auc = auroc(y, p), auroc(y, points)
    diff_reps = auroc_replicates(y, p, counts) - auroc_replicates(y, points, counts)
    operating_points = []
    for c in range(1, score.max_points + 1):
        conf = confusion_at(y, points, threshold=c)
        operating_points.append(
            {
                "cutoff": c,
                "alert_fraction": float(np.mean(points >= c)),
                **{k: conf[k] for k in ("sensitivity", "specificity", "ppv")},
            }
        )
    return {
        "name": score.name,
        "source": score.source,
        "approximations": score.approximations,
        "missing_values": score.missing_values,
        "features": list(score.features),
        "auroc": base_auc,
        "auroc_ci": list(percentile_ci(auroc_replicates(y, points, counts))),
        "cutoff": cut,
        "cutoff_rule": (
            "workload-matched: smallest integer score whose alert rate does not exceed the "
            f"model's alert rate ({model_alert_fraction:.3f}) at its operating threshold "
            f"{threshold}"
        ),
        "alert_fraction": float(np.mean(points >= cut)),
        "sensitivity": at_cut["sensitivity"],
        "specificity": at_cut["specificity"],
        "ppv": at_cut["ppv"],
        "npv": at_cut["npv"],
        "auroc_difference": {
            "value": model_auc - base_auc,
            "ci": list(percentile_ci(diff_reps)),
            "definition": "model AUROC minus baseline AUROC, paired bootstrap over the same stays",
        },
        "operating_points": operating_points,
        "mean_score": float(points.mean()) if len(points) else float("nan"),
    }
