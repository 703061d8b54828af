"""Validation evidence for a trained model: the report (R-L4) and the model card (R-L5).

Evaluation reads one :class:`EvaluationInput` — the locked test set's labels,
calibrated probabilities, conformal sets and feature contributions — and turns it
into a versioned, deterministic validation report (discrimination, calibration,
clinical utility, subgroups and fairness, a clinical baseline, robustness to
missing inputs, error examples, limitations) and a model card.
"""

from clinical_mlops.evaluation.inputs import EvaluationInput
from clinical_mlops.evaluation.model_card import write_model_card
from clinical_mlops.evaluation.report import SCHEMA, evaluate, write_report

__all__ = ["SCHEMA", "EvaluationInput", "evaluate", "write_model_card", "write_report"]
