"""The benches' shared demo workspace: made once by ``clinical-mlops demo`` when missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def ensure_workspace(path: Path) -> None:
    """Make the demo workspace at ``path`` unless it already holds an approved release."""
    from clinical_mlops.registry.registry import Registry
    from clinical_mlops.workspace import Workspace

    if (path / "meta.db").exists():
        with Registry.open(Workspace.open(path)) as reg:
            if reg.active("icu_mortality_48h") is not None:
                return
    print(f"building the demo workspace in {path} (clinical-mlops demo)", flush=True)
    subprocess.run(
        [str(BIN / "clinical-mlops"), "demo", "--workspace", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
