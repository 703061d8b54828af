"""FHIR R4 Bundles rendered from raw-source stays, the way an EHR would send them.

``render_stay`` writes one stay's raw events and cohort facts (birth date, gender,
encounter period, diagnoses, prior encounters, discharge disposition) as a Bundle,
with the noise a real EHR sends: unrelated observations and resources, another
encounter's results, results outside the window, entered-in-error and cancelled
copies, blood-pressure panels with components, and other units.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from clinical_mlops.tasks.spec import TaskSpec

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
MRN_SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"
_DISPOSITION = {
    "HOME": ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "home"),
    "SNF": ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "snf"),
    "REHAB": ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "rehab"),
    "AGAINST_ADVICE": ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "aadvice"),
    "HOME_HEALTH": ("https://www.nubc.org/CodeSystem/PatDischargeStatus", "06"),
}
_OTHER_DISPOSITION = ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "oth")


def iso(t: Any) -> str:
    """Return a naive UTC timestamp as a FHIR instant."""
    return pd.Timestamp(t).to_pydatetime().isoformat(timespec="seconds") + "Z"


def birth_date(age: float, admitted: datetime) -> str:
    """Return a birth date giving ``age`` whole years at admission, its birthday months away."""
    target = (admitted + timedelta(days=182)).date()
    day = min(target.day, 28)
    return date(target.year - int(age) - 1, target.month, day).isoformat()


class _Writer:
    def __init__(self, kind: str, rng: np.random.Generator):
        self.kind = kind
        self.rng = rng
        self.entries: list[dict[str, Any]] = []
        self.n = 0

    def ref(self, rtype: str, rid: str) -> str:
        if self.kind == "transaction":
            return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{rtype}/{rid}')}"
        return f"{rtype}/{rid}"

    def add(self, res: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"resource": res}
        rtype, rid = res["resourceType"], res["id"]
        if self.kind == "transaction":
            entry["fullUrl"] = self.ref(rtype, rid)
            entry["request"] = {"method": "POST", "url": rtype}
        else:
            entry["fullUrl"] = f"https://ehr.example.org/fhir/{rtype}/{rid}"
        if self.kind == "searchset":
            entry["search"] = {"mode": "match"}
        self.entries.append(entry)
        return res

    def new_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


def _quantity(value: float, unit: str, *, text: str | None = None) -> dict[str, Any]:
    if text is not None:
        return {"value": value, "unit": text}
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def render_stay(
    spec: TaskSpec,
    stay: pd.Series,
    events: pd.DataFrame,
    *,
    diagnoses: Sequence[str] = (),
    prior: Sequence[tuple[int, datetime, datetime]] = (),
    other_events: pd.DataFrame | None = None,
    rng: np.random.Generator,
    kind: str = "collection",
) -> tuple[dict[str, Any], datetime, str]:
    """Return (Bundle, a request time after everything in it, the encounter id)."""
    w = _Writer(kind, rng)
    icu = spec.anchor == "icu_admission"
    start = pd.Timestamp(stay["intime"] if icu else stay["admittime"]).to_pydatetime()
    end = pd.Timestamp(stay["outtime"] if icu else stay["dischtime"]).to_pydatetime()
    sid = int(stay["subject_id"])
    pid, eid = f"p{sid}", f"e{int(stay['stay_id'])}"
    patient = w.add(
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": MRN_SYSTEM, "value": f"MRN-{sid}"}],
            "gender": {"F": "female", "M": "male"}.get(str(stay["sex"]), "unknown"),
            "birthDate": birth_date(
                float(stay["age"]), pd.Timestamp(stay["admittime"]).to_pydatetime()
            ),
        }
    )
    subject = {"reference": w.ref("Patient", patient["id"])}
    w.add({"resourceType": "Organization", "id": "org-1", "name": "General Hospital"})
    w.add({"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "Osler"}]})
    w.add(
        {
            "resourceType": "Location",
            "id": "loc-icu",
            "name": "Medical ICU",
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                            "code": "ICU",
                        }
                    ]
                }
            ],
        }
    )
    conditions: list[tuple[str, str]] = []
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": subject,
        "period": {"start": iso(start), "end": iso(end)},
        "serviceProvider": {"reference": w.ref("Organization", "org-1")},
    }
    if icu:
        encounter["location"] = [{"location": {"reference": w.ref("Location", "loc-icu")}}]
    disposition = stay.get("discharge_location")
    if isinstance(disposition, str):
        system, code = _DISPOSITION.get(disposition, _OTHER_DISPOSITION)
        encounter["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": system, "code": code}]}
        }
    codes = list(diagnoses)
    principal = stay.get("diagnosis_icd10")
    if isinstance(principal, str) and principal not in codes:
        codes.insert(0, principal)
    order = list(range(len(codes)))
    rng.shuffle(order)  # bundle order says nothing; rank 1 names the principal diagnosis
    for k in order:
        cid = w.new_id("cond")
        conditions.append((cid, codes[k]))
        w.add(
            {
                "resourceType": "Condition",
                "id": cid,
                "subject": subject,
                "encounter": {"reference": w.ref("Encounter", eid)},
                "code": {"coding": [{"system": ICD10, "code": codes[k]}]},
            }
        )
    encounter["diagnosis"] = [
        {"condition": {"reference": w.ref("Condition", cid)}, "rank": 1 + codes.index(code)}
        for cid, code in conditions
    ]
    # A problem-list entry in SNOMED only, and a Condition of another encounter: not this stay's.
    w.add(
        {
            "resourceType": "Condition",
            "id": w.new_id("cond"),
            "subject": subject,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        }
    )
    w.add(encounter)
    other_id = "e-other"
    first = start - timedelta(days=400)
    w.add(
        {
            "resourceType": "Encounter",
            "id": other_id,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": subject,
            "period": {"start": iso(first), "end": iso(first + timedelta(hours=5))},
        }
    )
    for hadm, admitted, discharged in prior:
        w.add(
            {
                "resourceType": "Encounter",
                "id": f"e{hadm}",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "subject": subject,
                "period": {"start": iso(admitted), "end": iso(discharged)},
            }
        )
    enc_ref = {"reference": w.ref("Encounter", eid)}
    latest = end
    for row in events.itertuples(index=False):
        t = pd.Timestamp(row.charttime).to_pydatetime()
        latest = max(latest, t)
        _event(w, spec, str(row.variable), float(row.value), t, subject, enc_ref, rng)
    if other_events is not None:
        for row in other_events.itertuples(index=False):
            t = pd.Timestamp(row.charttime).to_pydatetime()
            latest = max(latest, t)
            _event(
                w,
                spec,
                str(row.variable),
                float(row.value),
                t,
                subject,
                {"reference": w.ref("Encounter", other_id)},
                rng,
                own=False,
            )
    _noise(w, spec, events, subject, enc_ref, start, rng)
    order = list(range(len(w.entries)))
    rng.shuffle(order)
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [w.entries[k] for k in order],
    }
    return bundle, latest + timedelta(hours=1), eid


def _observation(
    w: _Writer,
    code: str,
    when: datetime,
    subject: dict[str, Any],
    enc: dict[str, Any],
    **value: Any,
) -> dict[str, Any]:
    system, _, c = code.partition("|")
    status = str(w.rng.choice(["final", "final", "amended", "corrected"]))
    return {
        "resourceType": "Observation",
        "id": w.new_id("obs"),
        "status": status,
        "code": {"coding": [{"system": system, "code": c}]},
        "subject": subject,
        "encounter": enc,
        "effectiveDateTime": iso(when),
        **value,
    }


def _event(
    w: _Writer,
    spec: TaskSpec,
    variable: str,
    value: float,
    when: datetime,
    subject: dict[str, Any],
    enc: dict[str, Any],
    rng: np.random.Generator,
    *,
    own: bool = True,
) -> None:
    feats = [f for f in spec.event_features if (f.variable or f.name) == variable]
    if not feats:
        return
    f = feats[0]
    entries = [e for e in f.fhir if e.derive is None and e.resource == "Observation"]
    code = str(rng.choice([c for e in entries for c in e.codes]))
    r = rng.random()
    if f.kind == "flag":
        # A DeviceUseStatement names no encounter (R4): only the stay's own use is one.
        others = [
            e
            for e in f.fhir
            if e.resource != "Observation" and (own or e.resource != "DeviceUseStatement")
        ]
        if value == 1 and others and r < 0.6:
            src = others[int(rng.integers(len(others)))]
            system, _, c = str(rng.choice(list(src.codes))).partition("|")
            concept = {"coding": [{"system": system, "code": c}]}
            res: dict[str, Any] = {"resourceType": src.resource, "id": w.new_id("act")}
            if src.resource == "MedicationAdministration":
                res |= {
                    "status": "completed",
                    "medicationCodeableConcept": concept,
                    "subject": subject,
                    "context": enc,
                    "effectiveDateTime": iso(when),
                }
            elif src.resource == "Procedure":
                res |= {
                    "status": "in-progress",
                    "code": concept,
                    "subject": subject,
                    "encounter": enc,
                    "performedPeriod": {"start": iso(when)},
                }
            elif src.resource == "DeviceUseStatement":
                device = w.add({"resourceType": "Device", "id": w.new_id("dev"), "type": concept})
                res |= {
                    "status": "active",
                    "subject": subject,
                    "device": {"reference": w.ref("Device", device["id"])},
                    "timingDateTime": iso(when),
                }
            else:
                res |= {
                    "status": "active",
                    "medicationCodeableConcept": concept,
                    "subject": subject,
                    "encounter": enc,
                    "authoredOn": iso(when),
                }
            w.add(res)
            return
        w.add(_observation(w, code, when, subject, enc, valueBoolean=bool(value)))
        return
    unit = f.unit or ""
    if variable == "map" and r < 0.4:
        derive = next(e for e in f.fhir if e.derive is not None)
        k = float(rng.integers(10, 30))
        comps = [
            (derive.systolic, value + 2 * k),
            (derive.diastolic, value - k),
        ]
        w.add(_panel(w, comps, when, subject, enc))
        return
    if variable == "sbp" and r < 0.5:
        comps = [(f"{LOINC}|8480-6", value), (f"{LOINC}|8462-4", value - 40)]
        w.add(_panel(w, comps, when, subject, enc))
        return
    from clinical_mlops.units import convert  # the units module came with the FHIR reader

    quantity = _quantity(value, unit)
    if variable == "creatinine" and r < 0.4:
        quantity = _quantity(convert(value, unit, "umol/L", molar_mass=f.molar_mass), "umol/L")
    elif variable == "temperature" and r < 0.4:
        quantity = _quantity(convert(value, unit, "[degF]"), "[degF]")
    elif variable == "heart_rate" and r < 0.3:
        quantity = _quantity(value, unit, text="beats/min")
    w.add(_observation(w, code, when, subject, enc, valueQuantity=quantity))


def _panel(
    w: _Writer,
    comps: list[tuple[str | None, float]],
    when: datetime,
    subject: dict[str, Any],
    enc: dict[str, Any],
) -> dict[str, Any]:
    res = _observation(w, f"{LOINC}|85354-9", when, subject, enc)
    res["component"] = [
        {
            "code": {
                "coding": [{"system": str(c).partition("|")[0], "code": str(c).partition("|")[2]}]
            },
            "valueQuantity": _quantity(v, "mm[Hg]"),
        }
        for c, v in comps
    ]
    return res


def _noise(
    w: _Writer,
    spec: TaskSpec,
    events: pd.DataFrame,
    subject: dict[str, Any],
    enc: dict[str, Any],
    start: datetime,
    rng: np.random.Generator,
) -> None:
    """Unrelated results, entered-in-error and cancelled copies, results before the window."""
    times = [pd.Timestamp(t).to_pydatetime() for t in events["charttime"]] or [start]
    for code, unit, value in (
        ("29463-7", "kg", 81.5),
        ("8302-2", "cm", 172.0),
        ("39156-5", "kg/m2", 27.5),
        ("2345-7", "mg/dL", 104.0),
    ):
        when = times[int(rng.integers(len(times)))]
        w.add(
            _observation(
                w, f"{LOINC}|{code}", when, subject, enc, valueQuantity=_quantity(value, unit)
            )
        )
    numeric = [f for f in spec.event_features if f.kind == "numeric" and f.fhir]
    for status in ("entered-in-error", "cancelled", "preliminary"):
        f = numeric[int(rng.integers(len(numeric)))]
        code = next(c for e in f.fhir for c in e.codes)
        high = (f.valid_range or (0.0, 1.0))[1]
        res = _observation(
            w,
            code,
            times[int(rng.integers(len(times)))],
            subject,
            enc,
            valueQuantity=_quantity(high, f.unit or ""),
        )
        res["status"] = status
        w.add(res)
    w.add(
        {
            "resourceType": "DiagnosticReport",
            "id": w.new_id("rep"),
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "24323-8"}]},
            "subject": subject,
        }
    )


#: an ICD-10 code of each diagnosis category the built-in tasks use
CATEGORY_CODES = {
    "infectious": "A41.9",
    "neoplasm": "C34.90",
    "blood": "D64.9",
    "endocrine": "E11.9",
    "mental": "F10.239",
    "nervous": "G40.909",
    "circulatory": "I21.4",
    "respiratory": "J18.9",
    "digestive": "K85.90",
    "genitourinary": "N17.9",
    "injury": "S06.0X0A",
    "symptoms": "R57.0",
    "other": "Z99.89",
}


def ehr_bundle(
    spec: TaskSpec, row: dict[str, Any], subject: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Return an ICU Bundle whose features are ``row`` (a feature vector), read at ``now``.

    The Patient's id is ``subject``; its first entry is a numeric Observation.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    admitted = now - timedelta(hours=30)
    sex = row.get("sex")
    stay = pd.Series(
        {
            "stay_id": 1,
            "subject_id": 0,
            "hadm_id": 1,
            "age": float(row.get("age") or 50.0),
            "sex": sex,
            "diagnosis_icd10": CATEGORY_CODES.get(str(row.get("diagnosis_category"))),
            "admittime": admitted,
            "intime": admitted,
            "outtime": now - timedelta(hours=1),
            "dischtime": now - timedelta(hours=1),
        }
    )
    events = pd.DataFrame(
        [
            {"charttime": admitted + timedelta(hours=2), "variable": f.variable, "value": v}
            for f in spec.event_features
            if (v := row.get(f.name)) is not None
        ],
        columns=["charttime", "variable", "value"],
    )
    bundle, _, _ = render_stay(spec, stay, events, rng=np.random.default_rng(0))
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            res["id"] = subject
            entry["fullUrl"] = f"https://ehr.example.org/fhir/Patient/{subject}"
        elif isinstance(res.get("subject"), dict):
            res["subject"] = {"reference": f"Patient/{subject}"}
    first = next(
        i
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation"
        and "valueQuantity" in e["resource"]
        and e["resource"]["status"] in ("final", "amended", "corrected")
        and e["resource"]["code"]["coding"][0]["code"] == "8867-4"
    )
    bundle["entry"].insert(0, bundle["entry"].pop(first))
    return bundle


def ehr_prefetch(
    spec: TaskSpec, row: dict[str, Any], subject: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Return a CDS Hooks prefetch of :func:`ehr_bundle`: the patient, and searchsets by type.

    The Encounters' Locations come with the encounters, and the Devices with the device use
    statements, as ``_include`` answers.
    """
    bundle = ehr_bundle(spec, row, subject, now=now)
    out: dict[str, Any] = {}
    keys = {
        "Observation": "observations",
        "MedicationAdministration": "medicationAdministrations",
        "MedicationRequest": "medicationRequests",
        "Procedure": "procedures",
        "DeviceUseStatement": "deviceUseStatements",
        "Condition": "conditions",
        "Encounter": "encounters",
        "Location": "encounters",
        "Device": "deviceUseStatements",
    }
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            out["patient"] = res
        elif res["resourceType"] in keys:
            key = keys[res["resourceType"]]
            out.setdefault(key, {"resourceType": "Bundle", "type": "searchset", "entry": []})
            mode = "include" if res["resourceType"] in ("Location", "Device") else "match"
            out[key]["entry"].append(entry | {"search": {"mode": mode}})
    return out


def server_resources(bundle: dict[str, Any], patient: str) -> list[dict[str, Any]]:
    """Return the Bundle's resources with ids (and references) unique to ``patient``.

    For loading several patients into one FHIR server: the Patient's id is ``patient``,
    every other id is prefixed with it.
    """
    ids: dict[str, str] = {}
    out = []
    for entry in bundle["entry"]:
        res = copy.deepcopy(entry["resource"])
        rtype, rid = res["resourceType"], res["id"]
        res["id"] = patient if rtype == "Patient" else f"{patient}-{rid}"
        ids[f"{rtype}/{rid}"] = f"{rtype}/{res['id']}"
        out.append(res)

    def fix(value: Any) -> None:
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str):
                value["reference"] = ids.get(ref, ref)
            for v in value.values():
                fix(v)
        elif isinstance(value, list):
            for v in value:
                fix(v)

    for res in out:
        fix(res)
    return out
