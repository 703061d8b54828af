"""Per-prediction explanations: exact contributions grouped back to the spec's features.

The scoring model gives one contribution per model-matrix column (log-odds);
one-hot columns of a categorical feature are summed so every explanation speaks
of the features clinicians declared (``sex``, not ``sex=F``). Contributions of a
prediction plus the bias add up to the model's margin (for tree models to float32
rounding, about 1e-6: XGBoost scores in float32). The explanation
format is versioned (``EXPLANATION_FORMAT``) so that consumers stay stable across
releases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinical_mlops.modeling.model import LinearModel, TreeModel
from clinical_mlops.modeling.preprocess import Preprocessor

__all__ = ["EXPLANATION_FORMAT", "feature_contributions", "global_importance"]

EXPLANATION_FORMAT = "clinical-mlops/explanation/v1"


def feature_contributions(
    model: TreeModel | LinearModel, pre: Preprocessor, X: np.ndarray
) -> pd.DataFrame:
    """Return log-odds contributions per spec feature (columns) plus ``bias``, one row per input row."""
    raw = model.contributions(X)
    sources = pre.source_feature()
    out = pd.DataFrame(index=range(len(X)))
    for name in pre.features:
        idx = [i for i, s in enumerate(sources) if s == name]
        out[name] = raw[:, idx].sum(axis=1)
    out["bias"] = raw[:, -1]
    return out


def global_importance(contributions: pd.DataFrame) -> dict[str, float]:
    """Return mean absolute contribution per feature, largest first."""
    means = contributions.drop(columns=["bias"]).abs().mean().sort_values(ascending=False)
    return {k: round(float(v), 6) for k, v in means.items()}
