"""Calibrators held as data: isotonic breakpoints, or a logistic (Platt) map (SPEC R-T6).

Both map the model's score (its log-odds margin) to a calibrated probability and are
fitted on stays the model did not train on.

- **Isotonic** (what training fits): scikit-learn's ``IsotonicRegression``, stored as
  two arrays; applying it is a linear interpolation between breakpoints, clipped at
  the ends — exactly what scikit-learn does, with no pickled estimator.
- **Logistic** (Platt scaling, offered by local recalibration): ``p = sigmoid(a + b·margin)``
  with ``a`` and ``b`` the unpenalised maximum-likelihood fit of scikit-learn's
  ``LogisticRegression`` on the margin; two numbers, smooth and monotone, steadier than
  isotonic on a few hundred stays.

:func:`load_calibrator` reads either from ``calibrator.json`` by its schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from clinical_mlops.errors import ContractViolation

__all__ = ["Calibrator", "IsotonicCalibrator", "LogisticCalibrator", "load_calibrator"]

SCHEMA = "clinical-mlops/calibrator/isotonic/v1"
LOGISTIC_SCHEMA = "clinical-mlops/calibrator/logistic/v1"


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


@dataclass(frozen=True)
class LogisticCalibrator:
    """Platt scaling: ``p = sigmoid(intercept + slope · score)`` on the model's margin."""

    intercept: float
    slope: float
    n: int

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> LogisticCalibrator:
        """Return the unpenalised maximum-likelihood logistic fit of 0/1 labels on scores."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels, dtype=int)
        if len(np.unique(y)) < 2:
            raise ContractViolation(
                "calibration set has a single class; logistic calibration needs both"
            )
        x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
        # C=inf: no penalty, the plain maximum-likelihood fit (Platt 1999 without smoothing).
        fit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=1000)
        fit.fit(x, y)
        return cls(intercept=float(fit.intercept_[0]), slope=float(fit.coef_[0, 0]), n=len(y))

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities for model scores."""
        z = self.intercept + self.slope * np.asarray(scores, dtype=np.float64)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": LOGISTIC_SCHEMA,
            "method": "logistic",
            "n": self.n,
            "intercept": self.intercept,
            "slope": self.slope,
            "input": "model margin (log-odds score)",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticCalibrator:
        if data.get("schema") != LOGISTIC_SCHEMA:
            raise ValueError(
                f"calibrator: expected schema {LOGISTIC_SCHEMA}, got {data.get('schema')!r}"
            )
        return cls(intercept=float(data["intercept"]), slope=float(data["slope"]), n=int(data["n"]))


Calibrator = IsotonicCalibrator | LogisticCalibrator


def load_calibrator(data: dict[str, Any]) -> Calibrator:
    """Return the calibrator ``calibrator.json`` holds, by its schema (isotonic or logistic)."""
    if data.get("schema") == LOGISTIC_SCHEMA:
        return LogisticCalibrator.from_dict(data)
    return IsotonicCalibrator.from_dict(data)
