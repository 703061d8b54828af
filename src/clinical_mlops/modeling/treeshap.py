"""Exact path-dependent TreeSHAP for XGBoost boosters, from tables compiled once per model.

What it computes
    The numbers of ``booster.predict(DMatrix(X), pred_contribs=True)``: one contribution
    per model-matrix column plus the bias in the last column, shape ``(n, columns + 1)``,
    in log-odds. It is path-dependent TreeSHAP (Lundberg et al. 2020) with XGBoost's
    conventions: a node's cover is its ``sum_hessian``; a value is rounded to float32
    and goes left when ``x < split_condition``, a missing value (NaN) goes to the node's
    default child; a feature split more than once on a path is one player (its one
    fraction is 1 only if the row follows every one of those splits, its zero fraction
    the product of their cover ratios); the bias is the base margin plus every tree's
    cover-weighted mean leaf value. XGBoost accumulates in float32 and this module in
    float64, so the two agree to float32 rounding (about 1e-6 of the size of the
    numbers involved), and a row's contributions add up to XGBoost's margin to the
    same precision.

    The margin itself (:meth:`TreeShapTables.margin`) is XGBoost's bit for bit: the same
    comparisons find each tree's leaf, and the leaf values are added in float32 in tree
    order from XGBoost's own base margin, as XGBoost adds them. :meth:`compile` checks
    this against ``inplace_predict`` on probe rows and records it in ``exact_margins``.

How
    A leaf's share of a tree's output depends on a row only through the directions the
    row takes at the splits on the leaf's path (one fraction 0 or 1 per path feature);
    the zero fractions are fixed by the model. So Shapley values are tabulated once for
    every pattern of directions (the precomputation of Fast TreeSHAP v2, Yang 2021),
    for groups of leaves at a time: a group is a node's whole subtree, and its table is
    indexed by the comparison bits of the node's path and of the subtree's splits (at
    most 8 bits, a 256-row table). Scoring is then table look-ups, about a dozen numpy
    calls per batch of :data:`CHUNK` rows: one float32 comparison per split bit, the
    bits of each group packed into a byte, one gathered table row per group and one
    ``np.bincount`` that sums every row's values per column in a fixed order. A row's
    result is therefore bit-identical whatever batch it is scored in.

Cost
    Memory: ``2^bits × width`` float64 cells per group (the width is the most features
    any group involves, padded to 1, 2, 4 or 8); the groups are as large as 8 bits allow,
    made smaller while the total exceeds :data:`MAX_CELLS`. The demo release (152 trees of
    depth 4 on 30 columns) compiles in about 0.2 s to 300 groups and 6 MiB with the index
    arrays. Scoring a row costs 8 comparisons, one multiplication and one table-row gather
    per group, and one addition per cell of the gathered rows: on one core about 10 µs a
    row in batches and under 20 µs for a lone row, where ``pred_contribs`` takes about
    180 µs a row plus a few hundred µs per call (``bench/treeshap_bench.py``).

When it declines
    :meth:`TreeShapTables.compile` returns ``None``, and the caller keeps XGBoost's
    ``pred_contribs``, for anything but a single-output binary ``gbtree`` model
    (``binary:logistic`` or ``binary:logitraw``: no multi-class or multi-target model,
    no dart or gblinear booster), for categorical splits, for a leaf more than
    :data:`MAX_DEPTH` splits deep, for a node without positive cover, and for tables
    that would exceed :data:`MAX_CELLS` cells however the leaves are grouped.
    :func:`decline_reason` names the reason. The cell limit admits, for full trees,
    about 1,000 trees of depth 5, 250 of depth 6, 60 of depth 7 or 16 of depth 8; trees
    grown with a ``min_child_weight`` are rarely full (40 trees of depth 8 trained on
    8,000 rows took 31 MiB and compiled in 1.5 s). The project's default random forest
    (depth 10) is declined.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

__all__ = ["CHUNK", "MAX_CELLS", "MAX_DEPTH", "TreeShapTables", "decline_reason"]

#: the deepest leaf allowed, in splits on its path (the project's search space tops out at 8)
MAX_DEPTH = 8
#: the most float64 table cells a model may compile to (4 Mi cells = 32 MiB)
MAX_CELLS = 4 * 1024 * 1024
#: rows scored together at most; larger batches run in chunks (results do not depend on it)
CHUNK = 128
_CHUNK_CELLS = 1 << 19  # fewer rows per chunk for models with many groups: bounded buffers

_OBJECTIVES = ("binary:logistic", "binary:logitraw")
_GROUPS_AT_ONCE = 64  # groups whose leaves' Shapley tables are computed together
_BITS = 8  # comparison bits per group: one byte, packed by one multiplication
# b0 + b1·2^8 + ... + b7·2^56 times this has b0 + 2·b1 + ... + 128·b7 in its top byte
_PACK = np.uint64(0x0102040810204080)


class _Declined(Exception):
    """The model is outside what the tables support (the message says why)."""


@dataclass
class _Tree:
    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]  # split condition of an internal node, value of a leaf
    default_left: list[bool]
    cover: list[float]


@dataclass
class _Group:
    """A node's subtree: its leaves are tabulated together over ``slots`` comparison bits."""

    tree: int
    slots: list[int]  # node ids whose comparison bits index the table, root first
    leaves: list[int]  # leaf node ids
    features: list[int]  # distinct model columns split on by ``slots``


def decline_reason(booster: xgb.Booster) -> str | None:
    """Return why ``booster`` cannot be compiled to tables, or ``None`` when it can."""
    try:
        _plan(booster)
    except _Declined as exc:
        return str(exc)
    return None


class TreeShapTables:
    """Exact TreeSHAP contributions of one XGBoost booster, by table look-up.

    Build with :meth:`compile`; :meth:`contributions` then returns what
    ``booster.predict(xgb.DMatrix(X), pred_contribs=True)`` returns, in float64.
    """

    def __init__(
        self,
        *,
        n_columns: int,
        bias: float,
        slot_column: np.ndarray,
        slot_threshold: np.ndarray,
        offset: np.ndarray,
        table: np.ndarray,
        value_column: np.ndarray,
        leaf_value: np.ndarray,
        base_margin: np.float32,
    ) -> None:
        self.n_columns = n_columns
        #: the last column of every result: base margin + each tree's expected value
        self.bias = bias
        self._slot_column = slot_column  # (groups·8,) column of [X, -X] each bit compares
        self._slot_threshold = slot_threshold  # (groups·8,) float32: bit = value < threshold
        self._offset = offset  # (groups,) int64: first table row of each group
        self._table = table  # (rows, width) float64
        self._value_column = value_column  # (groups·width,) output column of each table cell
        # (table rows,) float32: the leaf value a pattern reaches in its group's tree, else 0
        self._leaf_value = leaf_value
        self._base_margin = base_margin  # XGBoost's own float32 base margin
        #: whether :meth:`margin` reproduced XGBoost's margins bit for bit when compiled
        self.exact_margins = False
        q = len(value_column)
        self._rows = max(1, min(CHUNK, _CHUNK_CELLS // q))  # rows per chunk
        # bincount bins of a whole chunk: row r's values land in r·(columns + 1) + column
        self._bins = (
            np.arange(self._rows, dtype=np.int64)[:, None] * (n_columns + 1) + value_column
        ).reshape(-1)

    @classmethod
    def compile(cls, booster: xgb.Booster) -> TreeShapTables | None:
        """Return the tables of ``booster``, or ``None`` when it is unsupported or too large."""
        try:
            made = _compile(*_plan(booster), base_margin=_xgboost_base_margin(booster))
        except _Declined:
            return None
        made.exact_margins = _margins_agree(made, booster)
        return made

    @property
    def n_groups(self) -> int:
        return len(self._offset)

    @property
    def nbytes(self) -> int:
        """Memory held by the tables and index arrays, in bytes."""
        return sum(
            a.nbytes
            for a in (
                self._slot_column,
                self._slot_threshold,
                self._offset,
                self._table,
                self._value_column,
                self._bins,
            )
        )

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Return TreeSHAP contributions of the rows of ``X``, shape (n, columns + 1), float64.

        The last column is the bias. ``X`` holds the model's columns in order; values are
        rounded to float32 as XGBoost does, NaN meaning missing.
        """
        X = self._checked(X)
        n, step = len(X), self._rows
        if n <= step:
            return self._chunk(X)
        out = np.empty((n, self.n_columns + 1))
        for start in range(0, n, step):
            out[start : start + step] = self._chunk(X[start : start + step])
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Return the margins of the rows of ``X`` (float64 of XGBoost's float32 margins).

        XGBoost starts from its base margin and adds each tree's leaf value in float32, in
        tree order; the leaves here are found from the same comparisons as the tables, and
        added in the same order with ``np.add.accumulate`` (sequential, unlike ``sum``). So
        the margins are ``Booster.predict``'s bit for bit; :meth:`compile` checks this on
        probe rows and records it in :attr:`exact_margins` (callers use XGBoost otherwise).
        """
        X = self._checked(X)
        n, step = len(X), self._rows
        if n <= step:
            return self._margin_chunk(self._codes(X))
        return np.concatenate(
            [self._margin_chunk(self._codes(X[s : s + step])) for s in range(0, n, step)]
        )

    def margin_and_contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (:meth:`margin`, :meth:`contributions`), comparing each value once."""
        X = self._checked(X)
        n, step = len(X), self._rows
        margin = np.empty(n)
        out = np.empty((n, self.n_columns + 1))
        for start in range(0, n, step):
            rows = self._codes(X[start : start + step])
            margin[start : start + step] = self._margin_chunk(rows)
            out[start : start + step] = self._contributions_chunk(rows)
        return margin, out

    def _margin_chunk(self, rows: np.ndarray) -> np.ndarray:
        terms = np.empty((len(rows), rows.shape[1] + 1), dtype=np.float32)
        terms[:, 0] = self._base_margin
        self._leaf_value.take(rows, out=terms[:, 1:])
        return np.add.accumulate(terms, axis=1)[:, -1].astype(np.float64)

    def _checked(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_columns:
            raise ValueError(
                f"X: expected a 2-d array of {self.n_columns} model columns, got shape {X.shape}"
            )
        return X

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """Return each row's table row per group, shape (n, groups), int64."""
        n, f = X.shape
        both = np.empty((n, 2 * f), dtype=np.float32)
        both[:, :f] = X
        np.negative(both[:, :f], out=both[:, f:])
        bits = both.take(self._slot_column, axis=1) < self._slot_threshold  # (n, groups·8)
        code = bits.view("<u8")  # one word per group, byte k = bit k
        code *= _PACK
        code >>= np.uint64(56)
        row = code.view(np.int64)
        row += self._offset
        return row

    def _chunk(self, X: np.ndarray) -> np.ndarray:
        return self._contributions_chunk(self._codes(X))

    def _contributions_chunk(self, rows: np.ndarray) -> np.ndarray:
        n, f = len(rows), self.n_columns
        values = self._table.take(rows, axis=0)  # (n, groups, width)
        out = np.bincount(
            self._bins[: n * len(self._value_column)],
            weights=values.reshape(-1),
            minlength=n * (f + 1),
        ).reshape(n, f + 1)
        out[:, f] = self.bias
        return out


# -- compiling ---------------------------------------------------------------------------------


def _base_margin(learner: dict[str, Any], objective: str) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip()
    values = [float(v) for v in raw.strip("[]").split(",") if v.strip()]
    if len(values) != 1:
        raise _Declined(f"base_score: expected one value, got {raw!r}")
    # XGBoost stores base_score on the objective's output scale: a probability for
    # binary:logistic (the margin is its logit), already a margin for binary:logitraw.
    score = float(np.float32(values[0]))
    if objective == "binary:logistic":
        if not 0.0 < score < 1.0:
            raise _Declined(f"base_score: expected a probability in (0, 1), got {score}")
        return math.log(score / (1.0 - score))
    return score


def _read_tree(t: int, tree: dict[str, Any], n_columns: int) -> _Tree:
    if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
        raise _Declined(f"tree {t}: expected scalar leaves, got vector leaves")
    if any(tree.get("split_type") or ()):
        raise _Declined(f"tree {t}: categorical splits are not supported")
    out = _Tree(
        left=list(tree["left_children"]),
        right=list(tree["right_children"]),
        feature=list(tree["split_indices"]),
        threshold=[float(v) for v in tree["split_conditions"]],
        default_left=[bool(v) for v in tree["default_left"]],
        cover=[float(v) for v in tree["sum_hessian"]],
    )
    for nid, child in enumerate(out.left):
        if child != -1:
            if not out.cover[nid] > 0:
                raise _Declined(f"tree {t}: node {nid} has no positive cover (sum_hessian)")
            if not 0 <= out.feature[nid] < n_columns:
                raise _Declined(f"tree {t}: node {nid} splits on column {out.feature[nid]}")
    return out


def _plan(booster: xgb.Booster) -> tuple[int, float, list[_Tree], list[_Group]]:
    """Return (columns, base margin, trees, leaf groups) of ``booster``, or raise _Declined."""
    model = json.loads(bytes(booster.save_raw(raw_format="json")))
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective not in _OBJECTIVES:
        raise _Declined(f"objective: expected one of {', '.join(_OBJECTIVES)}, got {objective!r}")
    params = learner["learner_model_param"]
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) > 1:
        raise _Declined("learner_model_param: expected a single-output model")
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise _Declined(f"gradient_booster: expected gbtree, got {gb['name']!r}")
    n_columns = int(params["num_feature"])
    base = _base_margin(learner, objective)
    trees = [_read_tree(t, tree, n_columns) for t, tree in enumerate(gb["model"]["trees"])]
    if not trees:
        raise _Declined("trees: the model has no trees")
    # Largest groups first (fewest look-ups per row), smaller ones while the tables are too
    # big. Not monotone: a group of a split's two leaves has the table of one of them.
    fewest = MAX_CELLS + 1
    for budget in range(_BITS, 0, -1):
        groups = [g for t, tree in enumerate(trees) for g in _groups(t, tree, budget)]
        width = _pad_width(max(len(g.features) for g in groups))
        cells = width * sum(1 << len(g.slots) for g in groups)
        if cells <= MAX_CELLS:
            return n_columns, base, trees, groups
        fewest = min(fewest, cells)
    raise _Declined(f"tables: at least {fewest} cells, more than MAX_CELLS = {MAX_CELLS}")


def _pad_width(d: int) -> int:
    return 1 << max(d - 1, 0).bit_length()


def _groups(t: int, tree: _Tree, budget: int) -> list[_Group]:
    """Cut ``tree`` into subtrees whose path and splits need at most ``budget`` bits."""
    out: list[_Group] = []

    def internal(nid: int) -> list[int]:
        if tree.left[nid] == -1:
            return []
        return [nid, *internal(tree.left[nid]), *internal(tree.right[nid])]

    def leaves(nid: int) -> list[int]:
        if tree.left[nid] == -1:
            return [nid]
        return [*leaves(tree.left[nid]), *leaves(tree.right[nid])]

    def visit(nid: int, path: list[int]) -> None:
        if len(path) > MAX_DEPTH:
            raise _Declined(f"tree {t}: a leaf deeper than MAX_DEPTH = {MAX_DEPTH} splits")
        below = internal(nid)
        if below and len(path) + len(below) > budget:
            visit(tree.left[nid], [*path, nid])
            visit(tree.right[nid], [*path, nid])
            return
        slots = [*path, *below]
        features = list(dict.fromkeys(tree.feature[s] for s in slots))
        out.append(_Group(tree=t, slots=slots, leaves=leaves(nid), features=features))

    visit(0, [])
    return out


def _shapley(value: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Return leaves' Shapley values for every pattern of one fractions, shape (L, 2^d, d).

    ``value`` (L,) leaf values, ``zero`` (L, d) zero fractions of the d path features.
    The game of a leaf is v·∏_j (o_j if j plays else z_j); feature i's value is
    v·(o_i - z_i)·Σ_k w_k·e_k, w_k = k!(d-k-1)!/d! and e_k the coefficient of t^k in
    ∏_{j≠i} (z_j + o_j·t), the sum over coalitions of size k of ∏ o (in) ∏ z (out).
    """
    n_leaves, d = zero.shape
    patterns = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(np.float64)
    weight = np.array([math.factorial(k) * math.factorial(d - k - 1) for k in range(d)])
    weight = weight / math.factorial(d)
    out = np.empty((n_leaves, 1 << d, d))
    for i in range(d):
        poly = np.zeros((n_leaves, 1 << d, d))
        poly[:, :, 0] = 1.0
        for j in range(d):
            if j != i:
                shifted = np.zeros_like(poly)
                shifted[:, :, 1:] = poly[:, :, :-1] * patterns[None, :, j, None]
                poly = poly * zero[:, None, j, None] + shifted
        out[:, :, i] = (
            value[:, None] * (patterns[None, :, i] - zero[:, None, i]) * (poly * weight).sum(axis=2)
        )
    return out


@dataclass
class _LeafPath:
    value: float
    features: list[int]  # distinct columns on the path, first split first
    zero: list[float]  # zero fraction per distinct column
    expected: float  # value × product of every zero fraction on the path
    # per split on the path: (node id, index into features, whether bit 1 means "follows")
    splits: list[tuple[int, int, bool]]


def _leaf_paths(tree: _Tree) -> dict[int, _LeafPath]:
    out: dict[int, _LeafPath] = {}

    def visit(nid: int, path: list[tuple[int, bool]]) -> None:
        if tree.left[nid] != -1:
            visit(tree.left[nid], [*path, (nid, True)])
            visit(tree.right[nid], [*path, (nid, False)])
            return
        features: list[int] = []
        zero: list[float] = []
        splits: list[tuple[int, int, bool]] = []
        expected = tree.threshold[nid]
        for k, (node, went_left) in enumerate(path):
            child = path[k + 1][0] if k + 1 < len(path) else nid
            z = tree.cover[child] / tree.cover[node]
            expected *= z
            f = tree.feature[node]
            if f not in features:
                features.append(f)
                zero.append(1.0)
            j = features.index(f)
            zero[j] *= z
            # A default-left node's bit says "x >= threshold" (goes right), a
            # default-right node's "x < threshold" (goes left): NaN compares false.
            splits.append((node, j, went_left != tree.default_left[node]))
        out[nid] = _LeafPath(tree.threshold[nid], features, zero, expected, splits)

    visit(0, [])
    return out


def _leaf_tables(
    paths: list[dict[int, _LeafPath]], leaves: list[tuple[int, int]]
) -> dict[tuple[int, int], np.ndarray]:
    """Return the Shapley tables of ``leaves`` (tree, node), computed together by path size."""
    out: dict[tuple[int, int], np.ndarray] = {}
    by_d: dict[int, list[tuple[int, int]]] = {}
    for t, nid in leaves:
        by_d.setdefault(len(paths[t][nid].features), []).append((t, nid))
    for d, keys in by_d.items():
        if d:
            value = np.array([paths[t][nid].value for t, nid in keys])
            zero = np.array([paths[t][nid].zero for t, nid in keys])
            out.update(zip(keys, _shapley(value, zero), strict=True))
    return out


def _compile(
    n_columns: int,
    base: float,
    trees: list[_Tree],
    groups: list[_Group],
    *,
    base_margin: np.float32,
) -> TreeShapTables:
    paths = [_leaf_paths(tree) for tree in trees]
    bias = base + math.fsum(p.expected for tree_paths in paths for p in tree_paths.values())
    width = _pad_width(max(len(g.features) for g in groups))
    rows = [1 << len(g.slots) for g in groups]
    offset = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    table = _aligned_zeros((sum(rows), width))
    leaf_value = np.zeros(sum(rows), dtype=np.float32)
    value_column = np.full((len(groups), width), n_columns, dtype=np.int64)  # pad: bias column
    slot_column = np.zeros((len(groups), _BITS), dtype=np.intp)
    slot_threshold = np.full((len(groups), _BITS), -np.inf, dtype=np.float32)  # pad: bit 0
    leaf_table: dict[tuple[int, int], np.ndarray] = {}
    for g, group in enumerate(groups):
        if g % _GROUPS_AT_ONCE == 0:  # the leaves' Shapley tables, a bounded number at a time
            leaf_table = _leaf_tables(
                paths,
                [(h.tree, leaf) for h in groups[g : g + _GROUPS_AT_ONCE] for leaf in h.leaves],
            )
        tree = trees[group.tree]
        value_column[g, : len(group.features)] = group.features
        for k, node in enumerate(group.slots):
            threshold = np.float32(tree.threshold[node])
            if tree.default_left[node]:
                # x >= thr  <=>  -x < -(largest float32 below thr); NaN compares false
                slot_column[g, k] = n_columns + tree.feature[node]
                slot_threshold[g, k] = -np.nextafter(threshold, np.float32(-np.inf))
            else:
                slot_column[g, k] = tree.feature[node]
                slot_threshold[g, k] = threshold
        # bit k of every table row's code, and where each feature sits in the group's row
        code_bits = (np.arange(rows[g])[:, None] >> np.arange(len(group.slots))) & 1
        position = {node: k for k, node in enumerate(group.slots)}
        where = {f: k for k, f in enumerate(group.features)}
        block = table[offset[g] : offset[g] + rows[g]]
        reached = leaf_value[offset[g] : offset[g] + rows[g]]
        for leaf in group.leaves:
            p = paths[group.tree][leaf]
            if not p.features:  # a stump: the leaf is the whole tree, nothing to share
                reached[:] = np.float32(p.value)
                continue
            # a path feature's one fraction is 1 when the row follows all of its splits
            missed = code_bits[:, [position[node] for node, _, _ in p.splits]] != [
                follows for _, _, follows in p.splits
            ]
            reached[~missed.any(axis=1)] = np.float32(p.value)  # the row ends in this leaf
            split_of = np.zeros((len(p.splits), len(p.features)), dtype=np.int64)
            split_of[np.arange(len(p.splits)), [j for _, j, _ in p.splits]] = 1
            pattern = ((missed @ split_of) == 0) @ (1 << np.arange(len(p.features)))
            block[:, [where[f] for f in p.features]] += leaf_table[(group.tree, leaf)][pattern]
    return TreeShapTables(
        n_columns=n_columns,
        bias=bias,
        slot_column=slot_column.reshape(-1),
        slot_threshold=slot_threshold.reshape(-1),
        offset=offset,
        table=table,
        value_column=value_column.reshape(-1),
        leaf_value=leaf_value,
        base_margin=base_margin,
    )


def _xgboost_base_margin(booster: xgb.Booster) -> np.float32:
    """Return the float32 margin XGBoost starts every row from (an empty tree range)."""
    rounds = booster.num_boosted_rounds()
    probe = xgb.DMatrix(np.zeros((1, booster.num_features())), nthread=1)
    out = booster.predict(
        probe, output_margin=True, iteration_range=(rounds, rounds), validate_features=False
    )
    return np.float32(np.asarray(out).reshape(-1)[0])


def _margins_agree(tables: TreeShapTables, booster: xgb.Booster) -> bool:
    """Return whether :meth:`TreeShapTables.margin` equals XGBoost's on probe rows, bitwise.

    The probes sit on, just below and just above every split threshold, with missing
    values, so every comparison is exercised both ways.
    """
    thresholds = tables._slot_threshold[np.isfinite(tables._slot_threshold)]
    if thresholds.size == 0:
        probe = np.zeros((4, tables.n_columns))
    else:
        rng = np.random.default_rng(0)
        near = np.concatenate(
            [
                np.abs(thresholds),
                -np.abs(thresholds),
                np.nextafter(thresholds, np.float32(np.inf)),
                np.nextafter(thresholds, np.float32(-np.inf)),
            ]
        ).astype(np.float64)
        probe = rng.choice(near, size=(512, tables.n_columns))
        probe[rng.random(probe.shape) < 0.1] = np.nan
    ours = tables.margin(probe)
    theirs = booster.inplace_predict(probe, predict_type="margin", validate_features=False)
    return bool(np.array_equal(ours, np.asarray(theirs, dtype=np.float64)))


def _aligned_zeros(shape: tuple[int, int]) -> np.ndarray:
    """Return float64 zeros whose rows start on 64-byte boundaries when a row is 64 bytes."""
    size = shape[0] * shape[1]
    raw = np.zeros(size + 8)
    start = (-raw.ctypes.data % 64) // 8
    return raw[start : start + size].reshape(shape)
