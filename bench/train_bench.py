"""`make demo` from a fresh clone, and the full training protocol (100 search iterations, 5-fold)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sections import update_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def full_protocol(search_iterations: int = 100, seed: int = 7) -> dict:
    from clinical_mlops.application.training import train_model
    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import SyntheticConfig
    from clinical_mlops.features.snapshot import build_snapshot
    from clinical_mlops.modeling.train import TrainingConfig
    from clinical_mlops.tasks import load_task
    from clinical_mlops.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        snap = build_snapshot(
            ws, load_task("icu_mortality_48h"), synthetic_source(ws, SyntheticConfig(seed=seed))
        )
        started = time.perf_counter()
        result = train_model(
            ws, snap, config=TrainingConfig(seed=seed, search_iterations=search_iterations)
        )
        s = result.summary()
        return {
            "train_s": round(time.perf_counter() - started, 1),
            "selected": s["selected_model"],
            "hyperparameters": s["hyperparameters"],
            "cv_auroc": s["cv_auroc"],
            "test_auroc": s["test"]["auroc"],
            "test_auroc_ci": s["test"]["auroc_ci"],
            "coverage": s["test"]["conformal_coverage"],
            "model_sha256": s["model_sha256"][:16],
        }


def fresh_clone_demo() -> dict:
    """Clone the committed tree and time `make demo` there (venv, install, pipeline)."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.perf_counter()
        out = subprocess.run(
            ["make", "demo"], cwd=clone, capture_output=True, text=True, check=False
        )
        total = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"make demo failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        line = next((ln for ln in out.stdout.splitlines() if ln.strip().startswith("done in")), "")
        return {"make_demo_s": round(total, 1), "pipeline_line": line.strip()}


def main() -> None:
    demo = fresh_clone_demo()
    print(demo, flush=True)
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "measure.py"),
            "train_bench:full_protocol",
            json.dumps({"search_iterations": 100}),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    r = m["result"]
    print(m, flush=True)
    cv = ", ".join(f"{k} {v:.3f}" for k, v in r["cv_auroc"].items())
    body = f"""`make demo` in a fresh clone (creates the virtual environment, installs with uv, generates the
synthetic source, builds the snapshot, trains with 20 search iterations, 1,000 bootstrap resamples,
writes report and model card): **{demo["make_demo_s"]:.0f} s** wall time ({demo["pipeline_line"] or "pipeline line not found"}).

Full protocol (`TrainingConfig(search_iterations=100)`, 5-fold CV inside train, three candidates,
1,000 bootstrap resamples), default snapshot, seed 7, one process:

| measure | value |
|---|---|
| training + evaluation wall time | {r["train_s"]:.0f} s |
| whole process (incl. snapshot build) | {m["seconds"]:.0f} s |
| peak RSS | {m["peak_rss_mib"]:,.0f} MiB |
| CV AUROC | {cv} |
| selected | {r["selected"]} {json.dumps(r["hyperparameters"])} |
| test AUROC | {r["test_auroc"]:.3f} (95 % CI {r["test_auroc_ci"][0]:.3f}–{r["test_auroc_ci"][1]:.3f}) |
| conformal coverage (target 0.90) | {r["coverage"]:.3f} |
| model_sha256 (first 16) | {r["model_sha256"]} |
"""
    update_section(
        "train",
        "Model plane: make demo and the full protocol",
        body,
        command="make bench (bench/train_bench.py)",
    )


if __name__ == "__main__":
    main()
