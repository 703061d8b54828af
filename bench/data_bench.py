"""Generate + build wall time and peak memory at the default size and at 10x (issue: data plane)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sections import update_section

HERE = Path(__file__).resolve().parent


def generate_and_build(scale: float, seed: int = 7) -> dict:
    import pyarrow.parquet as pq

    from clinical_mlops.data.sources import synthetic_source
    from clinical_mlops.data.synthetic import SyntheticConfig
    from clinical_mlops.features.snapshot import build_snapshot
    from clinical_mlops.tasks import load_task
    from clinical_mlops.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        t0 = time.perf_counter()
        source = synthetic_source(ws, SyntheticConfig(seed=seed, scale=scale))
        t1 = time.perf_counter()
        snap = build_snapshot(ws, load_task("icu_mortality_48h"), source)
        t2 = time.perf_counter()
        events = pq.ParquetFile(source.table_path("events")).metadata.num_rows
        return {
            "generate_s": round(t1 - t0, 2),
            "build_s": round(t2 - t1, 2),
            "events": events,
            "cohort_stays": snap.summary()["n_stays"],
            "snapshot_id": snap.id[:12],
        }


def run(scale: float) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "measure.py"),
            "data_bench:generate_and_build",
            json.dumps({"scale": scale}),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for scale in (1.0, 10.0):
        m = run(scale)
        r = m["result"]
        rows.append(
            f"| {scale:g}× | {r['events']:,} | {r['cohort_stays']:,} | {r['generate_s']:.1f} | "
            f"{r['build_s']:.1f} | {m['seconds']:.1f} | {m['peak_rss_mib']:,.0f} |"
        )
        print(rows[-1], flush=True)
    body = (
        "Synthetic source generation and snapshot build (raw contracts, cohort, DuckDB feature SQL, "
        "leakage re-extraction, feature contracts, Parquet + manifest), seed 7, fresh workspace, "
        "one process per size.\n\n"
        "| size | raw events | cohort stays | generate (s) | build (s) | total (s) | peak RSS (MiB) |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    update_section(
        "data", "Data plane: generate + build", body, command="make bench (bench/data_bench.py)"
    )


if __name__ == "__main__":
    main()
