"""Crash test (issue 4, "must show"): a writer process killed with SIGKILL at random
moments, 20 times per backend; no acknowledged entry is lost and the ledger verifies
after every restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evidence_helpers import Stores

TRIALS = 20
WRITER = Path(__file__).with_name("crash_writer.py")


@pytest.mark.slow
def test_sigkilled_writer_loses_no_acknowledged_entry(stores: Stores):
    rng = random.Random(20)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(WRITER.parent), str(WRITER.parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    acknowledged: dict[int, str] = {}
    for trial in range(TRIALS):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                stores.ledger_url,
                stores.identity_url,
                str(stores.root),
                str(trial),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == b"ready\n", proc.stderr.read() if proc.stderr else first
        # a few acknowledged appends first, so a slow machine still kills a busy writer
        early = b"".join(proc.stdout.readline() for _ in range(3))
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        lines = (early + out).decode().split("\n")
        for line in lines[:-1]:  # the last piece may be a torn line
            _, seq, message = line.split(" ")
            acknowledged[int(seq)] = message
        with stores.open() as ledger:  # restart: reopen and check
            size = ledger.size()
            assert max(acknowledged, default=-1) < size
            for seq in rng.sample(sorted(acknowledged), min(40, len(acknowledged))):
                assert ledger.read(seq).payload["message"] == acknowledged[seq]  # type: ignore
            report = ledger.verify()
            assert report.ok, (trial, report.problems[:3])
    assert len(acknowledged) > TRIALS * 5  # the writer got real work done each time
    with stores.open() as ledger:
        for seq in sorted(acknowledged):  # every acknowledged entry, with its content
            assert ledger.read(seq).payload["message"] == acknowledged[seq]  # type: ignore
        assert ledger.verify(thorough=True).ok
