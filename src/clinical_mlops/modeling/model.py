"""Scoring models stored as data: an XGBoost booster in its JSON format, or a linear model.

Both kinds answer the same three questions for a model matrix: the margin
(log-odds score), the uncalibrated probability, and exact per-column
contributions whose sum plus a bias equals the margin — TreeSHAP for boosted
trees and random forests (from tables compiled from the booster, see
:mod:`clinical_mlops.modeling.treeshap`, or XGBoost's ``pred_contribs`` for models
too deep to tabulate), and coefficient × centred value for the linear model.
Serialised bytes are what the release hashes; loading them executes no code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import xgboost as xgb

from clinical_mlops.hashing import canonical_json, sha256_bytes
from clinical_mlops.modeling.treeshap import TreeShapTables

__all__ = ["Explainer", "LinearModel", "ScoringModel", "TreeModel", "load_scoring_model"]

ModelKind = Literal["xgboost", "random_forest", "logistic_regression"]
#: how contributions were computed; recorded with every served explanation
Explainer = Literal["treeshap-tables", "xgboost-pred-contribs", "linear"]


class ScoringModel(Protocol):
    kind: ModelKind

    def margin(self, X: np.ndarray) -> np.ndarray: ...

    def margin_fast(self, X: np.ndarray) -> np.ndarray: ...

    @property
    def explainer(self) -> Explainer: ...

    def contributions(self, X: np.ndarray, *, method: Explainer | None = None) -> np.ndarray: ...

    def margin_and_contributions(
        self, X: np.ndarray, *, method: Explainer | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def to_bytes(self) -> bytes: ...


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


#: batch size from which XGBoost's own margins are used (below it, the TreeSHAP tables' exact
#: copy of them, whose fixed cost is lower) and from which pred_contribs, where the model cannot
#: be tabulated, runs on every core (below it a thread pool costs more than it saves)
WIDE_BATCH = 64


@dataclass
class TreeModel:
    """A gradient-boosted or random-forest ensemble held as an XGBoost booster."""

    kind: ModelKind
    booster: xgb.Booster
    columns: list[str]
    _wide_booster: xgb.Booster | None = field(default=None, init=False, repr=False, compare=False)
    # (tables or None,) once compiled; None before
    _compiled: tuple[TreeShapTables | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _dmatrix(self, X: np.ndarray) -> xgb.DMatrix:
        # nthread=1: copying a few rows gains nothing from a thread pool, and on a busy
        # machine waking one costs tens of milliseconds (measured on the serving path).
        return xgb.DMatrix(np.asarray(X, dtype=np.float64), feature_names=self.columns, nthread=1)

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.booster.predict(self._dmatrix(X), output_margin=True), dtype=np.float64
        )

    def margin_fast(self, X: np.ndarray) -> np.ndarray:
        """Return the same margins as :meth:`margin`, without building a DMatrix (serving path).

        ``inplace_predict`` walks the same trees in the same float32 arithmetic, so
        the result is bit-identical to :meth:`margin` (tested); it only skips the
        per-call DMatrix construction that dominates single-row latency.
        """
        tables = self._margin_tables(X)
        if tables is not None:
            return tables.margin(self._finite(X))
        out = self.booster.inplace_predict(
            np.asarray(X, dtype=np.float64), predict_type="margin", validate_features=False
        )
        return np.asarray(out, dtype=np.float64)

    def probability(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.margin(X))

    @property
    def explainer(self) -> Explainer:
        """The method :meth:`contributions` uses: compiled tables when the model allows them."""
        return "treeshap-tables" if self._tables() is not None else "xgboost-pred-contribs"

    def _margin_tables(self, X: np.ndarray) -> TreeShapTables | None:
        """Return the tables when they give these rows' margins, else None.

        A few rows: the tables' margins (XGBoost's bit for bit, checked when compiled) cost
        about 20 µs where inplace_predict's fixed cost is about 250 µs.
        """
        tables = self._tables()
        if tables is not None and tables.exact_margins and len(X) < WIDE_BATCH:
            return tables
        return None

    def _tables(self) -> TreeShapTables | None:
        if self._compiled is None:
            self._compiled = (TreeShapTables.compile(self.booster),)
        return self._compiled[0]

    def contributions(self, X: np.ndarray, *, method: Explainer | None = None) -> np.ndarray:
        """Exact TreeSHAP contributions, shape (n, columns + 1); the last column is the bias.

        By default from tables compiled once from the booster (``modeling.treeshap``: the
        numbers of XGBoost's ``pred_contribs`` to float32 rounding, several times faster,
        and bit-identical for a row whatever batch it is in); ``method`` names one
        explicitly — a replay recomputes a record with the method that made it.
        """
        tables = self._tables()
        if method is None:
            method = self.explainer
        if method == "treeshap-tables" and tables is not None:
            return tables.contributions(self._finite(X))
        if method != "xgboost-pred-contribs":
            raise ValueError(f"this model cannot explain with {method!r}")
        booster = self.booster if len(X) < WIDE_BATCH else self._wide()
        # Columns are in the model's order by construction (the preprocessor encodes them),
        # so the per-call name check is skipped: it costs more than one row's TreeSHAP.
        dm = xgb.DMatrix(np.asarray(X, dtype=np.float64), nthread=1)
        return np.asarray(
            booster.predict(dm, pred_contribs=True, validate_features=False), dtype=np.float64
        )

    def margin_and_contributions(
        self, X: np.ndarray, *, method: Explainer | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (:meth:`margin`, :meth:`contributions`) for the serving path.

        The margins are :meth:`margin`'s exactly, bit for bit (tested).
        """
        tables = self._margin_tables(X)
        if tables is not None and (method or self.explainer) == "treeshap-tables":
            return tables.margin_and_contributions(self._finite(X))
        return self.margin_fast(X), self.contributions(X, method=method)

    @staticmethod
    def _finite(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if np.isinf(X.astype(np.float32)).any():  # refused as XGBoost refuses it
            raise ValueError("the model matrix holds an infinite value (in float32)")
        return X

    def _wide(self) -> xgb.Booster:
        """Return a copy of the booster that runs TreeSHAP on every core (large batches).

        Each row is explained on its own, so the numbers are the single-threaded ones bit
        for bit (tested); only the rows are spread over the cores.
        """
        if self._wide_booster is None:
            wide = self.booster.copy()
            wide.set_param({"nthread": os.cpu_count() or 1})
            self._wide_booster = wide
        return self._wide_booster

    def to_bytes(self) -> bytes:
        raw = bytes(self.booster.save_raw(raw_format="json"))
        envelope = {"kind": self.kind, "columns": self.columns}
        return canonical_json(envelope) + b"\n" + raw

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.to_bytes())


@dataclass
class LinearModel:
    """Standardised logistic regression: margin = ((x - mean) / scale) · coef + intercept."""

    kind: ModelKind
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    columns: list[str]

    def margin(self, X: np.ndarray) -> np.ndarray:
        return (
            (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        ) @ self.coef + self.intercept

    def margin_fast(self, X: np.ndarray) -> np.ndarray:
        """Return the margins with a per-row result that does not depend on the batch size.

        A matrix product may sum a row in a different order for different batch sizes
        (BLAS blocking), so the same patient could get margins differing in the last
        bit alone or in a batch. Here every row is summed column by column, left to
        right: a record served in a batch replays exactly on its own. The values agree
        with :meth:`margin` to rounding (about 1e-15).
        """
        terms = ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) * self.coef
        acc = np.zeros(len(terms), dtype=np.float64)
        for j in range(terms.shape[1]):
            acc += terms[:, j]
        return acc + self.intercept

    def probability(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.margin(X))

    @property
    def explainer(self) -> Explainer:
        return "linear"

    def contributions(self, X: np.ndarray, *, method: Explainer | None = None) -> np.ndarray:
        """Exact linear SHAP (centred at the training mean); last column is the bias (intercept)."""
        if method not in (None, "linear"):
            raise ValueError(f"a linear model cannot explain with {method!r}")
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        contrib = z * self.coef
        return np.hstack([contrib, np.full((len(z), 1), self.intercept)])

    def margin_and_contributions(
        self, X: np.ndarray, *, method: Explainer | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (:meth:`margin_fast`, :meth:`contributions`)."""
        return self.margin_fast(X), self.contributions(X, method=method)

    def to_bytes(self) -> bytes:
        body = {
            "kind": self.kind,
            "columns": self.columns,
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
        }
        return canonical_json(body)

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.to_bytes())


def load_scoring_model(data: bytes) -> TreeModel | LinearModel:
    """Return the scoring model serialised by ``to_bytes`` (no code is executed)."""
    head, sep, rest = data.partition(b"\n")
    if sep:
        envelope: dict[str, Any] = json.loads(head)
        booster = xgb.Booster()
        booster.load_model(bytearray(rest))
        return TreeModel(kind=envelope["kind"], booster=booster, columns=list(envelope["columns"]))
    body = json.loads(data)
    return LinearModel(
        kind=body["kind"],
        mean=np.asarray(body["mean"]),
        scale=np.asarray(body["scale"]),
        coef=np.asarray(body["coef"]),
        intercept=float(body["intercept"]),
        columns=list(body["columns"]),
    )
