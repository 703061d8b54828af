"""A service process for the kill test: scores batches of 25 requests until killed.

Usage: batch_writer.py WORKSPACE ROWS_JSON TAG. Prints ``ready`` once the release is
loaded, then ``ack <batch> <n>`` after each ``predict_many`` call has returned (its one
transaction committed). Request ids are ``<TAG>-b<k>-<i>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clinical_mlops.serving import Predictor
from clinical_mlops.serving.predictor import PredictionRequest
from clinical_mlops.workspace import Workspace

BATCH = 25


def main() -> None:
    root, rows_file, tag = sys.argv[1:4]
    rows = json.loads(Path(rows_file).read_text(encoding="utf-8"))
    with Predictor.open(Workspace.open(root)) as predictor:
        out = sys.stdout
        out.write("ready\n")
        out.flush()
        k = 0
        while True:
            batch = f"{tag}-b{k}"
            requests = [
                PredictionRequest(
                    subject_id=f"MRN-{i % len(rows)}",
                    purpose="direct_care",
                    setting="icu",
                    features=rows[i % len(rows)],
                    request_id=f"{batch}-{i}",
                )
                for i in range(k, k + BATCH)
            ]
            results = predictor.predict_many(requests, requester="system:batch-writer")
            if any(r.status != "scored" for r in results):
                sys.exit(f"not scored: {[r.refusal for r in results if r.refusal]}")
            out.write(f"ack {batch} {len(results)}\n")
            out.flush()
            k += 1


if __name__ == "__main__":
    main()
