"""Serving: the governed Predictor library, batch scoring, CDS Hooks cards and FHIR adapters.

The :class:`~clinical_mlops.serving.predictor.Predictor` is the product; the HTTP
front end (:mod:`clinical_mlops.http`), the CDS Hooks cards (``serving.cds_hooks``),
the FHIR adapters (``serving.fhir``) and ``clinical-mlops serve`` are thin shells that
parse input, call it, and render its result. Every prediction it returns has one
``inference`` record in the audit ledger that :func:`~clinical_mlops.serving.replay.replay_inference`
can recompute bit for bit from stored artifacts alone. Nothing here needs a web framework.
Its flags and escalation conditions are words of :mod:`clinical_mlops.vocabulary` (``FLAGS``, ``REVIEW_REASONS``).
"""

from clinical_mlops.serving.predictor import (
    PredictionRequest,
    PredictionResult,
    Predictor,
)

__all__ = ["PredictionRequest", "PredictionResult", "Predictor"]
