"""The JSON shape of one prediction request, shared by ``POST /v1/predict`` and batch files.

One model so that a line of a ``clinical-mlops score`` file and the body of an HTTP
request are read by the same rules (strict types, unknown fields refused). It lives in
the library, not the HTTP front end, so offline scoring needs no web framework.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinical_mlops.serving.predictor import PredictionRequest

__all__ = ["PredictItem"]


class PredictItem(BaseModel):
    """One prediction request; ``features`` holds the task's inputs by name."""

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str | None = Field(default=None, max_length=128)
    subject_id: str = Field(min_length=1, max_length=256, description="Patient identifier")
    purpose: str = Field(description="Why the prediction is asked for (consent purpose)")
    setting: str = Field(description="Care setting, e.g. icu")
    site: str | None = Field(
        default=None,
        max_length=128,
        description="Leave out: the rollout site comes from the credential. A system key "
        "declared for several sites may name one of them; any other site is refused (403)",
    )
    hours_since_admission: float | None = None
    encounter: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The EHR's encounter id (pseudonymised before it is recorded): escalated "
        "predictions of one patient and encounter are one case while it is open",
    )
    features: dict[str, Any] = Field(
        description='Value in the declared unit, or {"value": ..., "unit": ...}; null if not measured'
    )

    def to_request(self, *, default_id: str | None = None) -> PredictionRequest:
        """Return the Predictor's request; ``default_id`` stands in for a missing request id."""
        return PredictionRequest(
            subject_id=self.subject_id,
            purpose=self.purpose,
            setting=self.setting,
            features=self.features,
            request_id=self.request_id or default_id,
            site=self.site,
            hours_since_admission=self.hours_since_admission,
            encounter=self.encounter,
        )
