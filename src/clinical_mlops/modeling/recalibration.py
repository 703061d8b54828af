"""Local recalibration: a released model's calibration and conformal sets refitted at one site.

A model developed on pooled hospitals can rank a site's patients well and still be
miscalibrated there (another case-mix, prevalence or outcome rate). Recalibration keeps
the scoring model — preprocessing, booster or coefficients, explanations — exactly as
released and refits only what maps its score to what a clinician sees:

- the **calibrator**, on the model's margins: isotonic (as training fits) or logistic
  (Platt: ``p = sigmoid(a + b·margin)``, two numbers, steadier on a few hundred stays);
- the **Mondrian conformal thresholds**, per class, on calibrated probabilities of other
  stays than the calibrator's (as training does, so the guarantee is not weakened);
- the **escalation reference**: those conformal stays as escalation policies see them,
  so the release's review band and budget are sized on the site's own patients.

**The split** (:func:`site_split`) is temporal, so the evidence is honest: of the site's
stays in the snapshot, those of the snapshot's training period (``split.train_years``)
fit the calibration, halved by a seeded stratified split into the calibrator's stays and
the conformal stays; those of its test period (``split.test_years``) are held out, never
used for fitting, and the new release's validation report is computed on them alone.

**The minimum** (:func:`minimum_problems`): each of the three parts must hold at least
``acceptance.min_recalibration_events`` events and as many non-events; fewer is refused,
never fitted. Fitting writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from clinical_mlops.errors import ContractViolation, ValueInvalid
from clinical_mlops.modeling.calibration import Calibrator, IsotonicCalibrator, LogisticCalibrator
from clinical_mlops.modeling.conformal import MondrianConformal
from clinical_mlops.modeling.escalation import EscalationReference
from clinical_mlops.modeling.trained import TrainedModel
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "METHODS",
    "Method",
    "SiteSplit",
    "check_method",
    "minimum_problems",
    "recalibrate",
    "site_split",
]

Method = Literal["isotonic", "logistic"]
METHODS: tuple[Method, ...] = get_args(Method)
#: share of the site's training-period stays that fit the conformal thresholds (the rest: calibrator)
CONFORMAL_FRACTION = 0.5
SPLIT_RULE = (
    "the site's stays of the snapshot's training period fit the calibration (a seeded "
    "stratified half the calibrator, the other half the conformal thresholds and the "
    "escalation reference); its stays of the test period are held out and evaluated"
)


def check_method(method: str) -> Method:
    """Return ``method`` when it is a recalibration method; ``ValueInvalid`` naming ``method``."""
    if method not in METHODS:
        raise ValueInvalid(f"method: expected {' or '.join(METHODS)}, got {method!r}")
    return method


@dataclass(frozen=True)
class SiteSplit:
    """One site's stays in three parts: calibrator fit, conformal fit, held out (evaluated)."""

    site: str
    calibrator: pd.DataFrame
    conformal: pd.DataFrame
    held_out: pd.DataFrame
    label: str
    seed: int
    train_years: tuple[int, int]
    test_years: tuple[int, int]

    def counts(self) -> dict[str, dict[str, int]]:
        """Return stays, events and non-events of each part."""
        out = {}
        for name, part in self.parts().items():
            y = part[self.label].to_numpy(dtype=int)
            out[name] = {
                "stays": len(y),
                "events": int(y.sum()),
                "non_events": int(len(y) - y.sum()),
            }
        return out

    def parts(self) -> dict[str, pd.DataFrame]:
        return {
            "calibrator": self.calibrator,
            "conformal": self.conformal,
            "held_out": self.held_out,
        }

    @property
    def n_fit(self) -> int:
        """Return how many of the site's stays the calibration was fitted on."""
        return len(self.calibrator) + len(self.conformal)

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "rule": SPLIT_RULE,
            "seed": self.seed,
            "fit_years": list(self.train_years),
            "held_out_years": list(self.test_years),
            "conformal_fraction": CONFORMAL_FRACTION,
            "counts": self.counts(),
        }


def site_split(frame: pd.DataFrame, spec: TaskSpec, *, site: str, seed: int) -> SiteSplit:
    """Return the stays of ``site`` in ``frame`` (a snapshot's frame) split for recalibration.

    Deterministic: the same frame, site and seed give the same parts. Raises
    :class:`ContractViolation` when the site's training-period stays cannot be halved
    with both classes on each side (fewer than two of a class).
    """
    label = spec.label.name
    stays = frame.loc[frame["site"].astype(str) == site].sort_values("stay_id")
    earlier = stays.loc[stays["split"] == "train"].reset_index(drop=True)
    held_out = stays.loc[stays["split"] == "test"].reset_index(drop=True)
    y = earlier[label].to_numpy(dtype=int)
    if len(earlier) and min(int(y.sum()), int(len(y) - y.sum())) >= 2:
        cal_idx, conf_idx = train_test_split(
            np.arange(len(earlier)), test_size=CONFORMAL_FRACTION, stratify=y, random_state=seed
        )
        calibrator = earlier.iloc[np.sort(cal_idx)].reset_index(drop=True)
        conformal = earlier.iloc[np.sort(conf_idx)].reset_index(drop=True)
    else:
        # Too few to halve with both classes: the minimum check refuses it by its counts.
        calibrator, conformal = earlier, earlier.iloc[0:0]
    return SiteSplit(
        site=site,
        calibrator=calibrator,
        conformal=conformal,
        held_out=held_out,
        label=label,
        seed=seed,
        train_years=tuple(spec.split.train_years),  # type: ignore[arg-type]
        test_years=tuple(spec.split.test_years),  # type: ignore[arg-type]
    )


def minimum_problems(split: SiteSplit, minimum: int) -> list[str]:
    """Return each part of ``split`` with fewer events or non-events than ``minimum`` ([]: enough)."""
    words = {
        "calibrator": "fit the calibrator",
        "conformal": "fit the conformal thresholds",
        "held_out": "are held out for evaluation",
    }
    problems = []
    for name, c in split.counts().items():
        short = [
            f"{c[k]} {k.replace('_', '-')}" for k in ("events", "non_events") if c[k] < minimum
        ]
        if short:
            problems.append(
                f"the {c['stays']} stays of site {split.site} that {words[name]} hold "
                f"{' and '.join(short)}"
            )
    return problems


def recalibrate(
    model: TrainedModel, split: SiteSplit, *, method: Method, spec: TaskSpec
) -> TrainedModel:
    """Return ``model`` with its calibrator, conformal thresholds and escalation reference
    refitted on ``split`` (the scoring model and preprocessing unchanged); writes nothing.

    Raises :class:`ContractViolation` when a fitting part lacks a class.
    """
    check_method(method)
    label = split.label
    pre = model.preprocessor
    fit_y = split.calibrator[label].to_numpy(dtype=int)
    conf_y = split.conformal[label].to_numpy(dtype=int)
    if len(np.unique(conf_y)) < 2:
        raise ContractViolation(
            f"site {split.site}: the conformal stays hold a single class; recalibration needs both"
        )
    margin = model.scorer.margin(pre.transform(split.calibrator))
    calibrator: Calibrator = (
        IsotonicCalibrator.fit(margin, fit_y)
        if method == "isotonic"
        else LogisticCalibrator.fit(margin, fit_y)
    )
    p_conf = calibrator.transform(model.scorer.margin(pre.transform(split.conformal)))
    conformal = MondrianConformal.fit(p_conf, conf_y, alpha=spec.thresholds.conformal_alpha)
    reference = EscalationReference.build(
        p_conf,
        conformal.predict_sets(p_conf),
        missing_count=split.conformal[list(pre.features)].isna().sum(axis=1).to_numpy(),
        n_features=len(pre.features),
        max_missing=spec.cohort.max_missing_feature_fraction,
    )
    return replace(
        model, calibrator=calibrator, conformal=conformal, escalation_reference=reference
    )
