"""The model plane: from a snapshot to a calibrated, uncertainty-aware model.

``preprocess`` (frozen median imputation, declared one-hot encoding), ``split``
(temporal test set, stratified CV inside train), ``selection`` (candidates and
random search by mean CV AUROC), ``calibration`` (isotonic, stored as
breakpoints), ``conformal`` (class-conditional split conformal sets),
``explain`` (exact per-prediction contributions), ``model`` (the scoring model
as data) and ``train`` (the fitting protocol; the test set is left for evaluation).
Every artifact is JSON; nothing is pickled.
"""
