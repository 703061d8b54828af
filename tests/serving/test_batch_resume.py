"""``clinical-mlops score`` killed with SIGKILL part way, then run again: it resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clinical_mlops.ledger import Ledger
from clinical_mlops.ledger.store import entries
from clinical_mlops.serving.batch import score_file
from identities import console

WRITER = Path(__file__).with_name("score_writer.py")
ROWS = 1200
PYTHON_ENV = os.environ | {"PYTHONWARNINGS": "ignore"}
#: the entry types that record a request's result (one per request)
RESULT_TYPES = ("inference", "fallback_served", "inference_refused", "consent_refused")


def _requests(served: dict[str, Any], path: Path) -> None:
    rows = served["rows"]
    lines = []
    for i in range(ROWS):
        item: dict[str, Any] = {
            "subject_id": "MRN-UNKNOWN" if i == 3 else f"MRN-{i % 120}",
            "purpose": "direct_care",
            "setting": "icu",
            "features": rows[i % len(rows)],
        }
        if i % 2:  # every other line names its request; the rest are given an id by the run
            item["request_id"] = f"kill-{i}"
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _results_since(ws: Any, start: int) -> list[tuple[int, str]]:
    """Return (seq, request id) of every request result recorded from ``start`` on."""
    with Ledger.open(ws) as led:
        with led.store.engine.connect() as conn:
            seqs = conn.execute(
                sa.select(entries.c.seq)
                .where(entries.c.seq >= start, entries.c.type.in_(RESULT_TYPES))
                .order_by(entries.c.seq)
            ).scalars()
            wanted = [int(s) for s in seqs]
        return [(seq, led.read(seq).payload["request_id"]) for seq in wanted]


def _kill_part_way(ws: Any, source: Path, out: Path, log: Path) -> None:
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [sys.executable, str(WRITER), str(ws.root), str(source), str(out)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=PYTHON_ENV,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("done") and int(line.split()[1]) >= 200:
                    break
            else:
                pytest.fail(f"the run ended before it could be killed: {log.read_text()}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_a_killed_score_run_resumes_without_scoring_anything_twice(
    served: dict[str, Any], tmp_path: Path
) -> None:
    ws = served["ws"]
    source, out = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    _requests(served, source)
    with Ledger.open(ws) as led:
        start = led.size()
    _kill_part_way(ws, source, out, tmp_path.parent / f"{tmp_path.name}-writer.log")
    # killed part way: some requests recorded, the results file not in place, a temporary left
    before = _results_since(ws, start)
    assert 200 <= len(before) < ROWS
    assert not out.exists()
    assert len(list(tmp_path.glob(".results.jsonl.*.tmp"))) == 1

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinical_mlops",
            "score",
            str(source),
            "--out",
            str(out),
            "-w",
            str(ws.root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=PYTHON_ENV | {"CLINICAL_MLOPS_ACTOR": "system:batch"},
    )
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert (
        f"resumed: {len(before)} of the {ROWS} requests were already recorded by an earlier "
        "run of this file" in said
    )
    assert "removed 1 temporary output file(s) left by the interrupted run" in said

    results = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in results] == list(range(1, ROWS + 1))
    # no request has two records, and every line's result is its one record
    after = _results_since(ws, start)
    counts = Counter(rid for _, rid in after)
    assert len(counts) == ROWS and set(counts.values()) == {1}
    assert {(r["audit_seq"], r["request_id"]) for r in results} == set(after)
    resumed = [r for r in results if r.get("resumed")]
    assert {(r["audit_seq"], r["request_id"]) for r in resumed} == set(before)
    assert results[3]["status"] == "refused" and results[3]["refusal"]["code"] == "unknown_subject"
    assert [r["request_id"] for r in results[1::2]] == [f"kill-{i}" for i in range(1, ROWS, 2)]
    # nothing of the run is left beside the results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.jsonl", "results.jsonl"]


def test_a_second_run_on_the_same_output_is_refused_while_one_runs(
    served: dict[str, Any], tmp_path: Path
) -> None:
    import fcntl

    from clinical_mlops.errors import ServingError

    source, out = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    _requests(served, source)
    lock = tmp_path / ".results.jsonl.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in another process holds it
        with pytest.raises(ServingError, match="another score run is writing"):
            score_file(served["ws"], source, out, requester="t")
    finally:
        os.close(fd)
    assert not out.exists()


def test_a_recorded_result_is_the_result_the_request_was_given(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """Every kind of result rebuilt from its ledger record equals the answer given."""
    import shutil

    from clinical_mlops.application.walkthrough import DEMO_PEOPLE
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.registry.registry import Registry
    from clinical_mlops.serving import PredictionRequest, Predictor
    from clinical_mlops.workspace import Workspace

    shutil.copytree(served["ws"].root, tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    release, rows = served["release"], served["rows"]
    _, _, eng, clin = list(DEMO_PEOPLE)
    # a manifest entry in shadow mode (as written before trials ran beside the live release)
    with Registry.open(ws) as reg:
        reg.place(release, site="ward-shadow", mode="shadow", actor=clin, why="test")

    def request(i: int, **kw: Any) -> PredictionRequest:
        fields = {"subject_id": f"MRN-{i}", "purpose": "direct_care", "setting": "icu"}
        return PredictionRequest(**(fields | {"features": rows[i]} | kw))

    mixed = [
        request(0),
        request(1, site="ward-shadow"),
        request(2, subject_id="MRN-UNKNOWN"),
        request(3, subject_id="MRN-NOCONSENT"),
        request(4, setting="ward"),
        request(5, features=dict(rows[5], age=12)),
        request(6, hours_since_admission=1.0),
    ]
    with Predictor.open(ws, status_ttl=0) as p:
        given = p.predict_many(mixed, requester="t")
        with Registry.open(ws) as reg, Governance(reg) as gov:
            gov.suspend(release, actor=eng, why="test", identity=console(eng))
        given += p.predict_many([request(7)], requester="t")
        kinds = {r.status for r in given} | {r.refusal["code"] for r in given if r.refusal}
        assert kinds >= {
            "scored",
            "shadow",
            "fallback",
            "refused",
            "unknown_subject",
            "consent_not_granted",
            "outside_intended_use",
        }
        for r in given:
            assert r.audit_seq is not None
            rebuilt = p.recorded_result(p.ledger.read(r.audit_seq))
            assert rebuilt.to_json() == r.to_json()
            assert rebuilt.escalated == r.escalated
