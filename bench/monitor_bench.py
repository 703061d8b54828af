"""Monitor throughput: inference records per second through every detector (issue: clinical observability).

A clean simulated stream at 40 stays per hour (resampled locked test stays, outcomes after
48 h, 5 % overrides) goes through the full Monitor: bin counts, PSI / KS / chi-square /
missingness on every input and the score, river ADWIN and Page-Hinkley on 16 input streams,
the score and the calibration residual, outcome-linked and subgroup metrics, workflow
figures and every rule, in 15-minute windows. The model comes from
``$CLINICAL_MLOPS_BENCH_WORKSPACE`` (its newest trained ICU model) or is trained once on a
small synthetic source in a temporary workspace. Reading the ledger is not included.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _sections import update_section

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _model(tmp: str) -> tuple[Path, str]:
    from clinical_mlops.workspace import Workspace

    given = os.environ.get("CLINICAL_MLOPS_BENCH_WORKSPACE")
    if given:
        ws = Workspace.open(given)
        models = sorted(
            (p for p in ws.models_dir.glob("icu_mortality_48h-*") if (p / "report.json").exists()),
            key=lambda p: p.stat().st_mtime,
        )
        if models:
            return ws.root, models[-1].name
    from clinical_mlops.application.training import train_model
    from clinical_mlops.data.raw import read_source
    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import SyntheticConfig
    from clinical_mlops.features.snapshot import build_snapshot
    from clinical_mlops.modeling.train import TrainingConfig
    from clinical_mlops.tasks import load_task

    ws = Workspace.open(tmp)
    src = synthetic_source(ws, SyntheticConfig(seed=7, scale=0.1)).path
    snap = build_snapshot(ws, load_task("icu_mortality_48h"), read_source(src))
    config = TrainingConfig(seed=7, search_iterations=2, n_boot=200, candidates=("xgboost",))
    return ws.root, train_model(ws, snap, config=config).model_version


def main() -> None:
    from clinical_mlops.monitoring.scenarios import DriftScenario, clean_stream, scored_test_stays
    from clinical_mlops.workspace import Workspace

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, version = _model(tmp)
        stays = scored_test_stays(Workspace.open(root), model_version=version)
        for days in (30, 90):
            stream = clean_stream(stays, DriftScenario(clean_days=days))
            started = time.perf_counter()
            run = stream.run(stays.reference, keep_windows=False)
            seconds = time.perf_counter() - started
            n = len(stream.inferences)
            rows.append(
                f"| {days} | {n:,} | {len(stream.outcomes.seq):,} | {run.n_windows:,} | "
                f"{seconds:.1f} | {n / seconds:,.0f} | {run.n_windows / seconds:,.0f} |"
            )
            print(rows[-1], flush=True)
    body = (
        "A clean simulated stream at 40 stays per hour through the whole Monitor (every input and "
        "the score binned; PSI, grouped KS, chi-square and missingness over a 6 h look-back; river "
        "ADWIN and Page-Hinkley on 16 input streams, the score and the calibration residual; "
        "rolling AUROC, ECE and calibration over 2,000 outcomes; subgroup metrics; override rate "
        "and alert volume; all rules) in 15-minute windows. Model: "
        f"`{version}`, {len(stays.p):,} locked test stays resampled. One process, "
        "`OMP_NUM_THREADS=1`; reading the audit ledger is not included.\n\n"
        "| simulated days | inference records | outcomes | windows | seconds | records / s | "
        "windows / s |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    update_section(
        "monitor",
        "Clinical observability: monitor throughput",
        body,
        command="OMP_NUM_THREADS=1 python bench/monitor_bench.py",
    )


if __name__ == "__main__":
    main()
