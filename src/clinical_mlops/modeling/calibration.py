"""Isotonic calibration held as breakpoints (SPEC R-T6).

Fitted with scikit-learn's ``IsotonicRegression`` on model scores of stays the
model did not train on, then stored as two arrays: applying it is a linear
interpolation between breakpoints, clipped at the ends — exactly what
scikit-learn does, with no pickled estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from clinical_mlops.errors import ContractViolation

__all__ = ["IsotonicCalibrator"]

SCHEMA = "clinical-mlops/calibrator/isotonic/v1"


@dataclass(frozen=True)
class IsotonicCalibrator:
    """A monotone map from model score to calibrated probability."""

    x: np.ndarray
    y: np.ndarray
    n: int

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Return the isotonic calibrator fitted on (score, 0/1 label) pairs."""
        labels = np.asarray(labels, dtype=float)
        if len(np.unique(labels)) < 2:
            raise ContractViolation(
                "calibration set has a single class; isotonic calibration needs both"
            )
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(np.asarray(scores, dtype=float), labels)
        return cls(
            x=iso.X_thresholds_.astype(np.float64),
            y=iso.y_thresholds_.astype(np.float64),
            n=len(labels),
        )

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities for model scores."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": "isotonic",
            "n": self.n,
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibrator:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"calibrator: expected schema {SCHEMA}, got {data.get('schema')!r}")
        return cls(
            x=np.asarray(data["x"], dtype=np.float64),
            y=np.asarray(data["y"], dtype=np.float64),
            n=int(data["n"]),
        )
