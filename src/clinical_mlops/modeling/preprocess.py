"""Preprocessing fitted on the training stays only, then frozen (SPEC R-T4).

Numeric features and flags missing in the observation window are imputed with
the training median; categorical features are one-hot encoded over the
categories *declared in the task spec* (an unseen or missing category encodes as
all zeros). The fitted state is plain JSON, so a release carries it as data and
a past prediction can be replayed bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.errors import ContractViolation
from clinical_mlops.tasks.spec import TaskSpec

__all__ = ["Preprocessor"]

SCHEMA = "clinical-mlops/preprocess/v1"


@dataclass(frozen=True)
class Preprocessor:
    """Median imputation and declared one-hot encoding, fitted once."""

    features: tuple[str, ...]
    medians: dict[str, float]
    categories: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, spec: TaskSpec) -> Preprocessor:
        """Return a preprocessor fitted on ``frame`` (training stays only)."""
        medians: dict[str, float] = {}
        categories: dict[str, tuple[str, ...]] = {}
        for f in spec.features:
            if f.kind == "categorical":
                categories[f.name] = tuple(f.categories or ())
                continue
            col = pd.to_numeric(frame[f.name], errors="raise").astype(float)
            med = float(np.nanmedian(col.to_numpy())) if col.notna().any() else float("nan")
            if not np.isfinite(med):
                raise ContractViolation(
                    f"feature {f.name!r} is missing for every training stay; cannot impute "
                    "(expected at least one measured value in the training period)"
                )
            medians[f.name] = med
        return cls(features=spec.feature_names, medians=medians, categories=categories)

    @property
    def columns(self) -> list[str]:
        """Names of the model-matrix columns, in order."""
        cols: list[str] = []
        for name in self.features:
            if name in self.categories:
                cols += [f"{name}={c}" for c in self.categories[name]]
            else:
                cols.append(name)
        return cols

    def source_feature(self) -> list[str]:
        """The spec feature each model-matrix column comes from (same order as ``columns``)."""
        out: list[str] = []
        for name in self.features:
            out += [name] * (len(self.categories[name]) if name in self.categories else 1)
        return out

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the float64 model matrix for ``frame`` (rows in frame order)."""
        n = len(frame)
        blocks: list[np.ndarray] = []
        for name in self.features:
            if name in self.categories:
                values = frame[name].astype("string").to_numpy(dtype=object, na_value=None)
                block = np.zeros((n, len(self.categories[name])))
                for j, cat in enumerate(self.categories[name]):
                    block[:, j] = values == cat
                blocks.append(block)
            else:
                col = pd.to_numeric(frame[name], errors="raise").astype(float).to_numpy()
                blocks.append(np.where(np.isnan(col), self.medians[name], col)[:, None])
        return np.hstack(blocks).astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "features": list(self.features),
            "medians": self.medians,
            "categories": {k: list(v) for k, v in self.categories.items()},
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"preprocess: expected schema {SCHEMA}, got {data.get('schema')!r}")
        return cls(
            features=tuple(data["features"]),
            medians={k: float(v) for k, v in data["medians"].items()},
            categories={k: tuple(v) for k, v in data["categories"].items()},
        )
