"""The study cohort: inclusion and exclusion criteria applied in order, with the flow reported.

For the ICU task (SPEC R-T1) the steps are, in this order::

    all ICU stays in the source
    age >= min_age at admission
    admission year within the cohort years
    index stay of the admission        (repeat ICU stays in the same admission removed)
    first ICU admission of the patient (stays of the patient's later admissions removed)
    ICU length of stay >= min_los_hours
    outcome recorded                   (discharge or in-hospital death known)
    enough data in the observation window (applied after feature extraction)

"Index" and "first" are judged against *every* stay in the source, not only the
ones still in the flow: a patient whose first ICU stay was in 2007 has no first
stay in 2008–2019. Each step's counts go into the snapshot manifest.

For an admission-level task (anchor ``discharge``, e.g. 30-day readmission) the
unit is the hospital admission (its id, ``hadm_id``, fills the ``stay_id``
column) and the steps are::

    all admissions in the source
    age >= min_age at admission
    admission year within the cohort years
    service in the listed services     (e.g. general medicine)
    discharged alive
    first admission of the patient     (only when first_stay_only)
    hospital length of stay >= min_los_hours
    outcome recorded                   (discharged, and follow-up covers the label window)
    enough data in the observation window

Which steps run, and with which numbers, comes from the task spec alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical_mlops.data.raw import RawSource
from clinical_mlops.errors import ContractViolation, SourceInvalid
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "Cohort",
    "FlowStep",
    "apply_missingness_criterion",
    "build_cohort",
    "label_stays",
    "require_both_classes",
]


@dataclass(frozen=True)
class FlowStep:
    """One row of the cohort flow: how many remain after the step, how many it removed."""

    step: str
    remaining: int
    excluded: int

    def as_dict(self) -> dict[str, int | str]:
        return {"step": self.step, "remaining": self.remaining, "excluded": self.excluded}


@dataclass
class Cohort:
    """Stays that passed the criteria so far, with their label, split and the flow."""

    stays: pd.DataFrame
    flow: list[FlowStep] = field(default_factory=list)

    def _record(self, step: str, keep: np.ndarray | pd.Series) -> None:
        keep = np.asarray(keep, dtype=bool)
        before = len(self.stays)
        self.stays = self.stays.loc[keep].reset_index(drop=True)
        self.flow.append(FlowStep(step, len(self.stays), before - len(self.stays)))


def _load_stays(source: RawSource) -> pd.DataFrame:
    icu = source.read("icustays").to_pandas()
    adm = source.read("admissions").to_pandas()
    pat = source.read("patients").to_pandas()
    stays = icu.merge(
        adm.drop(columns=["subject_id"]), on="hadm_id", how="left", validate="many_to_one"
    )
    stays = stays.merge(pat, on="subject_id", how="left", validate="many_to_one")
    stays["site"] = stays["site"].fillna(source.default_site).astype(str)
    # Index and first-stay judgements use every stay in the source.
    first_in_adm = stays.groupby("hadm_id")["intime"].transform("min")
    first_of_subject = stays.groupby("subject_id")["intime"].transform("min")
    stays["_index_in_admission"] = stays["intime"].eq(first_in_adm).to_numpy()
    stays["_first_of_patient"] = stays["intime"].eq(first_of_subject).to_numpy()
    stays["los_hours"] = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600.0
    return stays


def _load_admissions(source: RawSource) -> pd.DataFrame:
    adm = source.read("admissions").to_pandas()
    pat = source.read("patients").to_pandas()
    units = adm.merge(pat, on="subject_id", how="left", validate="many_to_one")
    units["site"] = units["site"].fillna(source.default_site).astype(str)
    units.insert(0, "stay_id", units["hadm_id"])
    first_of_subject = units.groupby("subject_id")["admittime"].transform("min")
    units["_first_of_patient"] = units["admittime"].eq(first_of_subject).to_numpy()
    units["los_hours"] = (units["dischtime"] - units["admittime"]).dt.total_seconds() / 3600.0
    return units


def build_cohort(source: RawSource, spec: TaskSpec) -> Cohort:
    """Return the cohort after every criterion except the data-sufficiency one.

    The data-sufficiency criterion needs the feature table; apply it with
    :func:`apply_missingness_criterion` once features are extracted.
    """
    crit = spec.cohort
    icu = spec.unit == "icu_stay"
    admissions: pd.DataFrame | None = None
    if icu:
        cohort = Cohort(stays=_load_stays(source))
        cohort.flow.append(FlowStep("ICU stays in source", len(cohort.stays), 0))
    else:
        cohort = Cohort(stays=_load_admissions(source))
        admissions = cohort.stays.loc[:, ["subject_id", "hadm_id", "admittime", "dischtime"]]
        admissions = admissions.assign(admission_type=cohort.stays["admission_type"])
        cohort.flow.append(FlowStep("admissions in source", len(cohort.stays), 0))

    s = cohort.stays
    cohort._record(f"age >= {crit.min_age:g} years", s["age"].to_numpy() >= crit.min_age)
    s = cohort.stays
    y0, y1 = crit.years
    cohort._record(f"admitted {y0}-{y1}", s["real_year"].between(y0, y1).to_numpy())
    if crit.services is not None:
        listed = ", ".join(crit.services)
        cohort._record(f"service {listed}", cohort.stays["service"].isin(crit.services).to_numpy())
    if crit.discharged_alive:
        cohort._record("discharged alive", cohort.stays["deathtime"].isna().to_numpy())
    if icu and crit.exclude_repeat_stays_in_admission:
        cohort._record(
            "index ICU stay of the admission (repeat stays excluded)",
            cohort.stays["_index_in_admission"].to_numpy(),
        )
    if crit.first_stay_only:
        what = "ICU admission" if icu else "admission"
        cohort._record(f"first {what} of the patient", cohort.stays["_first_of_patient"].to_numpy())
    s = cohort.stays
    los_h = s["los_hours"].to_numpy(dtype=float)
    what = "ICU" if icu else "hospital"
    cohort._record(
        f"{what} length of stay >= {crit.min_los_hours:g} h",
        np.nan_to_num(los_h, nan=-1.0) >= crit.min_los_hours,
    )
    if crit.require_outcome:
        s = cohort.stays
        if icu:
            known = s["dischtime"].notna().to_numpy() | s["deathtime"].notna().to_numpy()
        else:
            # Follow-up must cover the label window: the source's last recorded admission
            # marks the end of the data.
            data_end = (admissions["admittime"] if admissions is not None else s["admittime"]).max()
            window_end = s["dischtime"] + pd.to_timedelta(spec.label.window.end_hours, unit="h")
            known = (s["dischtime"].notna() & (window_end <= data_end)).to_numpy()
        cohort._record("outcome recorded", known)

    s = cohort.stays.drop(columns=["_index_in_admission", "_first_of_patient"], errors="ignore")
    anchor = s["intime"] if icu else s["dischtime"]
    s["window_start"] = anchor + pd.to_timedelta(spec.observation_window.start_hours, unit="h")
    s["window_end"] = anchor + pd.to_timedelta(spec.observation_window.end_hours, unit="h")
    s["prediction_time"] = anchor + pd.to_timedelta(spec.prediction_time_hours, unit="h")
    s[spec.label.name] = label_stays(s, spec, admissions=admissions)
    s["split"] = _split(s["real_year"], spec)
    if (s["split"] == "none").any():
        cohort.stays = s
        cohort._record("admitted in the train or test period", (s["split"] != "none").to_numpy())
        s = cohort.stays
    cohort.stays = s.sort_values("stay_id").reset_index(drop=True)
    return cohort


def label_stays(
    stays: pd.DataFrame, spec: TaskSpec, *, admissions: pd.DataFrame | None = None
) -> np.ndarray:
    """Return the 0/1 label per unit: the label event inside its window, after prediction time.

    The window is relative to the spec's anchor (ICU admission or discharge).
    ``in_hospital_death`` reads ``deathtime``; ``readmission`` looks for another
    admission of the same patient in ``admissions`` (subject_id, hadm_id,
    admittime, admission_type) starting inside the window. Raises
    :class:`ContractViolation` (a label leak) if a unit in the cohort died at or
    before its prediction time: its outcome would be known at prediction.
    """
    anchor = stays["intime"] if spec.anchor == "icu_admission" else stays["dischtime"]
    start = anchor + pd.to_timedelta(spec.label.window.start_hours, unit="h")
    end = anchor + pd.to_timedelta(spec.label.window.end_hours, unit="h")
    pred = anchor + pd.to_timedelta(spec.prediction_time_hours, unit="h")
    if spec.label.event == "readmission":
        if admissions is None:
            raise SourceInvalid(
                "admissions: a readmission label needs the admissions table "
                "(subject_id, hadm_id, admittime, admission_type); none was given"
            )
        return _readmitted(stays, admissions, start=start, end=end, spec=spec)
    death = stays["deathtime"]
    early = death.notna() & (death <= pred)
    if early.any():
        ids = stays.loc[early, "stay_id"].head(5).tolist()
        raise ContractViolation(
            f"label leakage: {int(early.sum())} stay(s) died at or before the prediction time, "
            f"so their outcome is known when predicting (icustays.stay_id {ids}); check "
            "admissions.deathtime against icustays.outtime"
        )
    return (death.notna() & (death > start) & (death <= end)).to_numpy().astype(np.int8)


def _readmitted(
    stays: pd.DataFrame,
    admissions: pd.DataFrame,
    *,
    start: pd.Series,
    end: pd.Series,
    spec: TaskSpec,
) -> np.ndarray:
    later = admissions
    if spec.label.admission_types is not None:
        later = later.loc[later["admission_type"].isin(spec.label.admission_types)]
    index = pd.DataFrame(
        {
            "_row": np.arange(len(stays)),
            "subject_id": stays["subject_id"].to_numpy(),
            "hadm_id": stays["hadm_id"].to_numpy(),
            "_start": start.to_numpy(),
            "_end": end.to_numpy(),
        }
    )
    pairs = index.merge(
        later[["subject_id", "hadm_id", "admittime"]], on="subject_id", suffixes=("", "_next")
    )
    hit = (
        (pairs["hadm_id_next"] != pairs["hadm_id"])
        & (pairs["admittime"] > pairs["_start"])
        & (pairs["admittime"] <= pairs["_end"])
    )
    label = np.zeros(len(stays), dtype=np.int8)
    label[pairs.loc[hit, "_row"].to_numpy()] = 1
    return label


def _split(years: pd.Series, spec: TaskSpec) -> np.ndarray:
    tr0, tr1 = spec.split.train_years
    te0, te1 = spec.split.test_years
    return np.where(
        years.between(tr0, tr1), "train", np.where(years.between(te0, te1), "test", "none")
    )


def apply_missingness_criterion(
    cohort: Cohort, features: pd.DataFrame, spec: TaskSpec
) -> pd.DataFrame:
    """Drop stays with more than the allowed fraction of features missing; return features kept."""
    limit = spec.cohort.max_missing_feature_fraction
    names = list(spec.feature_names)
    frac = features[names].isna().sum(axis=1).to_numpy() / len(names)
    keep_ids = set(features.loc[frac <= limit, "stay_id"].tolist())
    keep = cohort.stays["stay_id"].isin(keep_ids).to_numpy()
    cohort._record(f"at most {limit:.0%} of the {len(names)} features missing in the window", keep)
    return (
        features.loc[features["stay_id"].isin(keep_ids)]
        .sort_values("stay_id")
        .reset_index(drop=True)
    )


def require_both_classes(stays: pd.DataFrame, spec: TaskSpec) -> None:
    """Raise :class:`ContractViolation` unless the train and test splits each hold both labels."""
    label = spec.label.name
    for part in ("train", "test"):
        y = stays.loc[stays["split"] == part, label]
        if y.empty:
            raise ContractViolation(
                f"the {part} split is empty: no cohort stay falls in split.{part}_years "
                f"{getattr(spec.split, part + '_years')}"
            )
        if y.nunique() < 2:
            raise ContractViolation(
                f"the {part} split has only label {int(y.iloc[0])} ({len(y)} stays): a model cannot be "
                "trained or evaluated on one class"
            )
