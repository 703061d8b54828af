"""A tiny hand-made raw source in the raw-event contract, for exact cohort and contract tests.

Each stay is described by a dict; anything left out takes a default that passes
every criterion. ``write_source`` writes the four tables and ``source.json``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from clinical_mlops.data.raw import RAW_SCHEMAS, write_table

UNITS = {
    "heart_rate": ("/min", 90.0),
    "resp_rate": ("/min", 18.0),
    "spo2": ("%", 97.0),
    "map": ("mm[Hg]", 75.0),
    "temperature": ("Cel", 37.2),
    "gcs": ("{score}", 15.0),
    "creatinine": ("mg/dL", 1.0),
    "lactate": ("mmol/L", 1.5),
    "albumin": ("g/dL", 3.5),
    "bilirubin": ("mg/dL", 0.8),
    "platelets": ("10*9/L", 220.0),
    "inr": ("{INR}", 1.1),
    "vasopressor": ("1", 0.0),
    "ventilation": ("1", 0.0),
}

BASE = datetime(2012, 3, 1, 8, 0, 0)


def stay(stay_id: int, **kw: Any) -> dict[str, Any]:
    """A stay that passes every criterion unless overridden."""
    d: dict[str, Any] = {
        "stay_id": stay_id,
        "subject_id": 1000 + stay_id,
        "hadm_id": 2000 + stay_id,
        "age": 60.0,
        "sex": "F",
        "ethnicity": "WHITE",
        "real_year": 2012,
        "diagnosis_icd10": "A41.9",
        "admit_offset_h": -4.0,  # hospital admission relative to ICU in-time
        "in_offset_h": 0.0,  # ICU in-time relative to BASE (+ stay_id days)
        "los_h": 48.0,
        "disch_after_out_h": 72.0,  # None = no discharge recorded
        "death_h": None,  # hours after ICU in-time
        "variables": list(UNITS),  # variables charted at hour 2
        "extra_events": [],  # (hour, variable, value, unit or None)
    }
    d.update(kw)
    return d


def write_source(
    root: Path, stays: list[dict[str, Any]], *, info: dict[str, Any] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    patients: dict[int, tuple[str, str | None]] = {}
    admissions: dict[int, dict[str, Any]] = {}
    icu_rows, ev_rows = [], []
    for s in stays:
        intime = BASE.replace(year=s["real_year"]) + timedelta(
            days=s["stay_id"], hours=s["in_offset_h"]
        )
        outtime = intime + timedelta(hours=s["los_h"])
        death = intime + timedelta(hours=s["death_h"]) if s["death_h"] is not None else None
        if death is not None:
            disch = death
        elif s["disch_after_out_h"] is None:
            disch = None
        else:
            disch = outtime + timedelta(hours=s["disch_after_out_h"])
        patients.setdefault(s["subject_id"], (s["sex"], s["ethnicity"]))
        adm = admissions.setdefault(
            s["hadm_id"],
            {
                "hadm_id": s["hadm_id"],
                "subject_id": s["subject_id"],
                "admittime": intime + timedelta(hours=s["admit_offset_h"]),
                "dischtime": disch,
                "deathtime": death,
                "real_year": s["real_year"],
                "age": s["age"],
                "diagnosis_icd10": s["diagnosis_icd10"],
            },
        )
        if disch is not None and adm["dischtime"] is not None and disch > adm["dischtime"]:
            adm["dischtime"] = disch
        icu_rows.append(
            {
                "stay_id": s["stay_id"],
                "subject_id": s["subject_id"],
                "hadm_id": s["hadm_id"],
                "intime": intime,
                "outtime": outtime,
                "careunit": "MICU",
            }
        )
        events = [(2.0, v, UNITS[v][1], None) for v in s["variables"]] + list(s["extra_events"])
        for hour, var, value, unit in events:
            ev_rows.append(
                {
                    "stay_id": s["stay_id"],
                    "subject_id": s["subject_id"],
                    "hadm_id": s["hadm_id"],
                    "charttime": intime + timedelta(hours=hour),
                    "variable": var,
                    "value": value,
                    "unit": unit if unit is not None else UNITS[var][0],
                }
            )
    tables = {
        "patients": [
            {"subject_id": k, "sex": v[0], "ethnicity": v[1]} for k, v in patients.items()
        ],
        "admissions": list(admissions.values()),
        "icustays": icu_rows,
        "events": ev_rows,
    }
    for name, rows in tables.items():
        write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[name]), root / f"{name}.parquet")
    (root / "source.json").write_text(
        json.dumps(
            info
            or {
                "source": "fixture",
                "source_version": "1",
                "extracted_at": "2020-01-01T00:00:00Z",
                "deidentification": "hand-made test data",
            }
        ),
        encoding="utf-8",
    )
    return root
