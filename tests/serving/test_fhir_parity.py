"""Parity: stays rendered as noisy FHIR Bundles, read online, give the offline snapshot's features.

For at least 500 stays of each built-in task, the stay's raw events and cohort facts
become a Bundle (collection, searchset or transaction) with unrelated observations and
resources, another encounter's results, results outside the window, entered-in-error,
cancelled and preliminary copies, blood-pressure panels instead of a measured MAP and
other units (creatinine in umol/L, temperature in degF, heart rate as display text).
Read by ``read_bundle`` and computed by ``features_for_one``, every feature must equal
the offline snapshot's: categories and flags exactly, numbers exactly unless a unit was
converted there and back, which may move the last bits (relative 1e-12).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clinical_mlops.data.cohort import build_cohort
from clinical_mlops.data.raw import read_source
from clinical_mlops.data.sources import ward_source
from clinical_mlops.data.ward import WardConfig
from clinical_mlops.features.online import features_for_one
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.serving.fhir_input import read_bundle
from clinical_mlops.tasks import load_task
from clinical_mlops.workspace import Workspace
from serving.fhir_bundles import render_stay

MIN_STAYS = 500
#: relative difference a unit converted there and back may leave (binary floating point)
REL_TOL = 1e-12
KINDS = ("collection", "searchset", "transaction")


def _same(offline: Any, online: Any) -> bool:
    missing_off = offline is None or (isinstance(offline, float) and math.isnan(offline))
    if missing_off or online is None:
        return missing_off and online is None
    if isinstance(offline, str) or isinstance(online, str):
        return offline == online
    return math.isclose(float(offline), float(online), rel_tol=REL_TOL, abs_tol=0.0)


def _check(task: str, source_dir: Path, ws: Workspace) -> None:
    spec = load_task(task)
    source = read_source(source_dir)
    snap = build_snapshot(ws, spec, source)
    offline = snap.features().set_index("stay_id")
    cohort = build_cohort(source, spec).stays.set_index("stay_id")
    key = spec.event_key
    events = source.read("events").to_pandas()
    admissions = source.read("admissions").to_pandas()
    relations = source.relations()
    diagnoses = pd.read_parquet(relations["diagnoses"][0]) if "diagnoses" in relations else None
    by_unit = dict(tuple(events.groupby(key)))
    by_hadm = dict(tuple(events.groupby("hadm_id")))
    rng = np.random.default_rng(19)
    ids = offline.index.to_numpy()
    assert len(ids) >= MIN_STAYS
    mismatches: list[str] = []
    ignored_total = 0
    for n, stay_id in enumerate(ids):
        stay = cohort.loc[stay_id].copy()
        stay["stay_id"] = stay_id
        own = by_unit.get(stay_id, events.iloc[:0])
        prior: list[tuple[int, Any, Any]] = []
        codes: list[str] = []
        other = None
        if spec.unit == "admission":
            mine = admissions.loc[
                (admissions["subject_id"] == stay["subject_id"])
                & (admissions["admittime"] < stay["admittime"])
            ]
            prior = [
                (int(a.hadm_id), a.admittime.to_pydatetime(), a.dischtime.to_pydatetime())
                for a in mine.itertuples()
            ]
            if diagnoses is not None:
                codes = diagnoses.loc[diagnoses["hadm_id"] == stay["hadm_id"], "icd10"].tolist()
            if prior:
                other = by_hadm.get(prior[-1][0])
        else:
            # The same hospital admission's results outside this ICU stay, and another
            # encounter's copies of this stay's results inside the window.
            fellow = by_hadm.get(stay["hadm_id"], events.iloc[:0])
            highs = {f.variable: (f.valid_range or (0.0, 1.0))[1] for f in spec.event_features}
            copies = own.head(8).copy()
            copies["value"] = copies["variable"].map(highs)
            other = pd.concat([fellow.loc[fellow["stay_id"].isna()], copies])
        bundle, now, encounter = render_stay(
            spec,
            stay,
            own,
            diagnoses=codes,
            prior=prior,
            other_events=other,
            rng=rng,
            kind=KINDS[n % len(KINDS)],
        )
        reading = read_bundle(bundle, spec, now=now, encounter=encounter)
        ignored_total += reading.ignored
        online = features_for_one(spec, reading.unit)
        for name in spec.feature_names:
            want = offline.at[stay_id, name]
            want = want.item() if hasattr(want, "item") else want
            if not _same(want, online[name]):
                mismatches.append(
                    f"stay {stay_id} {name}: offline {want!r}, online {online[name]!r}"
                )
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:10]}"
    assert ignored_total > 0  # the noise was there, and ignored


@pytest.mark.parametrize("task", ["icu_mortality_48h", "readmission_30d"])
def test_bundles_read_online_give_the_offline_features(
    task: str, small_source_dir: Path, tmp_path: Path
) -> None:
    ws = Workspace.open(tmp_path / "ws")
    if task == "readmission_30d":
        source_dir = ward_source(ws, WardConfig(seed=11, scale=0.02)).path
    else:
        source_dir = small_source_dir
    _check(task, source_dir, ws)
