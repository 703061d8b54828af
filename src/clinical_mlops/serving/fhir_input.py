"""FHIR R4 input: a Bundle as an EHR sends it, read into one patient's online unit.

:func:`read_bundle` takes a ``collection``, ``searchset`` or ``transaction`` Bundle
holding a Patient, Encounters, Conditions, MedicationAdministration/-Request,
Procedure, DeviceUseStatement and any Observations, and returns the
:class:`~clinical_mlops.features.online.OnlineUnit` the task's feature definition is
executed on (:func:`~clinical_mlops.features.online.features_for_one`, the same SQL as
offline). What it reads comes from the task spec only: each feature's ``fhir``
declarations (resource type, ``system|code``, status filter, panel derivation) and
units (converted to the feature's UCUM unit by :mod:`clinical_mlops.units`).

Everything else an EHR sends (other resource types, other codes, other encounters'
results, statuses the spec does not accept) is ignored and never recorded: only the
references of the resources used (``basis``) and how many entries were ignored.

The cohort facts, as the offline cohort has them:

- subject: the Patient's identifier in ``identifier_system`` when given, else
  ``Patient.id``; an explicit subject must name the same Patient;
- the encounter: the one named, else of the Encounters that are not planned, cancelled
  or entered in error the latest-starting one in progress, else the latest-starting
  inpatient one, else the latest-starting one; prior admissions are the patient's other
  inpatient Encounters (class IMP, ACUTE or NONAC) in the Bundle;
- admission = ``Encounter.period.start``; discharge = ``period.end``, or the request
  time while the encounter is in progress (the readmission task's anchor); an ICU task's
  anchor is the Encounter's start (send the ICU encounter);
- age in whole years from ``Patient.birthDate`` at admission, as the raw data records
  it; sex from ``Patient.gender`` (male -> M, female -> F, else missing);
- diagnoses: the ICD-10 codes of Conditions that name the encounter or that its
  ``diagnosis`` lists; the principal one is the
  ``Encounter.diagnosis`` of rank 1 (else the one used for billing, else the first);
  a ``diagnosis`` naming a Condition not in the Bundle ranks nothing;
- discharge disposition from ``Encounter.hospitalization.dischargeDisposition``
  (HL7 discharge-disposition or NUBC codes, or the spec's own category code);
  a code it does not know is passed on and counts as OTHER, as offline;
- setting ``icu`` when the Encounter's location, type or service type is an ICU
  (v3 RoleCode ICU and its kinds), else ``ward`` for an inpatient class.

Bad input raises :class:`~clinical_mlops.errors.InputInvalid` naming
``bundle.entry[i]...`` and the rule, before anything is scored or recorded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clinical_mlops.errors import InputInvalid
from clinical_mlops.features.online import OnlineUnit
from clinical_mlops.hashing import is_text
from clinical_mlops.tasks.spec import Feature, TaskSpec
from clinical_mlops.units import UnitNotConvertible, convert, ucum_code

__all__ = [
    "BUNDLE_TYPES",
    "CLOCK_SKEW",
    "ICD10_SYSTEMS",
    "BundleReading",
    "read_bundle",
]

#: Bundle types read; others (history, document, message...) are refused
BUNDLE_TYPES = ("collection", "searchset", "transaction")
#: how far a resource's time may run ahead of the request time (EHR and service clocks)
CLOCK_SKEW = timedelta(minutes=5)
UCUM = "http://unitsofmeasure.org"
ICD10_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10-ca",
        "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
    }
)
#: where each resource type says when it happened (first found wins)
_WHEN: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod"),
    "MedicationRequest": ("authoredOn",),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "DeviceUseStatement": ("timingDateTime", "timingPeriod", "recordedOn"),
}
_SUBJECT = {"MedicationRequest": "subject", "DeviceUseStatement": "subject"}
_ENCOUNTER_FIELD = {"MedicationAdministration": "context"}
_DROPPED_STATUS = ("planned", "cancelled", "entered-in-error")
_INPATIENT = ("IMP", "ACUTE", "NONAC")
_CURRENT_STATUS = ("arrived", "triaged", "in-progress", "onleave")
_ICU_CODES = frozenset({"ICU", "CCU", "PEDICU", "NCCU", "SICU", "MICU", "CHEST", "PEDNICU"})
_DISPOSITION = {
    # HL7 discharge-disposition
    "home": "HOME",
    "alt-home": "HOME",
    "snf": "SNF",
    "rehab": "REHAB",
    "aadvice": "AGAINST_ADVICE",
    "oth": "OTHER",
    # NUBC patient discharge status
    "01": "HOME",
    "06": "HOME_HEALTH",
    "03": "SNF",
    "62": "REHAB",
    "07": "AGAINST_ADVICE",
}
_GENDER = {"male": "M", "female": "F"}
# FHIR dateTime: a year, year-month, date, or date and time with a zone (zone required).
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTIAL = re.compile(r"^\d{4}(-\d{2})?$")


@dataclass(frozen=True)
class BundleReading:
    """One patient's Bundle as read for the task: the online unit and what was used."""

    subject_id: str
    encounter_id: str | None
    #: the Patient's reference in the Bundle (``Patient/id``), when it has one
    patient_reference: str | None
    site: str | None
    setting: str | None
    prediction_time: datetime
    #: hours from the anchor (ICU admission, or discharge) to the request time
    hours_since_admission: float | None
    unit: OnlineUnit
    #: references (``Type/id``) of the resources that reached a feature
    basis: list[str]
    #: entries that reached no feature (unrelated types, codes, statuses, encounters, times)
    ignored: int


@dataclass(frozen=True)
class _Source:
    feature: Feature
    resource: str
    codes: tuple[tuple[str, str], ...]
    status: tuple[str, ...]
    derive: str | None
    systolic: tuple[str, str] | None
    diastolic: tuple[str, str] | None


def _pair(text: Any, where: str) -> tuple[str, str]:
    system, sep, code = str(text).partition("|")
    if not sep or not code:
        raise InputInvalid([(where, f"expected 'system|code', got {text!r}")])
    return system, code


def _sources(spec: TaskSpec) -> list[_Source]:
    """Return every way the spec's approved features are recorded in FHIR."""
    out = []
    for f in spec.features:
        if f.status != "approved":
            continue
        for k, d in enumerate(f.fhir):
            where = f"spec.features.{f.name}.fhir[{k}]"
            out.append(
                _Source(
                    feature=f,
                    resource=d.resource,
                    codes=tuple(_pair(c, where) for c in d.codes),
                    status=tuple(d.statuses),
                    derive=d.derive,
                    systolic=_pair(d.systolic, where) if d.systolic else None,
                    diastolic=_pair(d.diastolic, where) if d.diastolic else None,
                )
            )
    return out


# -- small readers -------------------------------------------------------------------------


def _utc_naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _time(value: Any, where: str) -> datetime:
    """Return a FHIR dateTime/instant as naive UTC (a date alone: midnight UTC)."""
    if isinstance(value, str) and _DATE_ONLY.match(value):
        return datetime.fromisoformat(value)
    if not isinstance(value, str) or _PARTIAL.match(value):
        raise InputInvalid(
            [(where, f"expected a FHIR dateTime with at least a full date, got {value!r}")]
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputInvalid([(where, f"{value!r} is not a FHIR dateTime")]) from None
    if parsed.tzinfo is None:
        raise InputInvalid([(where, f"{value!r} has a time but no time zone (FHIR requires one)")])
    return _utc_naive(parsed)


def _when(res: Mapping[str, Any], fields: Iterable[str], where: str) -> tuple[datetime, str] | None:
    """Return (start time, field path) of the first of ``fields`` that ``res`` has."""
    for name in fields:
        value = res.get(name)
        if value is None:
            continue
        if name.endswith("Period"):
            start = value.get("start") if isinstance(value, Mapping) else None
            if start is None:
                continue
            return _time(start, f"{where}.{name}.start"), f"{where}.{name}.start"
        return _time(value, f"{where}.{name}"), f"{where}.{name}"
    return None


def _codings(concept: Any) -> list[tuple[str | None, str | None]]:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list):
        return []
    out: list[tuple[str | None, str | None]] = []
    for c in codings:
        if isinstance(c, Mapping):
            system, code = c.get("system"), c.get("code")
            out.append(
                (
                    system if isinstance(system, str) else None,
                    code if isinstance(code, str) else None,
                )
            )
    return out


def _ref(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, Mapping) else None
    return ref if isinstance(ref, str) and ref else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Index:
    """The Bundle's resources by every name a reference may use (fullUrl, Type/id)."""

    def __init__(self) -> None:
        self.by_name: dict[str, int] = {}

    def add(self, i: int, entry: Mapping[str, Any], res: Mapping[str, Any]) -> None:
        rtype, rid = res.get("resourceType"), res.get("id")
        full = entry.get("fullUrl")
        if isinstance(full, str) and full:
            self.by_name[full] = i
            tail = _type_id(full)
            if tail:
                self.by_name.setdefault(tail, i)
        if isinstance(rid, str) and rid:
            self.by_name.setdefault(f"{rtype}/{rid}", i)

    def find(self, ref: str) -> int | None:
        if ref in self.by_name:
            return self.by_name[ref]
        tail = _type_id(ref)
        return self.by_name.get(tail) if tail else None


def _type_id(ref: str) -> str | None:
    """Return the ``Type/id`` of a relative or absolute reference (version dropped)."""
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return None


# -- the reading ---------------------------------------------------------------------------


def _entries(bundle: Any) -> list[tuple[int, Mapping[str, Any], Mapping[str, Any]]]:
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise InputInvalid([("bundle.resourceType", "expected a FHIR Bundle")])
    if bundle.get("type") not in BUNDLE_TYPES:
        raise InputInvalid(
            [
                (
                    "bundle.type",
                    f"{bundle.get('type')!r}: expected one of {', '.join(BUNDLE_TYPES)}",
                )
            ]
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InputInvalid([("bundle.entry", "expected a list of entries")])
    out = []
    problems: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        where = f"bundle.entry[{i}]"
        if not isinstance(entry, Mapping):
            problems.append((where, "an entry must be an object holding a resource"))
            continue
        res = entry.get("resource")
        if not isinstance(res, Mapping) or not isinstance(res.get("resourceType"), str):
            problems.append(
                (f"{where}.resource", "an entry must hold a resource with a resourceType")
            )
            continue
        if res["resourceType"] == "Bundle":
            problems.append(
                (
                    f"{where}.resource",
                    "a nested Bundle is not read: send one patient's resources in one Bundle",
                )
            )
            continue
        rid = res.get("id")
        if rid is not None and not (isinstance(rid, str) and rid and is_text(rid)):
            problems.append((f"{where}.resource.id", "expected text (a non-empty id)"))
            continue
        out.append((i, entry, res))
    if problems:
        raise InputInvalid(problems)
    return out


def read_bundle(
    bundle: Any,
    spec: TaskSpec,
    *,
    now: datetime,
    subject: str | None = None,
    encounter: str | None = None,
    identifier_system: str | None = None,
) -> BundleReading:
    """Return the online unit of the patient and encounter a FHIR Bundle describes.

    ``now`` is the request time: nothing may be timed after it (beyond
    :data:`CLOCK_SKEW`), and it stands for the discharge of an encounter still in
    progress. ``subject`` (optional) must name the Bundle's Patient; ``encounter``
    (an id or reference) picks the encounter when the Bundle holds several.
    Raises ``InputInvalid`` naming ``bundle.entry[i]...`` and the rule broken.
    """
    now = _utc_naive(now)
    latest = now + CLOCK_SKEW
    entries = _entries(bundle)
    index = _Index()
    for i, entry, res in entries:
        index.add(i, entry, res)
    by_pos = {i: res for i, _, res in entries}

    def future(when: datetime, where: str) -> None:
        if when > latest:
            raise InputInvalid(
                [
                    (
                        where,
                        f"{when.isoformat()}Z is after the request time "
                        f"({now.isoformat()}Z) by more than {CLOCK_SKEW.seconds // 60} minutes: "
                        "results cannot come from the future",
                    )
                ]
            )

    # The patient: one only, and every resource about a patient about that one.
    patients = [(i, res) for i, _, res in entries if res["resourceType"] == "Patient"]
    patient_pos: int | None = None
    for i, res in patients:
        if patient_pos is None:
            patient_pos = i
        elif res.get("id") != by_pos[patient_pos].get("id") or res.get("id") is None:
            raise InputInvalid(
                [
                    (
                        f"bundle.entry[{i}].resource",
                        f"a second Patient (the first is bundle.entry[{patient_pos}]): "
                        "a Bundle must describe one patient",
                    )
                ]
            )
    patient = by_pos[patient_pos] if patient_pos is not None else None
    subject_id = _subject_of(patient, patient_pos, subject, identifier_system)

    seen_patient_ref: tuple[str, int] | None = None
    for i, _, res in entries:
        field_name = "patient" if "patient" in res and "subject" not in res else "subject"
        ref = _ref(res.get(field_name))
        if ref is None or res["resourceType"] == "Patient":
            continue
        target = index.find(ref)
        is_patient_ref = (_type_id(ref) or "").startswith("Patient/") or (
            target is not None and by_pos[target]["resourceType"] == "Patient"
        )
        if not is_patient_ref:
            continue
        where = f"bundle.entry[{i}].resource.{field_name}.reference"
        if patient is not None:
            if target != patient_pos:
                raise InputInvalid(
                    [(where, f"{ref!r} is another patient than the Bundle's Patient")]
                )
        elif seen_patient_ref is None:
            seen_patient_ref = (_type_id(ref) or ref, i)
        elif (_type_id(ref) or ref) != seen_patient_ref[0]:
            raise InputInvalid(
                [
                    (
                        where,
                        f"{ref!r} is another patient than bundle.entry[{seen_patient_ref[1]}] "
                        "names: a Bundle must describe one patient",
                    )
                ]
            )

    # The encounter and the patient's other inpatient stays.
    encounters = [
        (i, res)
        for i, _, res in entries
        if res["resourceType"] == "Encounter" and res.get("status") not in _DROPPED_STATUS
    ]
    times: dict[int, tuple[datetime | None, datetime | None]] = {}
    for i, res in encounters:
        period = res.get("period")
        if not isinstance(period, Mapping):
            period = {}
        start = period.get("start")
        end = period.get("end")
        s = _time(start, f"bundle.entry[{i}].resource.period.start") if start else None
        e = _time(end, f"bundle.entry[{i}].resource.period.end") if end else None
        for value, name in ((s, "start"), (e, "end")):
            if value is not None:
                future(value, f"bundle.entry[{i}].resource.period.{name}")
        times[i] = (s, e)
    current = _pick_encounter(encounters, times, encounter, index, by_pos)
    if current is None:
        raise InputInvalid(
            [
                (
                    "bundle.entry",
                    "no Encounter: its period.start (the admission) is needed to place the "
                    "observation window; send the patient's current Encounter",
                )
            ]
        )
    cur_pos, cur = current
    admit, disch = times[cur_pos]
    if admit is None:
        raise InputInvalid(
            [
                (
                    f"bundle.entry[{cur_pos}].resource.period.start",
                    "the encounter's start (the admission) is needed to place the "
                    "observation window",
                )
            ]
        )
    encounter_id = str(cur.get("id") or f"entry-{cur_pos}")
    # The readmission task predicts at discharge: while in progress, the request is it.
    discharge = disch if disch is not None else now
    anchor = admit if spec.anchor == "icu_admission" else discharge
    prediction_time = anchor + timedelta(hours=spec.prediction_time_hours)
    window_start = anchor + timedelta(hours=spec.observation_window.start_hours)
    window_end = anchor + timedelta(hours=spec.observation_window.end_hours)
    hours = max(0.0, (now - anchor).total_seconds() / 3600.0)
    # The unit's keys are local integers (the feature SQL joins on them): 1 is this encounter.
    admissions = [
        (1 if i == cur_pos else 2 + k, times[i][0])
        for k, (i, res) in enumerate(encounters)
        if times[i][0] is not None and (i == cur_pos or _class_code(res) in _INPATIENT)
    ]
    used: set[int] = {cur_pos}
    for i, res in encounters:
        if i != cur_pos and _class_code(res) in _INPATIENT:
            used.add(i)
    if patient_pos is not None:
        used.add(patient_pos)

    # Age and sex from the Patient.
    age = None
    if patient is not None and patient.get("birthDate") is not None:
        born = patient["birthDate"]
        where = f"bundle.entry[{patient_pos}].resource.birthDate"
        if not isinstance(born, str) or not _DATE_ONLY.match(born):
            raise InputInvalid([(where, f"a full date is needed to compute age, got {born!r}")])
        b = date.fromisoformat(born)
        future(datetime(b.year, b.month, b.day), where)
        at = admit.date()
        age = float(at.year - b.year - ((at.month, at.day) < (b.month, b.day)))
    sex = _GENDER.get(str(patient.get("gender"))) if patient is not None else None

    # Diagnoses of this encounter.
    diagnoses, principal, diag_used = _diagnoses(cur, cur_pos, entries, index, by_pos)
    used |= diag_used

    # Events: every resource a feature declares, of this encounter or of none.
    sources = _sources(spec)
    declared = {
        c
        for src in sources
        for _, c in (*src.codes, *(x for x in (src.systolic, src.diastolic) if x))
    }
    events: list[tuple[str, datetime, float]] = []
    basis: list[str] = []
    enc_positions = {i for i, _ in encounters} | {
        i for i, _, r in entries if r["resourceType"] == "Encounter"
    }
    for i, _, res in entries:
        rtype = res["resourceType"]
        mine = [s for s in sources if s.resource == rtype]
        if not mine:
            continue
        where = f"bundle.entry[{i}].resource"
        enc_field = _ENCOUNTER_FIELD.get(rtype, "encounter")
        enc_ref = _ref(res.get(enc_field))
        if enc_ref is not None:
            target = index.find(enc_ref)
            if target is None:
                if enc_positions:
                    raise InputInvalid(
                        [
                            (
                                f"{where}.{enc_field}.reference",
                                f"{enc_ref!r} points to no Encounter in the Bundle",
                            )
                        ]
                    )
            elif target != cur_pos:
                continue  # another encounter's result
        codes = _codes_of(res, index, by_pos)
        for s_, c_ in codes:
            if s_ is None and c_ in declared:
                raise InputInvalid(
                    [
                        (
                            f"{where}.code",
                            f"code {c_!r} has no system: a declared feature is matched by "
                            "system and code, so say which code system it is from",
                        )
                    ]
                )
        found = _events_of(res, codes, mine, where)
        if not found:
            continue
        when = _when(res, _WHEN.get(rtype, ()), where)
        if when is None:
            raise InputInvalid(
                [(where, f"a {rtype} of a declared feature needs a time (effective[x])")]
            )
        at_time, at_where = when
        future(at_time, at_where)
        for variable, amount in found:
            events.append((variable, at_time, amount))
        if window_start <= at_time < window_end:
            used.add(i)
            if res.get("id"):
                basis.append(f"{rtype}/{res['id']}")

    disposition = _disposition(cur, spec)
    cohort: dict[str, Any] = {
        "stay_id": 1,
        "subject_id": 1,
        "hadm_id": 1,
        "age": age,
        "sex": sex,
        "diagnosis_icd10": principal,
        "admittime": admit,
        "dischtime": disch,
        "los_hours": ((disch or now) - admit).total_seconds() / 3600.0,
        "window_start": window_start,
        "window_end": window_end,
        "prediction_time": prediction_time,
        "intime": admit,
        "outtime": disch,
        "admission_type": None,
        "discharge_location": disposition,
        "service": None,
    }
    unit = OnlineUnit(
        cohort=cohort,
        events=tuple(events),
        admissions=tuple((h, t) for h, t in admissions if t is not None),
        diagnoses=tuple(diagnoses),
    )
    basis += [f"Condition/{by_pos[i]['id']}" for i in sorted(diag_used) if by_pos[i].get("id")]
    return BundleReading(
        subject_id=subject_id,
        encounter_id=encounter_id,
        patient_reference=(
            f"Patient/{patient['id']}" if patient is not None and patient.get("id") else None
        ),
        site=_site(cur),
        setting=_setting(cur, index, by_pos),
        prediction_time=prediction_time,
        hours_since_admission=hours if spec.anchor == "icu_admission" else None,
        unit=unit,
        basis=basis,
        ignored=len(entries) - len(used),
    )


def _subject_of(
    patient: Mapping[str, Any] | None,
    pos: int | None,
    subject: str | None,
    identifier_system: str | None,
) -> str:
    if patient is None:
        if subject:
            return subject
        raise InputInvalid(
            [("bundle.entry", "no Patient and no subject: the patient cannot be identified")]
        )
    where = f"bundle.entry[{pos}].resource"
    ids = [
        str(x.get("value"))
        for x in patient.get("identifier") or []
        if isinstance(x, Mapping)
        and isinstance(x.get("value"), str)
        and (identifier_system is None or x.get("system") == identifier_system)
    ]
    if identifier_system is not None:
        if not ids:
            raise InputInvalid(
                [
                    (
                        f"{where}.identifier",
                        f"the Patient has no identifier in system {identifier_system!r}, "
                        "the one this service identifies patients by",
                    )
                ]
            )
        found = ids[0]
    else:
        pid = patient.get("id")
        if not isinstance(pid, str) or not pid:
            if subject:
                return subject
            raise InputInvalid([(f"{where}.id", "the Patient needs an id (or send a subject)")])
        found = pid
    if subject and subject != found and subject != patient.get("id") and subject not in ids:
        raise InputInvalid(
            [("subject", f"{subject!r} is not the Bundle's Patient ({where}); send one patient")]
        )
    return found


def _class_code(enc: Mapping[str, Any]) -> str | None:
    cls = enc.get("class")
    if isinstance(cls, Mapping):
        code = cls.get("code")
        return code if isinstance(code, str) else None
    return None


def _pick_encounter(
    encounters: Sequence[tuple[int, Mapping[str, Any]]],
    times: Mapping[int, tuple[datetime | None, datetime | None]],
    wanted: str | None,
    index: _Index,
    by_pos: Mapping[int, Mapping[str, Any]],
) -> tuple[int, Mapping[str, Any]] | None:
    if wanted:
        ref = wanted if "/" in wanted else f"Encounter/{wanted}"
        pos = index.find(ref)
        if pos is None or by_pos[pos]["resourceType"] != "Encounter":
            raise InputInvalid([("encounter", f"{wanted!r} is not an Encounter of the Bundle")])
        if pos not in times:
            raise InputInvalid(
                [(f"bundle.entry[{pos}].resource.status", "the encounter named is not current")]
            )
        return pos, by_pos[pos]
    if not encounters:
        return None
    # Unnamed: the encounter in progress, else the latest inpatient stay, else the latest.
    # An EHR's Bundle of a stay often holds short visits during it (a clinic appointment,
    # a dialysis session) that start later than the admission but are not the stay.
    return max(
        encounters,
        key=lambda e: (
            e[1].get("status") in _CURRENT_STATUS,
            _class_code(e[1]) in _INPATIENT,
            times[e[0]][0] or datetime.min,
            e[0],
        ),
    )


def _diagnoses(
    cur: Mapping[str, Any],
    cur_pos: int,
    entries: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]],
    index: _Index,
    by_pos: Mapping[int, Mapping[str, Any]],
) -> tuple[list[str], str | None, set[int]]:
    """Return (ICD-10 codes of the encounter, the principal one, entries used).

    A Condition is the encounter's when it names the encounter or the encounter lists it in
    ``diagnosis``: EHRs often link comorbidities (problem-list Conditions that name no
    encounter) only from there, and the coded diagnoses of an admission include them.
    """
    listed: set[int] = set()
    for d in cur.get("diagnosis") or []:
        ref = _ref(d.get("condition")) if isinstance(d, Mapping) else None
        pos = index.find(ref) if ref else None
        if pos is not None:
            listed.add(pos)
    icd: dict[int, str] = {}
    for i, _, res in entries:
        if res["resourceType"] != "Condition":
            continue
        if res.get("verificationStatus") and any(
            c == "entered-in-error" or c == "refuted"
            for _, c in _codings(res.get("verificationStatus"))
        ):
            continue
        ref = _ref(res.get("encounter"))
        if i not in listed and (ref is None or index.find(ref) != cur_pos):
            continue
        code = next((c for s, c in _codings(res.get("code")) if s in ICD10_SYSTEMS and c), None)
        if code is not None:
            icd[i] = code
    ranked: list[tuple[float, int, int]] = []
    for k, d in enumerate(cur.get("diagnosis") or []):
        if not isinstance(d, Mapping):
            continue
        ref = _ref(d.get("condition"))
        # a Condition the EHR did not send (a search of Encounters does not include the
        # Conditions they name) ranks nothing; the Conditions sent still give the codes
        pos = index.find(ref) if ref else None
        if pos is None or pos not in icd:
            continue
        rank = _number(d.get("rank"))
        billing = any(c == "billing" for _, c in _codings(d.get("use")))
        key = rank if rank is not None else (1.5 if billing else math.inf)
        ranked.append((key, k, pos))
    principal = icd[min(ranked)[2]] if ranked else (icd[min(icd)] if icd else None)
    return list(icd.values()), principal, set(icd)


def _disposition(enc: Mapping[str, Any], spec: TaskSpec) -> str | None:
    hosp = enc.get("hospitalization")
    concept = hosp.get("dischargeDisposition") if isinstance(hosp, Mapping) else None
    codings = _codings(concept)
    if not codings:
        return None
    categories: tuple[str, ...] = ()
    for f in spec.features:
        if f.name == "discharge_disposition" and f.categories:
            categories = f.categories
    for _, code in codings:
        if code is None:
            continue
        if code.upper() in categories:
            return code.upper()
        if code in _DISPOSITION:
            return _DISPOSITION[code]
    return next((c for _, c in codings if c), None)


def _site(enc: Mapping[str, Any]) -> str | None:
    org = enc.get("serviceProvider")
    if not isinstance(org, Mapping):
        return None
    ident = org.get("identifier")
    if isinstance(ident, Mapping) and isinstance(ident.get("value"), str):
        return str(ident["value"])
    ref = _ref(org)
    return ref.rsplit("/", 1)[-1] if ref else None


def _setting(
    enc: Mapping[str, Any], index: _Index, by_pos: Mapping[int, Mapping[str, Any]]
) -> str | None:
    concepts: list[Any] = [enc.get("serviceType"), *(enc.get("type") or [])]
    for loc in enc.get("location") or []:
        if not isinstance(loc, Mapping):
            continue
        concepts.append(loc.get("physicalType"))
        ref = _ref(loc.get("location"))
        pos = index.find(ref) if ref else None
        if pos is not None:
            concepts += [*(by_pos[pos].get("type") or []), by_pos[pos].get("physicalType")]
    for concept in concepts:
        if any(c in _ICU_CODES for _, c in _codings(concept)):
            return "icu"
    code = _class_code(enc)
    if code in _INPATIENT:
        return "ward"
    return {"EMER": "emergency", "AMB": "outpatient"}.get(code or "")


def _codes_of(
    res: Mapping[str, Any], index: _Index, by_pos: Mapping[int, Mapping[str, Any]]
) -> list[tuple[str | None, str | None]]:
    """Return the codings that say what ``res`` is (a medication's or device's own code too)."""
    codes = _codings(res.get("code")) + _codings(res.get("medicationCodeableConcept"))
    for name, field in (("medicationReference", "code"), ("device", "type")):
        ref = _ref(res.get(name))
        pos = index.find(ref) if ref else None
        if pos is not None:
            codes += _codings(by_pos[pos].get(field))
    device = res.get("device")
    if isinstance(device, Mapping):
        codes += _codings(device.get("concept"))
    return codes


def _events_of(
    res: Mapping[str, Any],
    codes: Sequence[tuple[str | None, str | None]],
    sources: Sequence[_Source],
    where: str,
) -> list[tuple[str, float]]:
    """Return (variable, value in the feature's unit) of each feature ``res`` records."""
    status = res.get("status")
    rtype = res["resourceType"]
    out: list[tuple[str, float]] = []
    components = [c for c in res.get("component") or [] if isinstance(c, Mapping)]
    for src in sources:
        if status not in src.status:
            continue
        f = src.feature
        variable = f.variable or f.name
        if src.derive is None:
            if rtype != "Observation":
                if any(code in src.codes for code in codes):
                    out.append((variable, 1.0))
                continue
            if any(code in src.codes for code in codes):
                value = _value(res, f, where)
                if value is not None:
                    out.append((variable, value))
            for k, comp in enumerate(components):
                if any(code in src.codes for code in _codings(comp.get("code"))):
                    value = _value(comp, f, f"{where}.component[{k}]")
                    if value is not None:
                        out.append((variable, value))
    # Derived values (MAP from a panel) only where the panel gives no value of its own.
    for src in sources:
        if src.derive is None or status not in src.status or not components:
            continue
        f = src.feature
        variable = f.variable or f.name
        if any(v == variable for v, _ in out):
            continue
        parts: dict[str, float] = {}
        for k, comp in enumerate(components):
            cc = _codings(comp.get("code"))
            for name, code in (("s", src.systolic), ("d", src.diastolic)):
                if code in cc:
                    value = _value(comp, f, f"{where}.component[{k}]")
                    if value is not None:
                        parts[name] = value
        if src.derive == "mean_arterial_pressure" and len(parts) == 2:
            out.append((variable, (parts["s"] + 2.0 * parts["d"]) / 3.0))
    return out


_DIMENSIONLESS = ("1", "")


def _value(holder: Mapping[str, Any], f: Feature, where: str) -> float | None:
    """Return the value of an Observation or component in ``f``'s unit (None: no value)."""
    if "valueQuantity" in holder:
        q = holder["valueQuantity"]
        at = f"{where}.valueQuantity"
        if not isinstance(q, Mapping):
            raise InputInvalid([(at, "expected a Quantity object")])
        value = _number(q.get("value"))
        if value is None or not math.isfinite(value):
            raise InputInvalid([(f"{at}.value", "expected a finite number")])
        code, text = q.get("code"), q.get("unit")
        if code is not None and not isinstance(code, str):
            raise InputInvalid([(f"{at}.code", "expected a UCUM code as text")])
        if text is not None and not isinstance(text, str):
            raise InputInvalid([(f"{at}.unit", "expected a unit as text")])
        unit = code if code else (ucum_code(text) if text else None)
        target = f.unit or ""
        if unit is None:
            if target in _DIMENSIONLESS or target.startswith("{"):
                return value
            raise InputInvalid(
                [(at, f"the quantity has no unit; {f.name} is recorded in {target!r}")]
            )
        if unit == target:
            return value
        try:
            return float(convert(value, unit, target, molar_mass=f.molar_mass))
        except UnitNotConvertible as exc:
            raise InputInvalid([(at, f"{f.name}: {exc}")]) from None
    if "valueInteger" in holder:
        value = _number(holder["valueInteger"])
        if value is None:
            raise InputInvalid([(f"{where}.valueInteger", "expected an integer")])
        return value
    if "valueBoolean" in holder:
        flag = holder["valueBoolean"]
        if not isinstance(flag, bool):
            raise InputInvalid([(f"{where}.valueBoolean", "expected true or false")])
        return 1.0 if flag else 0.0
    return None
