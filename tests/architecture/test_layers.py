"""The package graph is acyclic and layered as pyproject.toml's import-linter contract declares.

`make lint` runs the same contract; running it here puts it in every CI run (`make test`).
Function-level imports count: a lazy import across a layer is still a dependency.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_contract_holds() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_names_every_package() -> None:
    """A new package must take a place in the layers, or the contract would not see it."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = declared["contracts"][0]["layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    package = ROOT / "src" / "clinical_mlops"
    present = {
        f"clinical_mlops.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    assert present - named == set(), f"packages outside the layers contract: {present - named}"
