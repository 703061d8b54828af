"""A hospital the pooled model is miscalibrated for: the synthetic west site with more deaths.

The synthetic sites draw their patients from one population, so a pooled model is about
as well calibrated at west as at the sites it was developed on. To give west the
miscalibration local recalibration exists for, its outcome rate is raised while its
measurements stay as they were: a seeded share (:data:`EXTRA_DEATH_SHARE`) of west's
surviving admissions whose ICU stays all end by hour 84 of the first are given an in-hospital
death at ICU hour 60 (inside the 48-hour window after the prediction at hour 24, and
consistent with the raw contract: death after admission, within 24 h of ICU discharge).
The pooled model then under-predicts at west (observed rate above mean predicted risk).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from clinical_mlops.data.raw import write_table
from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.workspace import Workspace

EXTRA_DEATH_SHARE = 0.25
WEST = SyntheticConfig(seed=13, scale=0.4, sites=("west",))


def miscalibrated_west(root: Path, *, seed: int = 3) -> Path:
    """Return a raw source folder of site west whose mortality the pooled model under-predicts."""
    ws = Workspace.open(root / "gen")
    source = synthetic_source(ws, WEST).path
    out = root / "west-more-deaths"
    shutil.copytree(source, out)
    adm = pd.read_parquet(out / "admissions.parquet")
    icu = pd.read_parquet(out / "icustays.parquet").sort_values(["hadm_id", "intime"])
    first = icu.drop_duplicates("hadm_id").set_index("hadm_id")
    intime = adm["hadm_id"].map(first["intime"])
    # every ICU stay of the admission must end within 24 h of the death (raw contract)
    outtime = adm["hadm_id"].map(icu.groupby("hadm_id")["outtime"].max())
    eligible = (
        adm["deathtime"].isna() & intime.notna() & (outtime <= intime + pd.Timedelta(hours=84))
    ).to_numpy()
    rng = np.random.default_rng(seed)
    chosen = eligible & (rng.random(len(adm)) < EXTRA_DEATH_SHARE)
    death = intime + pd.Timedelta(hours=60)
    adm.loc[chosen, "deathtime"] = death[chosen]
    adm.loc[chosen, "dischtime"] = death[chosen]
    write_table(pa.Table.from_pandas(adm, preserve_index=False), out / "admissions.parquet")
    return out
