"""A prediction's record holds each contribution with its reference, and replays identical; a
record written before contributions carried their reference still replays identical."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.serving import PredictionRequest, Predictor
from clinical_mlops.serving.replay import replay_inference
from clinical_mlops.workspace import Workspace


def _as_listed_before(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return contributions as a record listed them before references: no brackets, no key."""
    out = []
    for item in shown:
        ref = item["reference"]
        body = {k: v for k, v in item.items() if k != "reference"}
        if ref is not None:
            body["phrase"] = body["phrase"].replace(f" ({ref['statistic']} {ref['shown']})", "")
        out.append(body)
    return out


def test_records_with_and_without_references_replay_identical(
    served: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(served["ws"].root, root)
    ws = Workspace.open(root)
    with Predictor.open(ws, site="demo-icu-north") as p:
        [result] = p.predict_many(
            [
                PredictionRequest(
                    subject_id="MRN-4",
                    purpose="direct_care",
                    setting="icu",
                    features=served["rows"][4],
                )
            ],
            requester="system:test",
        )
    with Ledger.open(ws) as led:
        view = led.read(result.audit_seq)
        payload = dict(view.payload or {})
        shown = payload["explanation_shown"]
        assert shown and all("reference" in item for item in shown)
        assert any("(training median " in item["phrase"] for item in shown)
        # the same record as it was written before contributions carried their reference
        older = payload | {
            "explanation_shown": _as_listed_before(shown),
            "request_id": "req_" + secrets.token_hex(16),  # one record per request id
        }
        assert older["explanation_shown"] != shown
        [receipt] = led.append_batch(
            [
                NewEntry(
                    type="inference", actor="system:test", payload=older, subject=view.entry.subject
                )
            ]
        )
    now = replay_inference(ws, result.audit_seq)
    assert now.identical, now.differences
    assert "explanation_shown" in now.compared
    before = replay_inference(ws, receipt.seq)
    assert before.identical, before.differences
    assert "explanation_shown" in before.compared
