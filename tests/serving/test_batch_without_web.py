"""Offline scoring is the library alone: it runs where no web package can be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# Run in a fresh interpreter where every package of the serve and console extras fails to
# import, as on a batch host installed without them. Then `clinical-mlops score` as a user runs it.
_BLOCKED_RUN = """
import sys

WEB = ("fastapi", "starlette", "uvicorn", "jwt", "prometheus_client", "multipart", "itsdangerous")

class NoWeb:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in WEB:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoWeb())
from clinical_mlops.cli import main

sys.argv = ["clinical-mlops", *sys.argv[1:]]
try:
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in WEB)
    sys.stderr.write(f"web modules loaded: {loaded}\\n")
"""


def test_a_file_is_scored_with_no_web_framework_importable(
    served: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(served["ws"].root, root)
    rows = served["rows"]
    source = tmp_path / "requests.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "subject_id": f"MRN-{i}",
                    "purpose": "direct_care",
                    "setting": "icu",
                    "features": rows[i],
                }
            )
            + "\n"
            for i in range(5)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCKED_RUN,
            "score",
            str(source),
            "--out",
            str(out),
            "-w",
            str(root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "CLINICAL_MLOPS_ACTOR": "system:batch"},
    )
    assert done.returncode == 0, done.stderr
    assert "web modules loaded: []" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == 5 and summary["by_status"]["scored"] == 5
    results = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in results] == [1, 2, 3, 4, 5]
    assert all(r["status"] == "scored" and r["audit_seq"] is not None for r in results)
