"""A ledger writer for the crash test: appends until killed, printing each acknowledgement.

Usage: crash_writer.py LEDGER_URL IDENTITY_URL ROOT TRIAL. Prints ``ready`` once, then
``ack <seq> <message>`` after every append call has returned (i.e. committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.privacy.keys import LocalKeyring


def main() -> None:
    ledger_url, identity_url, root, trial = sys.argv[1:5]
    ledger = Ledger(
        store=LedgerStore.open(ledger_url),
        provider=LocalKeyring(Path(root) / "keys"),
        vault=identity_url,
        checkpoint_log=CheckpointLog(Path(root) / "ledger-checkpoints.jsonl"),
        checkpoint_every=37,
    )
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        if i % 3 == 0:
            items = [
                NewEntry(
                    type="alert",
                    actor="crash-writer",
                    payload={"kind": "crash", "message": f"{trial}:{i + j}"},
                )
                for j in range(5)
            ]
            receipts = ledger.append_batch(items)
            out.write("".join(f"ack {r.seq} {trial}:{i + j}\n" for j, r in enumerate(receipts)))
            i += 5
        else:
            r = ledger.append(
                type="alert",
                actor="crash-writer",
                payload={"kind": "crash", "message": f"{trial}:{i}"},
            )
            out.write(f"ack {r.seq} {trial}:{i}\n")
            i += 1
        out.flush()


if __name__ == "__main__":
    main()
