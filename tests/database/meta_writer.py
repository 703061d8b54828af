"""A process raising monitoring alerts in the metadata store, for the concurrency tests.

Usage: meta_writer.py WORKSPACE INDEX WRITERS COUNT. Prints ``ready``, waits for a line on
stdin, then opens the workspace's alert store (creating its tables if no one has yet) and
raises COUNT signals of one shared rule, at times interleaved with the other writers'.
Prints one JSON line: ``{"raised": n}`` or ``{"failed": error type, "message": ...}``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

from clinical_mlops.monitoring.alerts import AlertSignal, AlertStore
from clinical_mlops.workspace import Workspace

START = datetime(2024, 1, 1, tzinfo=UTC)


def main() -> None:
    root, index, writers, count = sys.argv[1], *map(int, sys.argv[2:5])
    ws = Workspace.open(root)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    raised = 0
    try:
        with AlertStore(ws, record_ledger=False) as store:
            for k in range(count):
                at = START + timedelta(seconds=k * writers + index)
                signal = AlertSignal(
                    rule="shared_rule",
                    kind="data",
                    severity="warning",
                    owner_role="engineering",
                    action="open_review",
                    at=at.isoformat(),
                    summary=f"writer {index} signal {k}",
                    quantity="psi",
                    value=0.3,
                    threshold=0.2,
                )
                store.raise_alert(signal, actor=f"system:writer-{index}")
                raised += 1
    except Exception as exc:  # reported to the test, which fails on any
        out = {"failed": type(exc).__name__, "message": str(exc)[:300]}
    else:
        out = {"raised": raised}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
