"""TreeSHAP benchmark: table TreeSHAP against XGBoost's own ``pred_contribs``, same rows.

On a demo-sized booster (152 trees of depth 4 on 30 columns, trained here with seed 7 on
synthetic rows shaped like the demo's) or, with ``--workspace DIR``, on the active
release of a demo workspace (its locked test stays), prints rows/s for batches of 1, 64
and 1000 rows:

- ``tables``: :meth:`TreeShapTables.contributions` (one thread, numpy);
- ``xgb 1 thread``: ``booster.predict(DMatrix(X), pred_contribs=True)`` with
  ``nthread=1``, DMatrix included (what ``TreeModel.contributions`` does);
- ``xgb N threads``: the same with ``nthread`` = every core;

each the best of ``--repeat`` rounds, the methods taking turns within a round so that
drift in a shared machine's speed falls on all alike; then the compile time, the tables'
size and the largest absolute difference from XGBoost over all rows. Prints only.

Run: ``.venv/bin/python bench/treeshap_bench.py [--workspace DIR] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xgboost as xgb

from clinical_mlops.modeling.treeshap import TreeShapTables, decline_reason

BATCHES = (1, 64, 1000)


def demo_sized(seed: int = 7) -> tuple[xgb.Booster, np.ndarray, str]:
    """A booster shaped like the demo release's, trained on synthetic rows, and 7,000 rows."""
    from sklearn.datasets import make_classification

    from clinical_mlops.modeling.selection import PUBLISHED_XGBOOST, fit_candidate

    X, y = make_classification(
        n_samples=14_000,
        n_features=16,
        n_informative=8,
        weights=[0.89],
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    onehot = (rng.integers(0, 14, size=len(X))[:, None] == np.arange(14)).astype(float)
    X = np.hstack([X, onehot])
    columns = [f"c{i}" for i in range(X.shape[1])]
    params = PUBLISHED_XGBOOST | {"n_estimators": 152, "max_depth": 4}
    model = fit_candidate("xgboost", params, X[:7000], y[:7000], columns=columns, seed=seed)
    return model.booster, X[7000:], "synthetic demo-sized booster (seed 7)"


def from_workspace(path: Path) -> tuple[xgb.Booster, np.ndarray, str]:
    from _workspace import test_rows

    data = test_rows(path)
    booster = xgb.Booster()
    booster.load_model(bytearray(data["booster_json"]))
    return booster, np.asarray(data["X"], dtype=np.float64), f"release {data['release']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a demo workspace (read only)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best one counts")
    args = parser.parse_args()

    booster, X, source = from_workspace(args.workspace) if args.workspace else demo_sized()
    cores = os.cpu_count() or 1
    booster.set_param({"nthread": 1})
    wide = booster.copy()
    wide.set_param({"nthread": cores})
    n_trees = len(booster.get_dump())

    started = time.perf_counter()
    tables = TreeShapTables.compile(booster)
    compile_s = time.perf_counter() - started
    if tables is None:
        raise SystemExit(f"the booster does not compile to tables: {decline_reason(booster)}")

    def xgb_contribs(b: xgb.Booster) -> Callable[[np.ndarray], np.ndarray]:
        def run(batch: np.ndarray) -> np.ndarray:
            dm = xgb.DMatrix(batch, nthread=1)
            return b.predict(dm, pred_contribs=True, validate_features=False)

        return run

    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "tables": tables.contributions,
        "xgb 1 thread": xgb_contribs(booster),
        f"xgb {cores} threads": xgb_contribs(wide),
    }
    print(f"{source}: {n_trees} trees, {X.shape[1]} columns, {len(X)} rows")
    print(
        f"tables: compiled in {compile_s * 1000:.0f} ms, {tables.n_groups} groups, "
        f"{tables.nbytes / 2**20:.1f} MiB"
    )
    ref = xgb_contribs(booster)(X).astype(np.float64)
    ours = tables.contributions(X)
    diff = np.abs(ours - ref)
    margin = booster.predict(xgb.DMatrix(X), output_margin=True, validate_features=False)
    print(
        f"max |tables - pred_contribs| = {diff.max():.3g} (contributions up to "
        f"{np.abs(ref).max():.3g}); max |row sum - margin| = "
        f"{np.abs(ours.sum(axis=1) - margin).max():.3g}"
    )

    print(f"\n{'rows/s':>14} " + " ".join(f"{name:>14}" for name in methods) + "   speed-up")
    for size in BATCHES:
        # Enough batches for a steady figure: at least 1,000 rows, at most every row.
        n_batches = max(1, min(len(X) // size, max(1000 // size, 20)))
        batches = [X[i * size : (i + 1) * size] for i in range(n_batches)]
        best = dict.fromkeys(methods, float("inf"))
        for _ in range(args.repeat):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                for batch in batches:
                    fn(batch)
                best[name] = min(best[name], time.perf_counter() - t0)
        rows = size * n_batches
        rates = {name: rows / seconds for name, seconds in best.items()}
        base = rates["xgb 1 thread"]
        print(
            f"{f'batch {size}':>14} "
            + " ".join(f"{rate:>14,.0f}" for rate in rates.values())
            + f"   {rates['tables'] / base:.1f}x one thread, "
            + f"{rates['tables'] / rates[f'xgb {cores} threads']:.1f}x {cores} threads"
        )
        per_call = best["tables"] / n_batches * 1e6
        print(f"{'':>14} tables: {per_call:,.0f} µs per call of {size} rows")


if __name__ == "__main__":
    main()
