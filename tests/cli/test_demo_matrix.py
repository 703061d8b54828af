"""The demo prints the validation matrix: every site and test year, and their margins."""

from __future__ import annotations

import numpy as np

from clinical_mlops.cli import _common
from clinical_mlops.cli.demo import render_matrix
from clinical_mlops.evaluation.metrics import resample_counts
from clinical_mlops.evaluation.report import json_ready
from clinical_mlops.evaluation.strata import validation_matrix
from clinical_mlops.evaluation.validation_report import Matrix


def test_the_demo_prints_the_site_by_year_matrix(capsys):
    rng = np.random.default_rng(0)
    n = 3000
    import pandas as pd

    frame = pd.DataFrame(
        {
            "site": rng.choice(["north", "south", "east"], n),
            "real_year": rng.choice([2017, 2018, 2019], n),
        }
    )
    frame.loc[:9, "site"] = "tiny"
    p = rng.uniform(0.01, 0.9, n)
    y = (rng.random(n) < p).astype(int)
    section = validation_matrix(
        y, p, frame, strata=("site", "period"), threshold=0.3,
        counts=resample_counts(n, n_boot=50, seed=1), masks={},
    )  # fmt: skip
    _common.out_console.width = 200
    render_matrix(Matrix.model_validate(json_ready(section)))
    out = capsys.readouterr().out
    assert "Validation matrix" in out
    lines = out.splitlines()
    for site in ("north", "south", "east"):
        years = {y for y in ("2017", "2018", "2019") if any(site in ln and y in ln for ln in lines)}
        assert len(years) >= 2, (site, out)
        assert any(ln.split("│")[1:3] and site in ln and " all " in ln for ln in lines), out
    assert "insufficient data" in out  # the tiny site's cells, never a number
