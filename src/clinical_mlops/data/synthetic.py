"""A synthetic source of raw ICU events whose cohort reproduces the published statistics.

MIMIC-IV needs credentialed access, so the embedded default source simulates a
hospital: patients, admissions, ICU stays and *raw timestamped events* (vitals
about hourly, labs sparse, organ-support documentation every four hours, some
values charted before ICU admission and many after the prediction time).
Feature engineering then does real work over those events.

How it is built
---------------
* A latent severity with six organ components (cardiovascular, respiratory,
  renal, hepatic, neurological, metabolic) drives both physiology and the
  outcome. Young patients compensate: their physiology shows less of their
  severity, and more of their risk is unobserved, so they are harder to predict.
* Risk is non-linear in what is charted (log-scale labs, a U-shaped
  temperature effect, age interacting with severity), so tree ensembles beat a
  linear model, as in the published comparison.
* Lactate, albumin and bilirubin are ordered more often for sicker patients:
  missingness is informative. Missingness rates are calibrated (on the training
  years) to the published R-T4 rates; the death rate to the published 11.3 %.
* Practice drifts mildly over calendar years: more lactate testing, slightly
  less ventilation, slightly lower baseline mortality.
* Every R-T1 exclusion removes someone: minors, admissions outside 2008–2019,
  repeat ICU stays in one admission, later admissions of the same patient, stays
  under 24 h, admissions with no recorded outcome, and stays with sparse data.
* A few charted values are device artefacts outside physiological ranges.

The same ``seed`` and ``scale`` give byte-identical tables. ``scale=1`` yields a
cohort of about 23,841 stays (16,751 train / 7,090 test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from clinical_mlops.data.raw import RAW_SCHEMAS, write_table
from clinical_mlops.errors import ValueInvalid

__all__ = [
    "DEFAULT_SITES",
    "GENERATOR_VERSION",
    "SITES",
    "SITE_PROFILES",
    "SiteProfile",
    "SyntheticConfig",
    "assign_sites",
    "generate_source",
]

GENERATOR_VERSION = "clinical-mlops-synthetic-icu/2"

# Published reference cohort at scale 1 (SPEC R-T2).
_TRAIN_STAYS = 16_751
_TEST_STAYS = 7_090
_TRAIN_YEARS = tuple(range(2008, 2017))
_TEST_YEARS = (2017, 2018, 2019)
_PREVALENCE = 0.113

# Published training-set missingness (SPEC R-T4); the last four are not published
# (the list stops at 0.2 %) and are set below that.
_MISSINGNESS = {
    "lactate": 0.382,
    "albumin": 0.317,
    "bilirubin": 0.294,
    "gcs": 0.076,
    "spo2": 0.023,
    "map": 0.018,
    "resp_rate": 0.011,
    "heart_rate": 0.004,
    "vasopressor": 0.003,
    "ventilation": 0.002,
    "temperature": 0.0015,
    "inr": 0.0015,
    "creatinine": 0.001,
    "platelets": 0.001,
}
# How strongly sickness lowers the chance a variable is missing, and the yearly
# practice trend (negative = measured more often in later years).
_MISSING_SEVERITY_SLOPE = {"lactate": -0.9, "albumin": -0.45, "bilirubin": -0.45, "gcs": -0.3}
_MISSING_YEAR_SLOPE = {"lactate": -0.03, "albumin": -0.01}

#: The simulated hospitals and their relative size. The default source holds the first
#: three, whose pooled cohort reproduces the published figures; ``west`` is another
#: hospital, generated on request (e.g. for external validation).
SITES: dict[str, float] = {"north": 0.45, "south": 0.35, "east": 0.20, "west": 0.30}
DEFAULT_SITES: tuple[str, ...] = ("north", "south", "east")


@dataclass(frozen=True)
class SiteProfile:
    """How one simulated hospital differs from the others (see the module docstring).

    ``chapters`` multiplies the shares of the named diagnosis chapters (case mix);
    ``hidden`` is a logit offset on the outcome that no feature shows (the per-site
    miscalibration of a pooled model); ``missing`` the logit offsets of a variable being
    unmeasured in the window (positive: charted less often).
    """

    chapters: dict[str, float]
    hidden: float
    missing: dict[str, float]


SITE_PROFILES: dict[str, SiteProfile] = {
    # a tertiary centre: more cancer and sepsis, deaths its charting does not explain
    "north": SiteProfile(
        chapters={"neoplasm": 1.5, "infectious": 1.3},
        hidden=0.30,
        missing={"lactate": 0.3, "albumin": 0.3},
    ),
    # a community hospital: trauma and toxicology, routine lab panels
    "south": SiteProfile(
        chapters={"injury": 1.6, "mental": 1.6},
        hidden=-0.35,
        missing={"lactate": -0.4, "albumin": -0.2, "bilirubin": -0.2},
    ),
    # a cardiac centre: GCS and lactate charted less often
    "east": SiteProfile(
        chapters={"circulatory": 1.6}, hidden=0.05, missing={"lactate": 0.2, "gcs": 0.3}
    ),
    # an older population with more respiratory failure
    "west": SiteProfile(chapters={"respiratory": 1.5}, hidden=0.35, missing={"albumin": 0.3}),
}

# Extra stays, as a fraction of the eligible index stays, that each exclusion removes.
_EXCLUDED_FRACTIONS = {
    "minor": 0.025,
    "out_of_years": 0.03,
    "repeat_in_admission": 0.06,
    "later_admission": 0.10,
    "short_stay": 0.25,
    "no_outcome": 0.006,
    "sparse": 0.012,
}

_UNITS = {
    "heart_rate": "/min",
    "resp_rate": "/min",
    "spo2": "%",
    "map": "mm[Hg]",
    "temperature": "Cel",
    "gcs": "{score}",
    "creatinine": "mg/dL",
    "lactate": "mmol/L",
    "albumin": "g/dL",
    "bilirubin": "mg/dL",
    "platelets": "10*9/L",
    "inr": "{INR}",
    "vasopressor": "1",
    "ventilation": "1",
}
EVENT_VARIABLES = tuple(_UNITS)

# ICD-10 primary codes per chapter: (chapter, share, severity offset, codes)
_DIAGNOSES = (
    ("circulatory", 0.25, 0.10, ("I21.4", "I50.9", "I61.9", "I46.9", "I26.99", "I71.01")),
    ("infectious", 0.13, 0.55, ("A41.9", "A41.51", "A40.3", "B37.7")),
    ("respiratory", 0.10, 0.40, ("J96.01", "J18.9", "J44.1", "J69.0")),
    ("injury", 0.10, 0.00, ("S06.5X0A", "S27.0XXA", "T40.2X1A", "S72.001A")),
    ("digestive", 0.08, 0.15, ("K92.2", "K72.00", "K85.90", "K56.60")),
    ("neoplasm", 0.07, 0.35, ("C34.90", "C25.9", "C92.00", "D32.9")),
    ("nervous", 0.06, 0.20, ("G93.1", "G40.901", "G61.0")),
    ("symptoms", 0.05, -0.10, ("R65.21", "R57.0", "R40.20")),
    ("endocrine", 0.04, 0.00, ("E11.10", "E87.1", "E86.0")),
    ("genitourinary", 0.035, 0.20, ("N17.9", "N39.0")),
    ("mental", 0.03, -0.50, ("F10.231", "F19.20")),
    ("blood", 0.015, 0.30, ("D65", "D69.6")),
    ("other", 0.04, -0.20, ("Z99.11", "L89.154", "M62.82", "O14.14")),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic source; all of them go into the snapshot lineage."""

    seed: int = 7
    scale: float = 1.0
    chunk_stays: int = 4_000
    #: the hospitals to generate (names from :data:`SITES`); each contributes stays in
    #: proportion to its size, the default three together the published totals at scale 1
    sites: tuple[str, ...] = DEFAULT_SITES

    def __post_init__(self) -> None:
        if not 0.001 <= self.scale <= 1000:
            raise ValueInvalid(f"scale: expected a value between 0.001 and 1000, got {self.scale}")
        unknown = [s for s in self.sites if s not in SITES]
        if not self.sites or unknown or len(set(self.sites)) != len(self.sites):
            raise ValueInvalid(
                f"sites: expected one or more distinct names among {', '.join(SITES)}, got "
                f"{', '.join(self.sites) or 'none'}"
            )

    @property
    def size(self) -> float:
        """Return the population size relative to the published cohort (scale × site share)."""
        default = sum(SITES[s] for s in DEFAULT_SITES)
        return self.scale * sum(SITES[s] for s in self.sites) / default

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": GENERATOR_VERSION,
            "seed": self.seed,
            "scale": self.scale,
            "sites": list(self.sites),
        }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_intercept(linear: np.ndarray, target: float) -> float:
    """Return ``a`` such that ``mean(sigmoid(a + linear)) == target`` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if _sigmoid(mid + linear).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer counts proportional to ``weights`` (largest remainder)."""
    raw = total * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    short = total - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


# ---------------------------------------------------------------------------------------
# Stay-level population
# ---------------------------------------------------------------------------------------


def _population(cfg: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    n_train = round(_TRAIN_STAYS * cfg.size)
    n_test = round(_TEST_STAYS * cfg.size)
    n_elig = n_train + n_test
    extra = {k: round(v * n_elig) for k, v in _EXCLUDED_FRACTIONS.items()}

    # Calendar years of the eligible index stays: exact train/test totals, even within each.
    years = np.concatenate(
        [
            np.repeat(_TRAIN_YEARS, _allocate(n_train, np.ones(len(_TRAIN_YEARS)))),
            np.repeat(_TEST_YEARS, _allocate(n_test, np.ones(len(_TEST_YEARS)))),
        ]
    )
    rng.shuffle(years)

    # Independent stays (own subject, own admission) for every category but the two
    # that attach to an eligible patient.
    kinds = ["eligible"] * n_elig
    for k in ("minor", "out_of_years", "short_stay", "no_outcome", "sparse"):
        kinds += [k] * extra[k]
    kind = np.array(kinds)
    n = len(kind)
    all_years = rng.choice(np.arange(2008, 2020), size=n)
    all_years[:n_elig] = years
    oy = kind == "out_of_years"
    all_years[oy] = rng.choice([2005, 2006, 2007, 2020, 2021], size=int(oy.sum()))

    pop = pd.DataFrame({"kind": kind, "real_year": all_years.astype(np.int32)})
    # The hospital comes first, from its own stream: every later draw is the same whatever
    # the hospitals, and repeat stays and later admissions copy their patient's row.
    site_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 20_240_602]))
    shares = np.array([SITES[s] for s in cfg.sites])
    names = np.array(cfg.sites, dtype=object)
    pop["site"] = names[site_rng.choice(len(names), size=n, p=shares / shares.sum())].astype(str)
    _demographics(pop, rng)
    _severity(pop, rng)
    _outcome(pop, rng, eligible=pop["kind"].to_numpy() == "eligible")
    _timeline(pop, rng)

    # Repeat ICU stays in the index admission, and later admissions of the same patient.
    survivors = np.flatnonzero((pop["kind"].to_numpy() == "eligible") & pop["deathtime"].isna())
    repeat_src = rng.choice(survivors, size=extra["repeat_in_admission"], replace=False)
    later_src = rng.choice(survivors, size=extra["later_admission"], replace=False)
    repeats = _repeat_stays(pop, repeat_src, rng)
    laters = _later_admissions(pop, later_src, rng)
    pop = pd.concat([pop, repeats, laters], ignore_index=True)

    # Identifiers: shuffled so that ids carry no information about the category.
    n_all = len(pop)
    stay_ids = 30_000_000 + rng.permutation(n_all)
    pop["stay_id"] = stay_ids.astype(np.int64)
    same_subject = pop["parent"].to_numpy()
    order_subj = 10_000_000 + rng.permutation(n_all)
    order_hadm = 20_000_000 + rng.permutation(n_all)
    subj = order_subj.copy()
    hadm = order_hadm.copy()
    has_parent = same_subject >= 0
    subj[has_parent] = subj[same_subject[has_parent]]
    same_adm = has_parent & (pop["kind"].to_numpy() == "repeat_in_admission")
    hadm[same_adm] = hadm[same_subject[same_adm]]
    pop["subject_id"] = subj.astype(np.int64)
    pop["hadm_id"] = hadm.astype(np.int64)
    return pop


def _demographics(pop: pd.DataFrame, rng: np.random.Generator) -> None:
    n = len(pop)
    band = rng.choice(4, size=n, p=[0.16, 0.33, 0.31, 0.20])
    lows = np.array([18, 45, 65, 80])
    highs = np.array([44, 64, 79, 80])
    age = lows[band] + np.floor(rng.random(n) * (highs[band] - lows[band] + 1))
    old = band == 3
    age[old] = 80 + np.floor(16 * rng.beta(1.0, 2.2, size=int(old.sum())))
    minor = pop["kind"].to_numpy() == "minor"
    age[minor] = rng.integers(14, 18, size=int(minor.sum()))
    pop["age"] = age.astype(float)
    pop["sex"] = np.where(rng.random(n) < 0.56, "M", "F")
    eth = np.array(["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN"])
    pop["ethnicity"] = eth[rng.choice(6, size=n, p=[0.66, 0.10, 0.04, 0.03, 0.05, 0.12])]
    chapters = np.array([d[0] for d in _DIAGNOSES])
    # One uniform per stay, inverted through the hospital's own chapter shares (the draw
    # numpy's choice makes, so the rest of the stream is the same for every case mix).
    u = rng.random(n)
    ch = np.zeros(n, dtype=int)
    site = pop["site"].to_numpy()
    for name in np.unique(site):
        weights = SITE_PROFILES[name].chapters
        shares = np.array([d[1] * weights.get(d[0], 1.0) for d in _DIAGNOSES])
        cdf = np.cumsum(shares)
        at = site == name
        ch[at] = np.searchsorted(cdf / cdf[-1], u[at], side="right")
    pop["chapter"] = chapters[ch]
    pop["dx_offset"] = np.array([d[2] for d in _DIAGNOSES])[ch]
    codes = np.empty(n, dtype=object)
    for i, d in enumerate(_DIAGNOSES):
        idx = np.flatnonzero(ch == i)
        codes[idx] = np.array(d[3], dtype=object)[rng.integers(0, len(d[3]), size=len(idx))]
    pop["diagnosis_icd10"] = codes.astype(str)
    pop["cardiac_arrest"] = pop["diagnosis_icd10"].eq("I46.9").to_numpy()


def _severity(pop: pd.DataFrame, rng: np.random.Generator) -> None:
    n = len(pop)
    age = pop["age"].to_numpy()
    sev = rng.normal(0, 1, n) + pop["dx_offset"].to_numpy() + 0.012 * (age - 60)
    pop["severity"] = sev
    for organ, rho in (
        ("cardio", 0.65),
        ("resp", 0.6),
        ("renal", 0.5),
        ("hepatic", 0.45),
        ("neuro", 0.5),
        ("metabolic", 0.65),
    ):
        pop[organ] = rho * sev + np.sqrt(1 - rho**2) * rng.normal(0, 1, n)
    chapter = pop["chapter"].to_numpy()
    pop.loc[chapter == "respiratory", "resp"] += 0.6
    pop.loc[chapter == "nervous", "neuro"] += 0.8
    pop.loc[pop["cardiac_arrest"].to_numpy(), ["neuro", "metabolic"]] += 1.2
    pop.loc[chapter == "infectious", "metabolic"] += 0.4
    pop.loc[chapter == "digestive", "hepatic"] += 0.6
    pop.loc[chapter == "mental", "neuro"] += 0.7
    # Young patients compensate: their charted physiology shows less of their illness.
    pop["compensation"] = np.where(age < 45, 0.6, np.where(age < 65, 0.9, 1.0))
    pop["infection"] = (chapter == "infectious") | (rng.random(n) < 0.12)
    pop["hidden"] = rng.normal(0, 1, n) * np.where(age < 45, 1.3, 0.9)


def _outcome(pop: pd.DataFrame, rng: np.random.Generator, *, eligible: np.ndarray) -> None:
    age = pop["age"].to_numpy()
    sev = pop["severity"].to_numpy()
    cardio = pop["cardio"].to_numpy()
    metabolic = pop["metabolic"].to_numpy()
    neuro = pop["neuro"].to_numpy()
    resp = pop["resp"].to_numpy()
    # Risk is non-additive in what is charted: shock needs both failing perfusion and
    # rising lactate, coma is a threshold, and the same derangement is deadlier when old.
    shock = (cardio > 0.5) & (metabolic > 0.5)
    coma = neuro > 1.4
    lin = (
        0.25 * sev
        + 1.8 * shock
        + 1.1 * coma
        + 0.35 * np.maximum(resp - 0.5, 0) ** 2
        + 0.15 * pop["hepatic"].to_numpy()
        + 0.015 * (age - 65)
        + 0.07 * np.maximum(age - 65, 0) * np.maximum(sev, 0)
        + 1.0 * pop["cardiac_arrest"].to_numpy()
        + pop["hidden"].to_numpy()
    )
    a = _solve_intercept(lin[eligible], _PREVALENCE)
    # The hospital's hidden offset is added after the intercept is solved, so a hospital
    # generated on its own keeps its own rate; the offsets about balance over the default
    # hospitals, so the pooled prevalence stays near the published one.
    hidden = pop["site"].map({k: v.hidden for k, v in SITE_PROFILES.items()}).to_numpy(float)
    pop["p_death"] = _sigmoid(a + lin + hidden)
    pop["death48"] = rng.random(len(pop)) < pop["p_death"].to_numpy()
    # Some survivors of the label window die later in the same admission.
    pop["late_death"] = ~pop["death48"].to_numpy() & (
        rng.random(len(pop)) < 0.6 * pop["p_death"].to_numpy()
    )


def _timeline(pop: pd.DataFrame, rng: np.random.Generator) -> None:
    n = len(pop)
    year = pop["real_year"].to_numpy()
    day = rng.integers(0, 365, size=n)
    base = pd.to_datetime(pd.Series(year.astype(str)) + "-01-01").to_numpy().astype("datetime64[s]")
    admit = base + (day * 86400 + rng.integers(0, 86400, size=n)).astype("timedelta64[s]")
    intime = admit + (rng.uniform(0.5, 14.0, size=n) * 3600).astype("timedelta64[s]")
    kind = pop["kind"].to_numpy()

    short = kind == "short_stay"
    # A stay under 24 h cannot end in the label window; whether it ended in death is drawn below.
    death48 = pop["death48"].to_numpy() & ~short
    late = pop["late_death"].to_numpy() & ~short
    pop["death48"] = death48
    pop["late_death"] = late
    los_h = 24 + rng.lognormal(np.log(40), 0.7, size=n)
    death_h = np.where(death48, rng.uniform(24.5, 72.0, size=n), np.nan)
    late_h = np.where(late, 72 + rng.lognormal(np.log(120), 0.8, size=n), np.nan)
    los_h[short] = rng.uniform(3, 23.5, size=int(short.sum()))
    died_short = short & (rng.random(n) < 0.08)
    death_h[short] = np.where(died_short[short], los_h[short], np.nan)
    late_h[short] = np.nan
    los_h = np.where(death48, death_h, los_h)
    # Deaths after hour 72 happen in the ICU when the ICU stay is still running.
    in_icu_late = late & (late_h <= los_h)
    los_h = np.where(in_icu_late, late_h, los_h)

    outtime = intime + (los_h * 3600).astype("timedelta64[s]")
    death_time_h = np.where(np.isnan(death_h), late_h, death_h)
    dead = ~np.isnan(death_time_h)
    deathtime = np.where(
        dead,
        intime + (np.nan_to_num(death_time_h) * 3600).astype("timedelta64[s]"),
        np.datetime64("NaT"),
    )
    ward_h = rng.lognormal(np.log(96), 0.6, size=n)
    dischtime = np.where(dead, deathtime, outtime + (ward_h * 3600).astype("timedelta64[s]"))
    no_outcome = kind == "no_outcome"
    dischtime[no_outcome] = np.datetime64("NaT")
    deathtime[no_outcome] = np.datetime64("NaT")

    pop["admittime"] = admit
    pop["intime"] = intime
    pop["outtime"] = outtime
    pop["deathtime"] = pd.to_datetime(deathtime)
    pop["dischtime"] = pd.to_datetime(dischtime)
    pop["los_hours"] = los_h
    pop["parent"] = -1


def _repeat_stays(pop: pd.DataFrame, src: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    rep = pop.iloc[src].copy()
    rep["kind"] = "repeat_in_admission"
    rep["parent"] = src
    gap = (rng.uniform(6, 60, size=len(rep)) * 3600).astype("timedelta64[s]")
    rep["intime"] = rep["outtime"].to_numpy() + gap
    los = 8 + rng.lognormal(np.log(36), 0.6, size=len(rep))
    rep["outtime"] = rep["intime"].to_numpy() + (los * 3600).astype("timedelta64[s]")
    rep["los_hours"] = los
    # The admission now ends after the repeat stay: keep the parent's discharge in step.
    new_disch = rep["outtime"].to_numpy() + (rng.uniform(24, 120, size=len(rep)) * 3600).astype(
        "timedelta64[s]"
    )
    pop.loc[src, "dischtime"] = np.maximum(pop.loc[src, "dischtime"].to_numpy(), new_disch)
    rep["dischtime"] = pop.loc[src, "dischtime"].to_numpy()
    rep["death48"] = False
    rep["late_death"] = False
    return rep


def _later_admissions(pop: pd.DataFrame, src: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    later = pop.iloc[src].copy()
    later["kind"] = "later_admission"
    later["parent"] = src
    shift = (rng.uniform(30, 400, size=len(later)) * 86400).astype("timedelta64[s]")
    start = np.maximum(pop.loc[src, "dischtime"].to_numpy(), pop.loc[src, "outtime"].to_numpy())
    later["admittime"] = start + shift
    later["real_year"] = pd.to_datetime(later["admittime"]).dt.year.astype(np.int32).to_numpy()
    hours = (rng.uniform(0.5, 14.0, size=len(later)) * 3600).astype("timedelta64[s]")
    later["intime"] = later["admittime"].to_numpy() + hours
    los = 24 + rng.lognormal(np.log(40), 0.7, size=len(later))
    later["outtime"] = later["intime"].to_numpy() + (los * 3600).astype("timedelta64[s]")
    later["dischtime"] = later["outtime"].to_numpy() + (
        rng.lognormal(np.log(96), 0.6, size=len(later)) * 3600
    ).astype("timedelta64[s]")
    later["deathtime"] = pd.NaT
    later["los_hours"] = los
    later["death48"] = False
    later["late_death"] = False
    later["age"] = later["age"] + np.maximum(
        later["real_year"].to_numpy() - pop.loc[src, "real_year"].to_numpy(), 0
    )
    return later


# ---------------------------------------------------------------------------------------
# What is measured in the observation window
# ---------------------------------------------------------------------------------------


def _measured(pop: pd.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return, per event variable, whether the stay has any value in hours 0–24."""
    n = len(pop)
    sev = pop["severity"].to_numpy()
    year = pop["real_year"].to_numpy() - 2012
    kind = pop["kind"].to_numpy()
    train_elig = (kind == "eligible") & (pop["real_year"].to_numpy() <= 2016)
    measured = {}
    for var, target in _MISSINGNESS.items():
        lin = _MISSING_SEVERITY_SLOPE.get(var, 0.0) * sev + _MISSING_YEAR_SLOPE.get(var, 0.0) * year
        a = _solve_intercept(lin[train_elig], target)
        practice = pop["site"].map({k: v.missing.get(var, 0.0) for k, v in SITE_PROFILES.items()})
        measured[var] = rng.random(n) >= _sigmoid(a + lin + practice.to_numpy(float))
    # Sparse stays: 9 to 13 of the 14 charted variables absent in the window.
    sparse = np.flatnonzero(kind == "sparse")
    names = list(_MISSINGNESS)
    for i in sparse:
        k = rng.integers(9, 14)
        for var in rng.choice(names, size=k, replace=False):
            measured[var][i] = False
    return measured


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------

_H = 3600.0


@dataclass(frozen=True)
class _Var:
    """How one variable is charted: level per stay, noise per event, rounding and schedule."""

    level: Callable[[pd.DataFrame], np.ndarray]
    noise: float
    log: bool = False
    decimals: int = 1
    lo: float = -np.inf
    hi: float = np.inf
    worse: float = 1.0  # direction of deterioration in level units


def _c(df: pd.DataFrame, col: str) -> np.ndarray:
    return df[col].to_numpy() * df["compensation"].to_numpy()


_VARS: dict[str, _Var] = {
    "heart_rate": _Var(
        lambda d: 84 + 8 * _c(d, "cardio") + 4 * _c(d, "metabolic") + 4 * d["infection"].to_numpy(),
        8,
        decimals=0,
        lo=25,
        hi=220,
        worse=8,
    ),
    "resp_rate": _Var(
        lambda d: 18 + 3.2 * _c(d, "resp") + 1.0 * _c(d, "metabolic"),
        3,
        decimals=0,
        lo=4,
        hi=60,
        worse=3,
    ),
    "spo2": _Var(
        lambda d: 97.2 - 1.6 * np.maximum(_c(d, "resp"), -0.5),
        1.3,
        decimals=0,
        lo=60,
        hi=100,
        worse=-1.5,
    ),
    "map": _Var(lambda d: 82 - 7 * _c(d, "cardio"), 7, decimals=0, lo=25, hi=160, worse=-7),
    "temperature": _Var(
        lambda d: (
            37.0
            + 0.7 * d["infection"].to_numpy() * (1 - 0.4 * np.maximum(_c(d, "severity"), 0))
            - 0.25 * np.maximum(_c(d, "severity") - 1.2, 0)
        ),
        0.3,
        decimals=1,
        lo=31,
        hi=42.5,
        worse=-0.3,
    ),
    "gcs": _Var(
        lambda d: 14.6 - 3.2 * np.maximum(_c(d, "neuro"), 0) ** 1.3,
        1.0,
        decimals=0,
        lo=3,
        hi=15,
        worse=-2,
    ),
    "creatinine": _Var(
        lambda d: np.log(0.95) + 0.33 * _c(d, "renal") + 0.004 * (d["age"].to_numpy() - 60),
        0.08,
        log=True,
        decimals=2,
        lo=0.2,
        hi=20,
        worse=0.25,
    ),
    "lactate": _Var(
        lambda d: np.log(1.5) + 0.38 * _c(d, "metabolic"),
        0.18,
        log=True,
        decimals=1,
        lo=0.3,
        hi=25,
        worse=0.35,
    ),
    "albumin": _Var(
        lambda d: 3.3 - 0.25 * _c(d, "severity") - 0.2 * _c(d, "hepatic"),
        0.12,
        decimals=1,
        lo=1.0,
        hi=5.5,
        worse=-0.2,
    ),
    "bilirubin": _Var(
        lambda d: np.log(0.8) + 0.5 * _c(d, "hepatic"),
        0.1,
        log=True,
        decimals=1,
        lo=0.1,
        hi=40,
        worse=0.3,
    ),
    "platelets": _Var(
        lambda d: np.log(220) - 0.2 * _c(d, "hepatic") - 0.18 * _c(d, "severity"),
        0.08,
        log=True,
        decimals=0,
        lo=3,
        hi=1200,
        worse=-0.2,
    ),
    "inr": _Var(
        lambda d: np.log(1.2) + 0.12 * _c(d, "hepatic") + 0.05 * _c(d, "severity"),
        0.05,
        log=True,
        decimals=1,
        lo=0.8,
        hi=12,
        worse=0.15,
    ),
}
_VITALS_HOURLY = ("heart_rate", "resp_rate", "spo2", "map")
_FOUR_HOURLY = ("temperature", "gcs")
_LABS_TWICE = ("creatinine", "platelets", "inr")
_LABS_ONCE = ("albumin", "bilirubin")
_ARTEFACT = {"heart_rate": 0.0, "spo2": 0.0, "map": 0.0, "resp_rate": 0.0}
_ARTEFACT_RATE = 0.0004


def _schedule(
    var: str, df: pd.DataFrame, in_window: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (row index into df, hours since ICU admission) of every event of ``var``."""
    n = len(df)
    horizon = np.minimum(df["los_hours"].to_numpy(), 36.0)
    if var in _VITALS_HOURLY or var in _FOUR_HOURLY or var in ("vasopressor", "ventilation"):
        step = 1.0 if var in _VITALS_HOURLY else 4.0
        offset = rng.uniform(0, 0.9 if step == 1 else 3.5, size=n)
        slots = np.arange(0, 40, step)
        hours = offset[:, None] + slots[None, :]
    elif var in _LABS_TWICE:
        hours = np.stack(
            [
                rng.uniform(-4, -0.5, n),
                rng.uniform(0.5, 4, n),
                rng.uniform(10, 16, n),
                rng.uniform(24.5, 30, n),
            ],
            axis=1,
        )
        pre = rng.random(n) < 0.3
        hours[~pre, 0] = np.nan
    elif var in _LABS_ONCE:
        hours = np.stack([rng.uniform(0.5, 10, n), rng.uniform(24.5, 34, n)], axis=1)
    else:  # lactate: more draws when sicker
        sev = df["severity"].to_numpy()
        k = 1 + (sev > 0.5) + (sev > 1.5)
        hours = np.stack(
            [
                rng.uniform(0.3, 6, n),
                rng.uniform(6, 14, n),
                rng.uniform(14, 23.5, n),
                rng.uniform(24.2, 30, n),
            ],
            axis=1,
        )
        hours[:, 1] = np.where(k >= 2, hours[:, 1], np.nan)
        hours[:, 2] = np.where(k >= 3, hours[:, 2], np.nan)
    keep = ~np.isnan(hours) & (hours < horizon[:, None])
    window = (hours >= 0) & (hours < 24)
    keep &= ~window | in_window[:, None]
    rows, cols = np.nonzero(keep)
    return rows, hours[rows, cols]


def _events_chunk(
    df: pd.DataFrame, measured: dict[str, np.ndarray], rng: np.random.Generator
) -> pa.Table:
    parts_row, parts_h, parts_var, parts_val = [], [], [], []
    death48 = df["death48"].to_numpy()
    for vi, var in enumerate(EVENT_VARIABLES):
        rows, hours = _schedule(var, df, measured[var], rng)
        if var in ("vasopressor", "ventilation"):
            values = _support_values(var, df, rows, hours, rng)
        else:
            spec = _VARS[var]
            level = spec.level(df)[rows]
            # Patients who die in the label window deteriorate after the prediction time:
            # a leaky feature would see it.
            after = (hours >= 24) & death48[rows]
            level = level + np.where(after, spec.worse * 1.5, 0.0)
            noise = rng.normal(0, spec.noise, size=len(rows))
            values = np.exp(level + noise) if spec.log else level + noise
            values = np.round(np.clip(values, spec.lo, spec.hi), spec.decimals)
            if var in _ARTEFACT:
                art = rng.random(len(rows)) < _ARTEFACT_RATE
                values[art] = _ARTEFACT[var]
        parts_row.append(rows)
        parts_h.append(hours)
        parts_var.append(np.full(len(rows), vi, dtype=np.int8))
        parts_val.append(values.astype(float))
    rows = np.concatenate(parts_row)
    hours = np.concatenate(parts_h)
    var_idx = np.concatenate(parts_var)
    values = np.concatenate(parts_val)
    charttime = df["intime"].to_numpy().astype("datetime64[s]")[rows] + np.round(hours * _H).astype(
        "timedelta64[s]"
    )
    stay = df["stay_id"].to_numpy()[rows]
    order = np.lexsort((var_idx, charttime, stay))
    names = np.array(EVENT_VARIABLES, dtype=object)
    units = np.array([_UNITS[v] for v in EVENT_VARIABLES], dtype=object)
    return pa.table(
        {
            "stay_id": stay[order],
            "subject_id": df["subject_id"].to_numpy()[rows][order],
            "hadm_id": df["hadm_id"].to_numpy()[rows][order],
            "charttime": pa.array(
                charttime[order].astype("datetime64[us]"), type=pa.timestamp("us")
            ),
            "variable": pa.array(names[var_idx[order]], type=pa.string()),
            "value": values[order],
            "unit": pa.array(units[var_idx[order]], type=pa.string()),
        },
        schema=RAW_SCHEMAS["events"],
    )


def _support_values(
    var: str, df: pd.DataFrame, rows: np.ndarray, hours: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """0/1 documentation of vasopressor or ventilation status at each charted time."""
    n = len(df)
    year = df["real_year"].to_numpy() - 2012
    if var == "vasopressor":
        lin = -1.55 + 1.5 * _c(df, "cardio") + 0.4 * _c(df, "metabolic")
    else:
        lin = -1.05 + 1.3 * _c(df, "resp") + 0.6 * np.maximum(_c(df, "neuro"), 0) - 0.015 * year
    on = rng.random(n) < _sigmoid(lin)
    start = np.where(on, rng.uniform(-2, 18, size=n), np.inf)
    late_start = np.where(
        df["death48"].to_numpy() & ~on & (rng.random(n) < 0.5), rng.uniform(24, 30, size=n), np.inf
    )
    start = np.minimum(start, late_start)
    return (hours >= start[rows]).astype(float)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

_ADMISSIONS_WITH_SITE = RAW_SCHEMAS["admissions"].append(pa.field("site", pa.string()))


def assign_sites(subject_ids: np.ndarray, sites: tuple[str, ...], *, seed: int) -> np.ndarray:
    """Return the hospital of each row: one per patient, drawn in proportion to site size.

    Every stay and admission of a patient is at the patient's hospital. The draw has its
    own random stream, so the rest of the data do not depend on it.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20_240_602]))
    subjects = np.unique(subject_ids)
    shares = np.array([SITES[s] for s in sites])
    names = np.array(sites, dtype=object)
    drawn = names[rng.choice(len(sites), size=len(subjects), p=shares / shares.sum())]
    return np.asarray(drawn[np.searchsorted(subjects, subject_ids)], dtype=str)


def generate_source(
    out_dir: str | Path,
    *,
    config: SyntheticConfig = SyntheticConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic raw source (the four raw tables and ``source.json``) to ``out_dir``.

    ``progress(done, total)`` is called after each chunk of stays. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence([config.seed, 20_240_601]).spawn(3)
    pop = _population(config, np.random.default_rng(seeds[0]))
    measured = _measured(pop, np.random.default_rng(seeds[1]))

    write_table(
        pa.Table.from_pandas(
            pop.loc[pop["parent"] < 0, ["subject_id", "sex", "ethnicity"]]
            .sort_values("subject_id")
            .reset_index(drop=True),
            schema=RAW_SCHEMAS["patients"],
            preserve_index=False,
        ),
        out / "patients.parquet",
    )
    adm = pop.loc[pop["kind"] != "repeat_in_admission"].sort_values("hadm_id")
    adm_tab = pd.DataFrame(
        {
            "hadm_id": adm["hadm_id"],
            "subject_id": adm["subject_id"],
            "admittime": adm["admittime"].astype("datetime64[us]"),
            "dischtime": adm["dischtime"].astype("datetime64[us]"),
            "deathtime": adm["deathtime"].astype("datetime64[us]"),
            "real_year": adm["real_year"].astype(np.int32),
            "age": adm["age"].astype(float),
            "diagnosis_icd10": adm["diagnosis_icd10"].astype(str),
            "site": adm["site"].astype(str),
        }
    ).reset_index(drop=True)
    write_table(
        pa.Table.from_pandas(adm_tab, schema=_ADMISSIONS_WITH_SITE, preserve_index=False),
        out / "admissions.parquet",
    )
    icu = pop.sort_values("stay_id")
    icu_tab = pd.DataFrame(
        {
            "stay_id": icu["stay_id"],
            "subject_id": icu["subject_id"],
            "hadm_id": icu["hadm_id"],
            "intime": icu["intime"].astype("datetime64[us]"),
            "outtime": icu["outtime"].astype("datetime64[us]"),
            "careunit": np.where(
                icu["chapter"].eq("circulatory"), "Cardiac ICU", "Medical/Surgical ICU"
            ),
        }
    ).reset_index(drop=True)
    write_table(
        pa.Table.from_pandas(icu_tab, schema=RAW_SCHEMAS["icustays"], preserve_index=False),
        out / "icustays.parquet",
    )

    import pyarrow.parquet as pq

    order = np.argsort(pop["stay_id"].to_numpy(), kind="stable")
    chunk_seeds = seeds[2]
    n_chunks = max(1, int(np.ceil(len(pop) / config.chunk_stays)))
    children = chunk_seeds.spawn(n_chunks)
    with pq.ParquetWriter(
        out / "events.parquet", RAW_SCHEMAS["events"], compression="zstd"
    ) as writer:
        for c in range(n_chunks):
            idx = order[c * config.chunk_stays : (c + 1) * config.chunk_stays]
            chunk = pop.iloc[idx].reset_index(drop=True)
            meas = {k: v[idx] for k, v in measured.items()}
            writer.write_table(_events_chunk(chunk, meas, np.random.default_rng(children[c])))
            if progress is not None:
                progress(c + 1, n_chunks)

    info = {
        "source": "synthetic",
        "source_version": GENERATOR_VERSION,
        # The data cut of a simulated extract: fixed, so identical inputs give identical ids.
        "extracted_at": "2020-01-01T00:00:00Z",
        "deidentification": "synthetic: generated from a statistical model; no real patients",
        "params": asdict(config) | {"generator": GENERATOR_VERSION},
    }
    (out / "source.json").write_text(
        json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out
