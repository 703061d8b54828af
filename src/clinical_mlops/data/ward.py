"""A synthetic source of general-ward admissions for the 30-day readmission task (R-T9).

The ward counterpart of :mod:`clinical_mlops.data.synthetic`, writing the same
raw-event contract plus what an admission-level task needs: ``admission_type``,
``discharge_location`` and ``service`` on admissions, a ``diagnoses`` table
(every coded ICD-10 diagnosis, from which the Charlson index is computed) and
events charted in the last day before discharge (vital signs, haemoglobin,
whether a follow-up appointment was booked). Patients come back: each discharge
may be followed by an unplanned (emergency or urgent) readmission, with a risk
driven by age, comorbidity (Charlson), admissions in the prior 12 months, length
of stay, discharge disposition, follow-up, diagnosis and discharge physiology,
plus unobserved risk. The intercept is calibrated so that about 14.7 % of
eligible discharges are followed by an unplanned readmission within 30 days.
Exclusions all remove someone: minors, admissions outside 2008–2019, surgical
service, in-hospital deaths, discharges whose 30-day follow-up runs past the
end of the data. Times are real calendar times (no shift). The same ``seed``
and ``scale`` give byte-identical tables; ``scale=1`` gives about 31,800
eligible discharges.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from clinical_mlops.data.raw import OPTIONAL_COLUMNS, OPTIONAL_SCHEMAS, RAW_SCHEMAS, write_table
from clinical_mlops.data.synthetic import DEFAULT_SITES, _sigmoid, assign_sites
from clinical_mlops.data.synthetic import _solve_intercept as _intercept
from clinical_mlops.errors import ValueInvalid

__all__ = ["GENERATOR_VERSION", "WardConfig", "generate_ward_source"]

GENERATOR_VERSION = "clinical-mlops-synthetic-ward/3"
_PREVALENCE = 0.147
_PATIENTS_PER_SCALE = 16_050
_START = np.datetime64("2007-07-01T00:00:00", "s")
_END = np.datetime64("2020-01-15T00:00:00", "s")
_MAX_WAVES = 8
# Strength of the observed risk factors against the unobserved ones: set so that a model on the
# 14 features reaches about the published AUROC of 0.791 (SPEC R-T9) at scale 1.
_SIGNAL = 1.6

# (ICD-10 code, Charlson weight) for the comorbidities the generator codes.
_COMORBIDITIES = (
    ("I21.4", 1),  # myocardial infarction
    ("I50.9", 1),  # heart failure
    ("I73.9", 1),  # peripheral vascular disease
    ("I63.9", 1),  # cerebrovascular disease
    ("F03.90", 1),  # dementia
    ("J44.9", 1),  # chronic pulmonary disease
    ("M05.79", 1),  # rheumatic disease
    ("K25.9", 1),  # peptic ulcer
    ("K70.30", 1),  # mild liver disease
    ("E11.9", 1),  # diabetes without complications
    ("E11.22", 2),  # diabetes with complications
    ("G81.90", 2),  # hemiplegia
    ("N18.4", 2),  # renal disease
    ("C50.911", 2),  # malignancy
    ("K72.90", 3),  # severe liver disease
    ("C78.00", 6),  # metastatic solid tumour
)
_COMORBIDITY_P = np.array([6, 10, 4, 5, 4, 10, 2, 2, 2, 12, 6, 1, 9, 4, 1, 2], dtype=float)
_PRINCIPAL = (
    ("A41.9", "infectious", 0.2),
    ("C34.90", "neoplasm", 0.5),
    ("D64.9", "blood", 0.2),
    ("E87.1", "endocrine", 0.1),
    ("F10.239", "mental", 0.3),
    ("G40.909", "nervous", 0.0),
    ("I50.23", "circulatory", 0.35),
    ("J18.9", "respiratory", 0.25),
    ("K92.2", "digestive", 0.15),
    ("N39.0", "genitourinary", 0.0),
    ("S72.001A", "injury", -0.2),
    ("R55", "symptoms", -0.3),
    ("Z51.11", "other", 0.1),
)
_PRINCIPAL_P = np.array([10, 5, 4, 6, 4, 4, 16, 14, 10, 8, 5, 9, 5], dtype=float)
_DISPOSITIONS = ("HOME", "HOME_HEALTH", "SNF", "REHAB", "AGAINST_ADVICE")
_DISPOSITION_EFFECT = np.array([0.0, 0.25, 0.45, 0.2, 0.8])


@dataclass(frozen=True)
class WardConfig:
    """Parameters of the synthetic ward source; all of them go into the snapshot lineage."""

    seed: int = 7
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.001 <= self.scale <= 1000:
            raise ValueInvalid(f"scale: expected a value between 0.001 and 1000, got {self.scale}")

    def as_dict(self) -> dict[str, Any]:
        return {"generator": GENERATOR_VERSION, "seed": self.seed, "scale": self.scale}


#: How each simulated hospital's wards differ: a logit offset on unplanned readmission that
#: no input shows (discharge support the record does not hold), and the chance that the
#: last haemoglobin before discharge is not drawn (a hospital's routine discharge panel).
_WARD_SITES: dict[str, tuple[float, float]] = {
    "north": (0.30, 0.08),
    "south": (-0.30, 0.20),
    "east": (0.05, 0.12),
    "west": (0.20, 0.15),
}


def _admission_wave(n: int, age: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the characteristics of one admission for each of ``n`` patients."""
    n_comorb = rng.poisson(0.4 + 0.03 * np.clip(age - 40, 0, None))
    comorb = np.zeros((n, len(_COMORBIDITIES)), dtype=bool)
    p = _COMORBIDITY_P / _COMORBIDITY_P.sum()
    for k in range(int(n_comorb.max(initial=0))):
        pick = rng.choice(len(_COMORBIDITIES), size=n, p=p)
        comorb[np.arange(n), pick] |= k < n_comorb
    weights = np.array([w for _c, w in _COMORBIDITIES])
    principal = rng.choice(len(_PRINCIPAL), size=n, p=_PRINCIPAL_P / _PRINCIPAL_P.sum())
    severity = rng.normal(0, 1, n)
    los_days = np.clip(rng.lognormal(1.25 + 0.15 * severity, 0.55), 0.3, 60)
    older = age >= 75
    disposition = np.where(
        rng.random(n) < 0.55 + 0.15 * older,
        0,
        rng.choice(len(_DISPOSITIONS), size=n, p=[0.1, 0.35, 0.3, 0.2, 0.05]),
    )
    return {
        "comorb": comorb,
        "charlson": (comorb * weights).sum(axis=1),
        "principal": principal,
        "severity": severity,
        "los_days": los_days,
        "disposition": disposition,
        "followup": rng.random(n) < 0.62,
        "service_med": rng.random(n) < 0.86,
        "type": rng.choice(3, size=n, p=[0.62, 0.13, 0.25]),  # emergency, urgent, elective
        "death": rng.random(n) < 0.025 + 0.01 * (severity > 1.5),
        "heart_rate": rng.normal(80 + 6 * severity, 11),
        "sbp": rng.normal(124 - 5 * severity, 17),
        "resp_rate": rng.normal(17 + 1.2 * severity, 2.5),
        "temperature": rng.normal(36.8 + 0.25 * (severity > 1.0), 0.35),
        "spo2": np.clip(rng.normal(96 - 0.8 * severity, 1.8), 70, 100),
        "hemoglobin": np.clip(rng.normal(11.8 - 0.7 * severity, 1.7), 4, 19),
        "unobserved": rng.normal(0, 0.5, n),
    }


def _risk(w: dict[str, np.ndarray], age: np.ndarray, prior_12m: np.ndarray) -> np.ndarray:
    """The linear predictor of an unplanned readmission (without intercept)."""
    effect = np.array([e for _c, _n, e in _PRINCIPAL])
    observed = (
        0.018 * (age - 65)
        + 0.22 * np.minimum(w["charlson"], 8)
        + 0.38 * np.minimum(prior_12m, 4)
        + 0.35 * np.log(w["los_days"])
        + _DISPOSITION_EFFECT[w["disposition"]]
        - 0.55 * w["followup"]
        + effect[w["principal"]]
        + 0.02 * np.clip(w["heart_rate"] - 90, 0, None)
        + 0.25 * np.clip(11 - w["hemoglobin"], 0, None)
        + 0.5 * (w["temperature"] > 37.8)
        + 0.15 * np.clip(93 - w["spo2"], 0, None)
    )
    return _SIGNAL * observed + w["unobserved"]


def generate_ward_source(out_dir: str | Path, *, config: WardConfig = WardConfig()) -> Path:
    """Write a synthetic ward source (raw tables, ``diagnoses`` and ``source.json``); return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 20_250_301]))
    n = max(40, round(_PATIENTS_PER_SCALE * config.scale))
    subject = np.arange(1, n + 1, dtype=np.int64) + 30_000_000
    sex = rng.choice(np.array(["F", "M"]), size=n)
    ethnicity = rng.choice(
        np.array(["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER"]),
        size=n,
        p=[0.62, 0.17, 0.09, 0.05, 0.07],
    )
    age0 = np.clip(rng.normal(64, 17, n), 15, 98)
    age0 = np.where(rng.random(n) < 0.01, rng.uniform(15, 17.9, n), age0)  # a few minors
    span = (_END - _START).astype(np.int64)
    t = _START + (rng.random(n) * span * 0.93).astype("timedelta64[s]")
    # Each patient's hospital, from its own stream (as the admissions table writes it).
    site = assign_sites(subject, DEFAULT_SITES, seed=config.seed)
    site_offset = np.array([_WARD_SITES[s][0] for s in site])
    active = np.ones(n, dtype=bool)
    history: list[list[np.datetime64]] = [[] for _ in range(n)]
    # A first pass with a neutral intercept fixes the calibration on eligible discharges.
    probe = _admission_wave(20_000, np.clip(rng.normal(64, 17, 20_000), 18, 98), rng)
    intercept = _intercept(
        _risk(probe, np.clip(rng.normal(64, 17, 20_000), 18, 98), rng.poisson(0.5, 20_000)),
        0.131,  # calibrated so that the eligible cohort has about 14.7 % unplanned readmissions
    )

    next_type = np.full(n, -1)
    rows: list[pd.DataFrame] = []
    diag_rows: list[pd.DataFrame] = []
    hadm_next = 40_000_000
    for _wave in range(_MAX_WAVES):
        idx = np.flatnonzero(active & (t < _END))
        if idx.size == 0:
            break
        m = idx.size
        years_elapsed = (t[idx] - _START).astype("timedelta64[D]").astype(float) / 365.25
        age = age0[idx] + years_elapsed
        w = _admission_wave(m, age, rng)
        prior = np.array(
            [sum(1 for h in history[i] if (t[i] - h) <= np.timedelta64(365, "D")) for i in idx]
        )
        admit = t[idx]
        disch = admit + (w["los_days"] * 86_400).astype("timedelta64[s]")
        hadm = np.arange(hadm_next, hadm_next + m, dtype=np.int64)
        hadm_next += m
        p_readmit = _sigmoid(_risk(w, age, prior) + intercept + site_offset[idx])
        readmit = (rng.random(m) < p_readmit) & ~w["death"]
        unplanned = rng.random(m) < 0.75
        gap_days = np.where(readmit, rng.uniform(1, 30, m), 30 + rng.exponential(320, m))
        # The admission's type: set by how the previous one ended when it was a readmission.
        w["type"] = np.where(next_type[idx] >= 0, next_type[idx], w["type"])
        rows.append(
            pd.DataFrame(
                {
                    "hadm_id": hadm,
                    "subject_id": subject[idx],
                    "admittime": admit,
                    "dischtime": disch,
                    "deathtime": np.where(w["death"], disch, np.datetime64("NaT")),
                    "age": np.floor(age),
                    "principal": w["principal"],
                    "disposition": w["disposition"],
                    "service": np.where(w["service_med"], "MED", "SURG"),
                    "followup": w["followup"],
                    "heart_rate": w["heart_rate"],
                    "sbp": w["sbp"],
                    "resp_rate": w["resp_rate"],
                    "temperature": w["temperature"],
                    "spo2": w["spo2"],
                    "hemoglobin": w["hemoglobin"],
                    "type": w["type"],
                }
            )
        )
        codes = np.argwhere(w["comorb"])
        diag_rows.append(
            pd.DataFrame(
                {
                    "subject_id": subject[idx][codes[:, 0]],
                    "hadm_id": hadm[codes[:, 0]],
                    "icd10": [_COMORBIDITIES[c][0] for c in codes[:, 1]],
                }
            )
        )
        for j, i in enumerate(idx):
            history[i].append(admit[j])
        t[idx] = disch + (gap_days * 86_400).astype("timedelta64[s]")
        active[idx] = ~w["death"] & (readmit | (rng.random(m) < 0.55))
        # Unplanned readmissions are emergency or urgent; planned ones elective.
        next_type[idx] = np.where(
            readmit, np.where(unplanned, rng.choice(2, size=m, p=[0.8, 0.2]), 2), -1
        )

    adm = pd.concat(rows, ignore_index=True).sort_values("hadm_id").reset_index(drop=True)
    _write(
        out,
        adm,
        pd.concat(diag_rows, ignore_index=True),
        subject,
        sex,
        ethnicity,
        rng,
        seed=config.seed,
    )
    info = {
        "source": "synthetic-ward",
        "source_version": GENERATOR_VERSION,
        "extracted_at": "2020-01-15T00:00:00Z",
        "deidentification": "synthetic: generated from a statistical model; no real patients",
        "params": asdict(config) | {"generator": GENERATOR_VERSION},
    }
    (out / "source.json").write_text(
        json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out


def _write(
    out: Path,
    adm: pd.DataFrame,
    diagnoses: pd.DataFrame,
    subject: np.ndarray,
    sex: np.ndarray,
    ethnicity: np.ndarray,
    rng: np.random.Generator,
    *,
    seed: int,
) -> None:
    write_table(
        pa.Table.from_pandas(
            pd.DataFrame({"subject_id": subject, "sex": sex, "ethnicity": ethnicity}),
            schema=RAW_SCHEMAS["patients"],
            preserve_index=False,
        ),
        out / "patients.parquet",
    )
    types = np.array(["EMERGENCY", "URGENT", "ELECTIVE"])
    admissions = pd.DataFrame(
        {
            "hadm_id": adm["hadm_id"],
            "subject_id": adm["subject_id"],
            "admittime": adm["admittime"].astype("datetime64[us]"),
            "dischtime": adm["dischtime"].astype("datetime64[us]"),
            "deathtime": adm["deathtime"].astype("datetime64[us]"),
            "real_year": adm["admittime"].dt.year.astype(np.int32),
            "age": adm["age"].astype(float),
            "diagnosis_icd10": [_PRINCIPAL[p][0] for p in adm["principal"]],
            "admission_type": types[adm["type"].to_numpy()],
            "discharge_location": np.where(
                adm["deathtime"].notna(),
                "DIED",
                np.array(_DISPOSITIONS)[adm["disposition"].to_numpy()],
            ),
            "service": adm["service"],
        }
    )
    admissions["site"] = assign_sites(admissions["subject_id"].to_numpy(), DEFAULT_SITES, seed=seed)
    schema = pa.schema(list(RAW_SCHEMAS["admissions"]) + list(OPTIONAL_COLUMNS["admissions"]))
    write_table(
        pa.Table.from_pandas(admissions, schema=schema, preserve_index=False),
        out / "admissions.parquet",
    )
    principal = pd.DataFrame(
        {
            "subject_id": admissions["subject_id"],
            "hadm_id": admissions["hadm_id"],
            "seq_num": 1,
            "icd10": admissions["diagnosis_icd10"],
        }
    )
    secondary = diagnoses.sort_values(["hadm_id", "icd10"], kind="stable").reset_index(drop=True)
    secondary["seq_num"] = secondary.groupby("hadm_id").cumcount() + 2
    diag = pd.concat([principal, secondary[principal.columns]], ignore_index=True)
    diag = diag.sort_values(["hadm_id", "seq_num"]).reset_index(drop=True)
    diag["seq_num"] = diag["seq_num"].astype(np.int32)
    write_table(
        pa.Table.from_pandas(diag, schema=OPTIONAL_SCHEMAS["diagnoses"], preserve_index=False),
        out / "diagnoses.parquet",
    )
    # A few surgical admissions passed through an ICU: the ICU table is part of the contract.
    icu = adm.loc[adm["service"].eq("SURG")].head(max(1, len(adm) // 50))
    write_table(
        pa.Table.from_pandas(
            pd.DataFrame(
                {
                    "stay_id": icu["hadm_id"] + 10_000_000,
                    "subject_id": icu["subject_id"],
                    "hadm_id": icu["hadm_id"],
                    "intime": (icu["admittime"] + pd.Timedelta(hours=2)).astype("datetime64[us]"),
                    "outtime": (icu["admittime"] + pd.Timedelta(hours=8)).astype("datetime64[us]"),
                    "careunit": "Surgical ICU",
                }
            ),
            schema=RAW_SCHEMAS["icustays"],
            preserve_index=False,
        ),
        out / "icustays.parquet",
    )
    write_table(
        _events(adm.assign(site=admissions["site"].to_numpy()), rng), out / "events.parquet"
    )


_VITALS = (
    ("heart_rate", "/min", (-20.0, -12.0, -3.0)),
    ("sbp", "mm[Hg]", (-20.0, -12.0, -3.0)),
    ("resp_rate", "/min", (-20.0, -12.0, -3.0)),
    ("temperature", "Cel", (-20.0, -8.0)),
    ("spo2", "%", (-20.0, -12.0, -3.0)),
    ("hemoglobin", "g/dL", (-10.0,)),
)


def _events(adm: pd.DataFrame, rng: np.random.Generator) -> pa.Table:
    """Charted events of the last day before discharge, plus earlier ones that must not count."""
    parts = []
    n = len(adm)
    disch = adm["dischtime"].to_numpy()
    for var, unit, hours in _VITALS:
        base = adm[var].to_numpy(dtype=float)
        undrawn = (
            adm["site"].map({k: v[1] for k, v in _WARD_SITES.items()}).to_numpy(float)
            if var == "hemoglobin"
            else np.full(n, 0.01)
        )
        missing = rng.random(n) < undrawn
        for k, h in enumerate(hours):
            last = k == len(hours) - 1
            value = base if last else base + rng.normal(0, 0.03 * np.abs(base).mean(), n)
            if var == "spo2":
                value = np.minimum(value, 100.0)
            keep = ~missing
            parts.append(
                pd.DataFrame(
                    {
                        "hadm_id": adm["hadm_id"].to_numpy()[keep],
                        "subject_id": adm["subject_id"].to_numpy()[keep],
                        "charttime": (disch + np.timedelta64(int(h * 3600), "s"))[keep],
                        "variable": var,
                        "value": np.round(value, 1)[keep],
                        "unit": unit,
                    }
                )
            )
    # Admission-day vitals: outside the discharge window, so they reach no feature.
    parts.append(
        pd.DataFrame(
            {
                "hadm_id": adm["hadm_id"].to_numpy(),
                "subject_id": adm["subject_id"].to_numpy(),
                "charttime": adm["admittime"].to_numpy() + np.timedelta64(1, "h"),
                "variable": "heart_rate",
                "value": np.round(rng.normal(95, 15, n), 1),
                "unit": "/min",
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "hadm_id": adm["hadm_id"].to_numpy(),
                "subject_id": adm["subject_id"].to_numpy(),
                "charttime": disch - np.timedelta64(3600, "s"),
                "variable": "followup_scheduled",
                "value": adm["followup"].to_numpy(dtype=float),
                "unit": "1",
            }
        )
    )
    ev = pd.concat(parts, ignore_index=True).sort_values(
        ["hadm_id", "charttime", "variable"], kind="stable"
    )
    ev.insert(0, "stay_id", pd.array([None] * len(ev), dtype="Int64"))
    ev["charttime"] = ev["charttime"].astype("datetime64[us]")
    return pa.Table.from_pandas(ev, schema=RAW_SCHEMAS["events"], preserve_index=False)
