"""The benches' shared demo workspace (made once by ``clinical-mlops demo`` when missing) and
its locked test stays as requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_rows(path: Path) -> dict[str, Any]:
    """Return the locked test stays as request dicts and as the model's encoded matrix."""
    from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
    from clinical_mlops.serving.predictor import Predictor
    from clinical_mlops.workspace import Workspace

    ws = Workspace.open(path)
    with Predictor.open(ws) as p:
        sc = p.scorer(p.default)
        test = locked_test_stays(open_snapshot(ws, sc.dataset_sha256))
        names = list(sc.spec.feature_names)
        rows = [
            {k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in test[names].to_dict(orient="records")
        ]
        X = sc.schema.encode([sc.schema.check(r).values for r in rows])
        booster_json = sc.model.scorer.booster.save_raw(raw_format="json")
        return {
            "release": p.default,
            "setting": sc.spec.cohort.setting,
            "subjects": [f"demo-stay-{s}" for s in test["stay_id"]],
            "rows": rows,
            "X": X,
            "columns": list(sc.model.preprocessor.columns),
            "booster_json": bytes(booster_json),
        }
