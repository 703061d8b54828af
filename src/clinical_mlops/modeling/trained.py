"""A trained model as a folder of JSON artifacts, and how to apply it.

``TrainedModel`` joins the frozen preprocessor, the scoring model, the
calibrator (isotonic from training, or a site's isotonic or logistic one from local
recalibration) and the conformal thresholds. ``apply`` turns a frame of raw
feature values into margins, calibrated probabilities, prediction sets and
per-feature contributions — the one code path used for validation, for replay
and (later) for serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.errors import ModelNotFound
from clinical_mlops.hashing import canonical_json, sha256_bytes, sha256_json
from clinical_mlops.modeling.calibration import Calibrator, load_calibrator
from clinical_mlops.modeling.conformal import MondrianConformal
from clinical_mlops.modeling.escalation import REFERENCE_FILE, EscalationReference
from clinical_mlops.modeling.explain import EXPLANATION_FORMAT, feature_contributions
from clinical_mlops.modeling.model import Explainer, LinearModel, TreeModel, load_scoring_model
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.workspace import Workspace

__all__ = [
    "ARTIFACT_FILES",
    "MatrixPrediction",
    "Prediction",
    "TrainedModel",
    "list_models",
    "model_folder",
]

ARTIFACT_FILES = (
    "model.json",
    "preprocess.json",
    "calibrator.json",
    "conformal.json",
    "explanation.json",
)


@dataclass(frozen=True)
class Prediction:
    """Arrays for a batch of rows, aligned with the input frame."""

    margin: np.ndarray
    p_raw: np.ndarray
    p_cal: np.ndarray
    sets: np.ndarray
    contributions: pd.DataFrame


@dataclass(frozen=True)
class MatrixPrediction:
    """Arrays for a batch of model-matrix rows; ``contributions`` is (n, features + 1) or None.

    Contribution columns follow ``TrainedModel.preprocessor.features`` with the bias last,
    the same numbers as :meth:`TrainedModel.apply` puts in its frame.
    """

    margin: np.ndarray
    p_raw: np.ndarray
    p_cal: np.ndarray
    sets: np.ndarray
    contributions: np.ndarray | None
    explainer: Explainer | None = None


@dataclass(frozen=True)
class TrainedModel:
    """Everything needed to score a stay, as data."""

    task: str
    preprocessor: Preprocessor
    scorer: TreeModel | LinearModel
    calibrator: Calibrator
    conformal: MondrianConformal
    explanation: dict[str, Any]
    #: held-out calibration stays as escalation policies see them (absent in older models)
    escalation_reference: EscalationReference | None = None

    def apply(self, frame: pd.DataFrame, *, explain: bool = True) -> Prediction:
        """Return margins, probabilities, conformal sets and contributions for ``frame``."""
        X = self.preprocessor.transform(frame)
        margin = self.scorer.margin(X)
        p_cal = self.calibrator.transform(margin)
        contrib = (
            feature_contributions(self.scorer, self.preprocessor, X) if explain else pd.DataFrame()
        )
        return Prediction(
            margin=margin,
            p_raw=1.0 / (1.0 + np.exp(-margin)),
            p_cal=p_cal,
            sets=self.conformal.predict_sets(p_cal),
            contributions=contrib,
        )

    def apply_matrix(
        self, X: np.ndarray, *, explain: bool = True, method: Explainer | None = None
    ) -> MatrixPrediction:
        """Return what :meth:`apply` returns, for an already encoded model matrix, as arrays only.

        The serving path: no frame is built and the booster is called without a
        DMatrix for margins. Every row's numbers are independent of the batch it is
        scored in (one-hot contributions are summed column by column, left to right),
        so a prediction served in a batch replays bit for bit on its own. For tree
        models the numbers equal :meth:`apply`'s exactly; for the linear model they
        agree to rounding (``margin_fast``). ``method`` picks how contributions are computed
        (default: the model's own, :attr:`TreeModel.explainer`); the one used is returned.
        """
        contrib: np.ndarray | None = None
        explainer: Explainer | None = None
        if explain:
            explainer = method or self.scorer.explainer
            margin, raw = self.scorer.margin_and_contributions(X, method=explainer)
            contrib = np.empty((len(X), len(self._groups) + 1), dtype=np.float64)
            for j, idx in enumerate(self._groups):
                acc = raw[:, idx[0]].copy()
                for k in idx[1:]:
                    acc += raw[:, k]
                contrib[:, j] = acc
            contrib[:, -1] = raw[:, -1]
        else:
            margin = self.scorer.margin_fast(X)
        p_cal = self.calibrator.transform(margin)
        return MatrixPrediction(
            margin=margin,
            p_raw=1.0 / (1.0 + np.exp(-margin)),
            p_cal=p_cal,
            sets=self.conformal.predict_sets(p_cal),
            contributions=contrib,
            explainer=explainer,
        )

    @cached_property
    def _groups(self) -> list[list[int]]:
        sources = self.preprocessor.source_feature()
        return [
            [i for i, s in enumerate(sources) if s == name] for name in self.preprocessor.features
        ]

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Return calibrated probabilities only."""
        return self.apply(frame, explain=False).p_cal

    # -- artifacts -------------------------------------------------------------------------
    def artifact_bytes(self) -> dict[str, bytes]:
        return {
            "model.json": self.scorer.to_bytes(),
            "preprocess.json": canonical_json(self.preprocessor.to_dict()),
            "calibrator.json": canonical_json(self.calibrator.to_dict()),
            "conformal.json": canonical_json(self.conformal.to_dict()),
            "explanation.json": canonical_json(self.explanation),
        } | (
            {}
            if self.escalation_reference is None
            else {REFERENCE_FILE: canonical_json(self.escalation_reference.to_json())}
        )

    def artifact_hashes(self) -> dict[str, str]:
        return {name: sha256_bytes(data) for name, data in self.artifact_bytes().items()}

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the serialised scoring model (model.json)."""
        return sha256_bytes(self.scorer.to_bytes())

    @property
    def version(self) -> str:
        """``<task>-<12 hex>``: a content address over every artifact."""
        return f"{self.task}-{sha256_json(self.artifact_hashes())[:12]}"

    def save(self, folder: Path) -> dict[str, str]:
        """Write the artifacts into ``folder``; return their hashes."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.artifact_bytes().items():
            (folder / name).write_bytes(data)
        return self.artifact_hashes()

    @classmethod
    def load(cls, folder: Path) -> TrainedModel:
        """Read a model folder written by :meth:`save` (JSON only; nothing is executed)."""
        explanation = json.loads((folder / "explanation.json").read_text(encoding="utf-8"))
        reference = folder / REFERENCE_FILE
        return cls(
            task=str(explanation["task"]),
            preprocessor=Preprocessor.from_dict(
                json.loads((folder / "preprocess.json").read_bytes())
            ),
            scorer=load_scoring_model((folder / "model.json").read_bytes()),
            calibrator=load_calibrator(json.loads((folder / "calibrator.json").read_bytes())),
            conformal=MondrianConformal.from_dict(
                json.loads((folder / "conformal.json").read_bytes())
            ),
            explanation=explanation,
            escalation_reference=(
                EscalationReference.from_json(json.loads(reference.read_bytes()))
                if reference.is_file()
                else None
            ),
        )


def explanation_config(task: str, features: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Return the explanation config stored with a model (format version, method, feature words)."""
    return {
        "format": EXPLANATION_FORMAT,
        "task": task,
        "method": method,
        "units": "log-odds contribution to the model score",
        "features": features,
        "caveat": (
            "Contributions describe how this model used each value, relative to an average "
            "training patient; they are not causal effects and do not say what treatment would change."
        ),
    }


def list_models(workspace: Workspace) -> list[str]:
    """Return the model versions in the workspace, sorted."""
    return sorted(
        p.name for p in workspace.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def model_folder(workspace: Workspace, version: str) -> Path:
    """Return the folder of model ``version`` (or a unique prefix); raise ``ModelNotFound``."""
    versions = list_models(workspace)
    matches = [v for v in versions if v == version or v.startswith(version)]
    if len(matches) != 1:
        why = "is ambiguous" if matches else "does not exist"
        known = ", ".join(versions) or "none"
        raise ModelNotFound(
            f"model {version!r} {why} in workspace {workspace.root} (models: {known}); "
            "train one with `clinical-mlops train`"
        )
    return workspace.models_dir / matches[0]
