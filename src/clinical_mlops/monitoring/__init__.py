"""Clinical observability (R-O1..R-O3, R-H1, R-H2): is the served model still safe to use?

Monitoring compares what the service sees with what the release was validated on
and turns statistical signals into accountable human action, never into silent
retraining:

* **data drift** — inputs and scores against the bundle's reference profile (PSI,
  KS, chi-square, missingness) and ADWIN / Page-Hinkley (river) on the score stream;
* **concept drift** — outcome-linked metrics as outcomes arrive (rolling AUROC and
  its degradation from the validated value, ECE, calibration slope and
  intercept, ADWIN on the calibration residual);
* **fairness** — per-subgroup metrics and the AUROC gap between subgroups;
* **workflow drift** — override rate (too high, or zero for too long) and alert volume.

Rules from the task spec turn window statistics into de-duplicated alerts
(:mod:`~clinical_mlops.monitoring.alerts`), each with an owner role and an action:
open a review, escalate cases to human review, or suspend the release (the
service then serves the clinical-baseline fallback).
"""
