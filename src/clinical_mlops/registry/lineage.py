"""Lineage (SPEC R-A2): everything needed to rebuild a model and replay its predictions.

Recorded per training run: the snapshot id and the hashes it carries (raw files,
cohort criteria, feature SQL), the code commit and whether the work tree was
dirty, the Python version and every installed package version (with a hash of
that list), the seed, the chosen hyperparameters, the command line and the
SHA-256 of every artifact.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from clinical_mlops import __version__
from clinical_mlops.hashing import sha256_json

__all__ = ["code_version", "environment", "lineage_record"]


def code_version() -> dict[str, Any]:
    """Return the git commit of the package source and whether the tree has local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, read-only query
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip()), "package_version": __version__}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "package_version": __version__}


def environment() -> dict[str, Any]:
    """Return the interpreter, platform and installed package versions (the environment lock)."""
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[name.lower()] = dist.version
    packages = dict(sorted(packages.items()))
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
        "packages_sha256": sha256_json(packages),
    }


def lineage_record(
    *,
    snapshot_manifest: dict[str, Any],
    snapshot_id: str,
    seed: int,
    selection: dict[str, Any],
    training: dict[str, Any],
    artifacts: dict[str, str],
    command_line: list[str] | None = None,
) -> dict[str, Any]:
    """Return the lineage document of one training run."""
    return {
        "schema": "clinical-mlops/lineage/v1",
        "snapshot": {
            "id": snapshot_id,
            "source": snapshot_manifest["source"],
            "cohort_criteria_sha256": snapshot_manifest["cohort_criteria_sha256"],
            "feature_sql": snapshot_manifest["feature_sql"],
            "split_membership_sha256": snapshot_manifest["split_membership_sha256"],
            "files": snapshot_manifest["files"],
            "task": snapshot_manifest["task"],
        },
        "code": code_version(),
        "environment": environment(),
        "seed": seed,
        "selection": selection,
        "training": training,
        "artifacts": artifacts,
        "command_line": list(command_line if command_line is not None else sys.argv),
    }
