"""CLI start-up: whole-process wall time of light commands, this checkout beside an older one.

Each command runs ``--runs`` times (default 5) as a fresh process for each checkout, the two
checkouts alternating run by run so that load on a shared machine falls on both alike; the
table gives the median and the range. The older checkout (``--before``, a git revision,
default the last commit before the CLI loaded its commands lazily) is materialised with
``git worktree add`` into a temporary folder and run from its ``src`` on ``PYTHONPATH``, with
this environment's packages. Both read the same demo workspace (made once when missing).

Run: ``.venv/bin/python bench/startup_bench.py [--workspace DIR] [--before REV]``.
Writes the ``startup`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sections import update_section

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "e46cffb"
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("version", ["version"]),
    ("registry list", ["registry", "list", "--workspace", "{ws}"]),
    ("audit verify", ["audit", "verify", "--workspace", "{ws}"]),
    ("monitor alerts", ["monitor", "alerts", "--workspace", "{ws}"]),
]


def one_run(src: Path, args: list[str], workspace: Path) -> float | None:
    """Return the wall seconds of one ``clinical-mlops ARGS`` process, or None when it failed."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    argv = [sys.executable, "-m", "clinical_mlops", *(a.format(ws=workspace) for a in args)]
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    return seconds if done.returncode == 0 else None


def figure(samples: list[float | None]) -> str:
    ok = [s for s in samples if s is not None]
    if not ok:
        return "failed"
    if len(ok) < len(samples):
        return f"{statistics.median(ok):.2f} s ({len(samples) - len(ok)} failed)"
    return f"{statistics.median(ok):.2f} s ({min(ok):.2f}–{max(ok):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=None, help="demo workspace (made if missing)")
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _workspace import ensure_workspace

    workspace = args.workspace or Path(tempfile.gettempdir()) / "cm-bench-ws"
    ensure_workspace(workspace)
    old = Path(tempfile.mkdtemp(prefix="cm-startup-before-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(old), args.before],
        cwd=ROOT,
        check=True,
    )
    try:
        rows = []
        for label, argv in COMMANDS:
            before: list[float | None] = []
            after: list[float | None] = []
            for _ in range(args.runs):
                before.append(one_run(old / "src", argv, workspace))
                after.append(one_run(ROOT / "src", argv, workspace))
            rows.append((label, figure(before), figure(after)))
            print(f"{label:16} before {rows[-1][1]:28} after {rows[-1][2]}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    load = os.getloadavg()[0]
    body = (
        f"Whole-process wall time, median of {args.runs} runs (range), this checkout beside "
        f"`{args.before}`, runs alternating; load average at the end {load:.1f}. The demo "
        "workspace's ledger and registry are read by both.\n\n"
        "| command | before | after |\n|---|---|---|\n"
        + "\n".join(f"| `clinical-mlops {label}` | {b} | {a} |" for label, b, a in rows)
    )
    print(body)
    if not args.no_write:
        update_section(
            "startup",
            "CLI start-up",
            body,
            command=".venv/bin/python bench/startup_bench.py",
        )


if __name__ == "__main__":
    main()
