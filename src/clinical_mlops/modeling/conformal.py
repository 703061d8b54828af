"""Class-conditional (Mondrian) split-conformal prediction sets (SPEC R-T6, R-O4).

For a calibrated probability ``p`` of the outcome, the nonconformity of label
``k`` is ``1 - P(k)`` (``P(1) = p``, ``P(0) = 1 - p``). On a calibration set the
model never trained on, each class gets its own threshold ``q_k``: the
``ceil((n_k + 1)(1 - alpha))``-th smallest score among calibration stays whose
true label is ``k``. A label joins the set when its score is at most ``q_k``.

Why class-conditional: deaths are about one stay in nine. Marginal (pooled)
conformal can meet 90 % overall coverage while covering far fewer of the deaths;
the Mondrian version guarantees, for exchangeable data, at least ``1 - alpha``
coverage *within each true class* — among the patients who die and among those
who survive.

Sets: ``{no}`` or ``{yes}`` are confident; ``{no, yes}`` is ambiguous and
``{}`` (empty) means the case looks unlike either class — both are flagged as
low confidence for a clinician. The guarantee assumes exchangeability with the
calibration stays; under temporal drift, empirical coverage on later data is
what the validation report measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinical_mlops.errors import ContractViolation, ValueInvalid

__all__ = ["MondrianConformal", "set_labels"]

SCHEMA = "clinical-mlops/conformal/mondrian/v1"


@dataclass(frozen=True)
class MondrianConformal:
    """Per-class thresholds on the nonconformity score ``1 - P(label)``."""

    alpha: float
    quantiles: dict[int, float]
    n_calibration: dict[int, int]

    @classmethod
    def fit(
        cls, probabilities: np.ndarray, labels: np.ndarray, *, alpha: float
    ) -> MondrianConformal:
        """Return thresholds from calibrated probabilities of stays the model did not train on."""
        if not 0 < alpha < 1:
            raise ValueInvalid(f"alpha: expected 0 < alpha < 1, got {alpha}")
        p = np.asarray(probabilities, dtype=np.float64)
        y = np.asarray(labels, dtype=int)
        quantiles: dict[int, float] = {}
        counts: dict[int, int] = {}
        for k in (0, 1):
            scores = np.sort(1.0 - (p[y == 1] if k == 1 else 1.0 - p[y == 0]))
            n_k = len(scores)
            if n_k == 0:
                raise ContractViolation(
                    f"conformal calibration set has no stays with label {k}; it needs both"
                )
            rank = math.ceil((n_k + 1) * (1 - alpha))
            quantiles[k] = float(scores[rank - 1]) if rank <= n_k else math.inf
            counts[k] = n_k
        return cls(alpha=alpha, quantiles=quantiles, n_calibration=counts)

    def predict_sets(self, probabilities: np.ndarray) -> np.ndarray:
        """Return a bool array (n, 2): column 0 = "no" in the set, column 1 = "yes" in the set."""
        p = np.asarray(probabilities, dtype=np.float64)
        return np.column_stack([p <= self.quantiles[0], 1.0 - p <= self.quantiles[1]])

    def finite_sample_slack(self) -> dict[int, float]:
        """Upper slack of the guarantee per class: coverage lies in [1-alpha, 1-alpha+1/(n_k+1))."""
        return {k: 1.0 / (n + 1) for k, n in self.n_calibration.items()}

    def coverage_slack(self, n_test: dict[int, int], *, z: float = 3.0) -> dict[int, float]:
        """Return, per class, how far below ``1 - alpha`` an empirical coverage may fall by chance.

        The guarantee holds on average over calibration draws. For one calibration
        set of ``n_k`` stays the conditional coverage has standard deviation of about
        ``sqrt(alpha(1-alpha)/(n_k+2))``, and a test set of ``m_k`` stays measures it
        with binomial error ``sqrt(alpha(1-alpha)/m_k)``; the slack is ``z`` times
        the combined standard deviation.
        """
        a = self.alpha
        return {
            k: z
            * math.sqrt(
                a * (1 - a) * (1 / (self.n_calibration[k] + 2) + 1 / max(n_test.get(k, 0), 1))
            )
            for k in (0, 1)
        }

    def coverage_bounds(self, labels: np.ndarray, *, z: float = 3.0) -> dict[str, Any]:
        """Return the target ``1 - alpha`` and the lowest coverage chance explains, for a test set."""
        y = np.asarray(labels, dtype=int)
        counts = {k: int((y == k).sum()) for k in (0, 1)}
        slack = self.coverage_slack(counts, z=z)
        n = max(len(y), 1)
        sd = {k: slack[k] / z for k in (0, 1)}
        overall = z * math.sqrt(sum((counts[k] / n) ** 2 * sd[k] ** 2 for k in (0, 1)))
        target = 1 - self.alpha
        return {
            "target": target,
            "slack": round(overall, 6),
            "lower_bound": round(target - overall, 6),
            "slack_by_class": {str(k): round(v, 6) for k, v in slack.items()},
            "lower_bound_by_class": {str(k): round(target - v, 6) for k, v in slack.items()},
            "rule": f"{z:g} standard deviations of calibration-draw and test-sampling error",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": "mondrian_split_conformal",
            "alpha": self.alpha,
            "quantiles": {
                str(k): (None if math.isinf(v) else v) for k, v in self.quantiles.items()
            },
            "n_calibration": {str(k): v for k, v in self.n_calibration.items()},
            "nonconformity": "1 - calibrated probability of the label",
            "guarantee": (
                f"for exchangeable data, P(true label in set | true label = k) >= {1 - self.alpha:.2f} "
                "for each class k"
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MondrianConformal:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"conformal: expected schema {SCHEMA}, got {data.get('schema')!r}")
        q = {int(k): (math.inf if v is None else float(v)) for k, v in data["quantiles"].items()}
        return cls(
            alpha=float(data["alpha"]),
            quantiles=q,
            n_calibration={int(k): int(v) for k, v in data["n_calibration"].items()},
        )


def set_labels(sets: np.ndarray) -> np.ndarray:
    """Return the set of each row as text: ``{no}``, ``{yes}``, ``{no, yes}`` or ``{}``."""
    names = np.array(["{}", "{yes}", "{no}", "{no, yes}"], dtype=object)
    return names[sets[:, 0].astype(int) * 2 + sets[:, 1].astype(int)]
