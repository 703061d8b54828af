"""A serving process for the uniqueness tests: one Predictor, one batch, sent on a signal.

Usage: race_writer.py WORKSPACE ROWS_JSON REQUESTS_JSON. Opens the workspace's Predictor
(ledger and identity URLs from the environment, as a service would), prints ``ready``,
waits for a line on stdin, sends the batch (a list of [subject id, row index, request id])
and prints one JSON line: ``{"served": [audit seqs]}`` or ``{"refused": code, "message": ...}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clinical_mlops.errors import ClinicalMlopsError
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace


def main() -> None:
    root, rows_file, requests_json = sys.argv[1:4]
    rows = json.loads(Path(rows_file).read_text(encoding="utf-8"))
    requests = [
        PredictionRequest(
            subject_id=subject,
            purpose="direct_care",
            setting="icu",
            features=rows[row],
            request_id=request_id,
        )
        for subject, row, request_id in json.loads(requests_json)
    ]
    with Predictor.open(Workspace.open(root)) as predictor:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        try:
            results = predictor.predict_many(requests, requester="system:race-writer")
        except ClinicalMlopsError as exc:
            out = {"refused": type(exc).__name__, "message": str(exc)}
        else:
            out = {"served": [r.audit_seq for r in results]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
