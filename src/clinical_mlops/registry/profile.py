"""The monitoring reference profile stored in a release bundle.

What production data and scores are compared against later (drift, volume,
workload): per-feature quantile bin edges and bin fractions, missingness and
category frequencies, and the distribution of calibrated risk on the locked test
stays — the most recent period the model was validated on — with the alert rate
at every threshold from 0.01 to 0.99 so a threshold change can be stated as
alerts per 100 patients. Aggregates only: no stay-level rows enter the bundle.

The profile is one typed document, :class:`ReferenceProfile` (format
:data:`PROFILE_FORMAT`): :func:`reference_profile` builds it, the bundle writes it
as ``reference_profile.json``, and the monitor, the scoring service's input checks,
the release gates and the change classifier read it back through ``Bundle.profile()``,
so a renamed or missing key fails at load naming the file and the field.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from clinical_mlops.documents import Document, Number, Section
from clinical_mlops.features.snapshot import Snapshot
from clinical_mlops.modeling.trained import TrainedModel

__all__ = [
    "PROFILE_FORMAT",
    "FeatureProfile",
    "ReferenceProfile",
    "ScoreProfile",
    "reference_profile",
]

PROFILE_FORMAT = "clinical-mlops/reference-profile/v1"
_QUANTILES = tuple(round(q / 10, 1) for q in range(11))
_SCORE_BINS = 20


def _numeric(values: pd.Series) -> dict[str, Any]:
    present = values.dropna().to_numpy(dtype=float)
    if present.size == 0:
        return {"edges": [], "fractions": [], "n_present": 0}
    edges = np.unique(np.quantile(present, _QUANTILES))
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(edges) - 1)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "fractions": [round(float(c) / present.size, 6) for c in counts],
        "n_present": int(present.size),
        "mean": round(float(present.mean()), 6),
    }


class FeatureProfile(Section):
    """One input on the reference stays: missingness, then its bins or category frequencies.

    Numeric inputs and flags carry decile ``edges``, the ``fractions`` of present values
    in each bin, ``n_present`` and (when any value is present) ``mean``; categorical
    inputs carry ``categories`` (value -> fraction of present values).
    """

    kind: Literal["numeric", "flag", "categorical"]
    missing_fraction: Number
    categories: dict[str, Number] | None = None
    edges: list[Number] | None = None
    fractions: list[Number] | None = None
    n_present: int | None = None
    mean: Number | None = None


class ScoreProfile(Section):
    """Calibrated risk on the reference stays: 20 equal-width bins, mean and deciles."""

    bin_edges: list[Number]
    fractions: list[Number]
    mean: Number
    quantiles: dict[str, Number]


class ReferenceProfile(Document):
    """``reference_profile.json``: what production inputs and scores are compared against."""

    format: Literal["clinical-mlops/reference-profile/v1"]
    task: str
    model_version: str
    snapshot_id: str
    population: str
    n: int
    features: dict[str, FeatureProfile]
    score: ScoreProfile
    alerts_per_100: dict[str, Number]

    def alert_rate(self, threshold: float) -> float | None:
        """Return alerts per 100 reference patients at ``threshold`` (to 0.01), or None if unknown."""
        value = self.alerts_per_100.get(f"{round(threshold, 2):.2f}")
        return None if value is None else float(value)


def reference_profile(
    model: TrainedModel,
    snapshot: Snapshot,
    *,
    stays: pd.DataFrame | None = None,
    population: str | None = None,
) -> ReferenceProfile:
    """Return the reference profile of ``model`` on the locked test stays of ``snapshot``.

    ``stays`` (described by ``population``) replaces them for a model validated on other
    stays of the snapshot: a site's held-out stays after local recalibration.
    """
    from clinical_mlops.features.snapshot import locked_test_stays

    spec = snapshot.spec()
    test = locked_test_stays(snapshot) if stays is None else stays
    features: dict[str, Any] = {}
    for f in spec.features:
        col = test[f.name]
        entry: dict[str, Any] = {
            "kind": f.kind,
            "missing_fraction": round(float(col.isna().mean()), 6),
        }
        if f.kind == "categorical":
            freq = col.dropna().astype(str).value_counts(normalize=True).sort_index()
            entry["categories"] = {str(k): round(float(v), 6) for k, v in freq.items()}
        else:
            entry |= _numeric(col.astype(float))
        features[f.name] = entry
    p = model.probability(test)
    hist, edges = np.histogram(p, bins=_SCORE_BINS, range=(0.0, 1.0))
    thresholds = [round(t / 100, 2) for t in range(1, 100)]
    document = {
        "format": PROFILE_FORMAT,
        "task": spec.name,
        "model_version": model.version,
        "snapshot_id": snapshot.id,
        "population": population
        or f"locked test stays {spec.split.test_years[0]}-{spec.split.test_years[1]}",
        "n": len(test),
        "features": features,
        "score": {
            "bin_edges": [round(float(e), 6) for e in edges],
            "fractions": [round(float(c) / len(p), 6) for c in hist],
            "mean": round(float(p.mean()), 6),
            "quantiles": {
                str(q): round(float(v), 6)
                for q, v in zip(_QUANTILES, np.quantile(p, _QUANTILES), strict=True)
            },
        },
        "alerts_per_100": {f"{t:.2f}": round(float((p >= t).mean() * 100), 4) for t in thresholds},
    }
    return ReferenceProfile.from_json(document, source="reference_profile.json (as built)")
