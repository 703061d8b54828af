"""DuckDB vs Spark: the ICU feature SQL over 10 million and 100 million raw events.

Run: ``.venv/bin/python bench/features_bench.py`` (10 M events, both engines) or
``.venv/bin/python bench/features_bench.py --events 10,100`` for both sizes. Sizes are in
millions of raw events; ``--engines duckdb,spark`` picks the engines, ``--work DIR``
keeps the generated sources between runs (default: a temporary folder, removed at the end),
``--timeout-minutes`` stops a measurement that runs longer (recorded as not finished). The
section is rewritten after every measurement, so an interrupted run keeps what it measured.

The event sets come from the synthetic generator's chunked Parquet writer (memory stays
flat whatever the size), at the scale that yields the asked number of events (scale 1 gives
about 6.04 M). Each (size, engine) runs in a fresh process through ``bench/measure.py``:
build the cohort, then extract the 17 features twice as a snapshot build does — from all
events, and from the events as they stood at each stay's prediction time (the leakage
check's time travel). Spark runs in local mode on this machine (``local[2]``, driver heap
``--spark-memory``).

Memory: ``measure.py`` reports the Python process's own peak RSS (``ru_maxrss`` of
RUSAGE_SELF). Spark's JVM is a child process and is not in that figure, so the Spark run
also reads the JVM's kernel high-water mark (``VmHWM`` in ``/proc/<pid>/status``) of every
descendant process just before it stops the session, and the table shows both and their
sum (an upper bound of the simultaneous peak). Writes the ``features`` section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sections import update_section

HERE = Path(__file__).resolve().parent
# Raw events per unit of synthetic scale (seed 7, scale 1: 6,041,468 events).
EVENTS_PER_SCALE = 6_041_468


def _descendants(pid: int) -> list[int]:
    """Return the ids of every live descendant process of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the parent id is the second field after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _peak_rss_mib(pid: int) -> float:
    """Return the kernel's peak resident set (VmHWM) of process ``pid`` in MiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def extract(source: str, engine: str, spark_memory: str = "4g") -> dict:
    """Build the cohort and extract the features twice on ``engine``; return timings."""
    from clinical_mlops.data.cohort import build_cohort
    from clinical_mlops.data.raw import read_source
    from clinical_mlops.features.engine import DuckDBEngine, extract_features
    from clinical_mlops.tasks import load_task

    spec = load_task("icu_mortality_48h")
    raw = read_source(source)
    t0 = time.perf_counter()
    cohort = build_cohort(raw, spec).stays
    t1 = time.perf_counter()
    runner: object
    if engine == "spark":
        from clinical_mlops.features.spark import SparkEngine

        runner = SparkEngine(master="local[2]", conf={"spark.driver.memory": spark_memory})
        runner.session  # noqa: B018 - start the JVM outside the timed extraction
    else:
        runner = DuckDBEngine()
    t2 = time.perf_counter()
    kwargs = dict(cohort=cohort, events=[raw.table_path("events")], tables=raw.relations())
    features = extract_features(spec, engine=runner, **kwargs)  # type: ignore[arg-type]
    t3 = time.perf_counter()
    extract_features(spec, engine=runner, before_prediction_only=True, **kwargs)  # type: ignore[arg-type]
    t4 = time.perf_counter()
    jvm = 0.0
    if engine == "spark":
        jvm = sum(_peak_rss_mib(p) for p in _descendants(os.getpid()))
        runner.session.stop()  # type: ignore[attr-defined]
    return {
        "cohort_stays": len(cohort),
        "feature_rows": len(features),
        "lactate_mean": round(float(features["lactate"].mean()), 6),
        "cohort_s": round(t1 - t0, 2),
        "start_s": round(t2 - t1, 2),
        "extract_s": round(t3 - t2, 2),
        "time_travel_s": round(t4 - t3, 2),
        "jvm_peak_rss_mib": round(jvm, 1),
    }


def generate(root: Path, millions: float) -> tuple[Path, int, float | None]:
    """Write (or reuse) a synthetic source of about ``millions`` M events; return it."""
    import pyarrow.parquet as pq

    from clinical_mlops.data.synthetic import SyntheticConfig, generate_source

    scale = round(millions * 1e6 / EVENTS_PER_SCALE, 4)
    out = root / f"events-{millions:g}M"
    started = time.perf_counter()
    if (out / "source.json").exists():
        seconds = None  # reused from an earlier run (--work)
    else:
        shutil.rmtree(out, ignore_errors=True)
        generate_source(out, config=SyntheticConfig(seed=7, scale=scale))
        seconds = time.perf_counter() - started
    return out, pq.ParquetFile(out / "events.parquet").metadata.num_rows, seconds


def measure(source: Path, engine: str, spark_memory: str, timeout_s: float) -> dict | None:
    """Run one extraction in a fresh process; None if it did not finish within ``timeout_s``."""
    args = {"source": str(source), "engine": engine, "spark_memory": spark_memory}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "measure.py"), "features_bench:extract", json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the JVM goes with it on a timeout
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return None
    if child.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{stderr[-4000:]}")
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def row(n_events: int, engine: str, m: dict | None, timeout_s: float) -> str:
    if m is None:
        return f"| {n_events:,} | | {engine} | did not finish within {timeout_s / 60:g} min (stopped) |||||||"
    r = m["result"]
    jvm = r["jvm_peak_rss_mib"]
    return (
        f"| {n_events:,} | {r['cohort_stays']:,} | {engine} | {r['start_s']:.1f} | "
        f"{r['extract_s']:.1f} | {r['time_travel_s']:.1f} | {m['seconds']:.1f} | "
        f"{m['peak_rss_mib']:,.0f} | {f'{jvm:,.0f}' if jvm else '—'} | "
        f"{m['peak_rss_mib'] + jvm:,.0f} |"
    )


def write_section(
    args: argparse.Namespace, sizes: list[str], rows: list[str], load_start: tuple, pending: list
) -> None:
    command = (
        f"python bench/features_bench.py --events {args.events} --engines {args.engines} "
        f"--timeout-minutes {args.timeout_minutes:g}"
    )
    body = (
        "The ICU task's feature SQL (17 features, one row per cohort stay) over synthetic raw "
        "events, seed 7, on DuckDB (embedded, 2 threads) and Spark SQL (local[2], driver heap "
        f"{args.spark_memory}). One fresh process per row. *start* is engine start-up (the JVM "
        "for Spark); *extract* is the feature table from all events; *time travel* is the same "
        "SQL over the events before each stay's prediction time (the leakage check); *process* "
        "is the whole child process (reading the stays, cohort, start, both extractions). Memory: "
        "*Python* is the process's own peak RSS; *JVM* is the Spark JVM's peak RSS (VmHWM of the "
        "child processes), which the Python figure does not include; *sum* is an upper bound of "
        "the two together.\n\n"
        + "\n".join(f"- {s}" for s in sizes)
        + "\n\n| raw events | cohort stays | engine | start (s) | extract (s) | time travel (s) | "
        "process (s) | Python peak RSS (MiB) | JVM peak RSS (MiB) | sum (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    if pending:
        body += "\n\nNot measured yet in this run: " + ", ".join(
            f"{millions:g} M events on {engine}" for millions, engine in pending
        )
        body += "."
    load_now = os.getloadavg()
    body += (
        f"\n\nLoad average (1/5/15 min) on this {os.cpu_count()}-core machine: "
        f"{'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in load_now)} at the last row."
    )
    if args.note:
        body += " " + args.note
    update_section("features", "Feature engines: DuckDB vs Spark", body, command=command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="10", help="sizes in millions, comma-separated")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--spark-memory", default="4g", help="Spark driver heap (local mode)")
    parser.add_argument(
        "--timeout-minutes", type=float, default=40, help="stop one measurement after this long"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep generated sources here")
    parser.add_argument("--note", default="", help="a sentence about the run (e.g. machine load)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cm-features-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    timeout_s = args.timeout_minutes * 60
    plan = [(float(m), e) for m in args.events.split(",") for e in args.engines.split(",")]
    rows: list[str] = []
    sizes: list[str] = []
    load_start = os.getloadavg()
    sources: dict[float, tuple[Path, int]] = {}
    try:
        for i, (millions, engine) in enumerate(plan):
            if millions not in sources:
                source, n_events, gen_s = generate(work, millions)
                sources[millions] = (source, n_events)
                size_mib = (source / "events.parquet").stat().st_size / 2**20
                made = "reused from --work" if gen_s is None else f"generated in {gen_s:.0f} s"
                sizes.append(f"{n_events:,} events: {made}, events.parquet {size_mib:,.0f} MiB")
                print(sizes[-1], flush=True)
            source, n_events = sources[millions]
            rows.append(
                row(
                    n_events,
                    engine,
                    measure(source, engine, args.spark_memory, timeout_s),
                    timeout_s,
                )
            )
            print(rows[-1], flush=True)
            # Written after every row, so an interrupted run still records what it measured.
            write_section(args, sizes, rows, load_start, plan[i + 1 :])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
