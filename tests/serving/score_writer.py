"""A ``score`` run for the kill test: scores a file in chunks of 40 until done or killed.

Usage: score_writer.py WORKSPACE REQUESTS OUT. Prints ``done <rows>`` after each chunk's
results are written (its one ledger transaction committed before that).
"""

from __future__ import annotations

import sys
from pathlib import Path

from clinical_mlops.serving import batch
from clinical_mlops.workspace import Workspace


def main() -> None:
    root, source, out = sys.argv[1:4]
    batch.MAX_BATCH = 40  # many chunks, so the kill lands part way through the file

    def progress(done: int, total: int) -> None:
        sys.stdout.write(f"done {done} {total}\n")
        sys.stdout.flush()

    batch.score_file(
        Workspace.open(root), Path(source), Path(out), requester="system:batch", progress=progress
    )
    sys.stdout.write("finished\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
