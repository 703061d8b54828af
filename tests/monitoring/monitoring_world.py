"""Helpers shared by the monitoring tests: prediction requests for the session's patients."""

from __future__ import annotations

from typing import Any

from clinical_mlops.workspace import Workspace


def requests_for(
    rows: list[dict[str, Any]], indices: range, *, ventilated: bool, prefix: str
) -> list[Any]:
    """Return one prediction request per index (patients MRN-0..119), optionally ventilated."""
    from clinical_mlops.serving import PredictionRequest

    out = []
    for i in indices:
        features = dict(rows[i % len(rows)])
        if ventilated:
            features["ventilation"] = 1
        out.append(
            PredictionRequest(
                subject_id=f"MRN-{i % 120}",
                purpose="direct_care",
                setting="icu",
                features=features,
                request_id=f"{prefix}-{i}",
            )
        )
    return out


def score_now(
    ws: Workspace, rows: list[dict[str, Any]], *, n: int = 300, shifted: int = 150
) -> list[Any]:
    """Score ``n`` stays now through the Predictor; the last ``shifted`` all ventilated."""
    from clinical_mlops.serving import Predictor

    requests = requests_for(rows, range(n - shifted), ventilated=False, prefix="now")
    requests += requests_for(rows, range(n - shifted, n), ventilated=True, prefix="now")
    with Predictor.open(ws) as p:
        return p.predict_many(requests, requester="system:ehr")
