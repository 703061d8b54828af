"""Inpatient FHIR R4 Bundles as an EHR sends them, from clinosim (a third-party generator).

clinosim (PyPI, MIT; physiology-driven hospital simulator) writes one NDJSON file per
resource type, not Bundles. This module runs its CLI once into a cache folder keyed by the
generator's version and settings, then groups the output per inpatient Patient+Encounter
into one Bundle (type ``collection``) holding what an EHR sends with a request for that stay:

- the Patient and the inpatient Encounter;
- the patient's other Encounters that started before this one ended (the emergency visit it
  is ``partOf``, earlier admissions, outpatient visits);
- the Conditions the Encounter lists (``diagnosis``, ``reasonReference``) or that name it;
- the MedicationAdministrations (``context``), MedicationRequests and Procedures of the stay;
- the DeviceUseStatements of the patient whose timing overlaps the stay, with their Devices
  (a DeviceUseStatement carries no code of its own: the code is ``Device.type``);
- the Observations of the stay, of the emergency visit it is part of, and the patient's
  Observations that name no encounter (blood group, social history);
- everything else the generator emits that names the stay (DiagnosticReport, ServiceRequest,
  Composition, DocumentReference, CareTeam, ImagingStudy, ...) and the Specimens those
  reports cite: a reader must ignore them.

Nothing in the resources is changed: they are the generator's, as it wrote them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

CLINOSIM_VERSION = "0.6.5"
# The smallest catchment population that gives at least 60 inpatient encounters with seed 42
# in one simulated year (the generator admits about 7 per 100 people a year). The end date is
# fixed: the generator's default is today, which would change the output every day.
SETTINGS: dict[str, str] = {
    "--country": "US",
    "--population": "850",
    "--seed": "42",
    "--start": "2024-01-01",
    "--end": "2024-12-31",
}
BASE_URL = "https://ehr.clinosim.example/fhir"
CACHE_ENV = "CLINICAL_MLOPS_TEST_CACHE"
MRN_SYSTEM = "http://hospital.example.org/identifiers/mrn"
ICU_CLASS = "ACUTE"  # clinosim marks the ICU part of a stay in Encounter.classHistory


@dataclass(frozen=True)
class CorpusBundle:
    """One inpatient stay as a FHIR Bundle, with what a test needs to know about it."""

    patient_id: str
    encounter_id: str
    mrn: str
    admitted: datetime
    discharged: datetime | None
    icu_start: datetime | None
    bundle: dict[str, Any] = field(repr=False)

    @property
    def entries(self) -> int:
        return len(self.bundle["entry"])

    def resource_types(self) -> set[str]:
        return {e["resource"]["resourceType"] for e in self.bundle["entry"]}

    def as_of(self, day: date) -> CorpusBundle:
        """Return this stay with every date moved by whole days so the run ends on ``day``.

        The generator simulates a past year; a live service reads an encounter still in
        progress as ending at the request time, so a replay years later would see stays of
        years. Moving every date of the Bundle by the same number of days (as date-shifted
        research data are) keeps intervals, ages and times of day exactly.
        """
        days = (day - date.fromisoformat(SETTINGS["--end"])).days
        return replace(
            self,
            admitted=self.admitted + timedelta(days=days),
            discharged=self.discharged + timedelta(days=days) if self.discharged else None,
            icu_start=self.icu_start + timedelta(days=days) if self.icu_start else None,
            bundle=_shifted(self.bundle, days),
        )


_DATE_TEXT = re.compile(
    r"^(\d{4}-\d{2}-\d{2})((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)$"
)


def _shifted(value: Any, days: int) -> Any:
    """Return ``value`` with the date part of every FHIR date/dateTime moved by ``days``."""
    if isinstance(value, str):
        found = _DATE_TEXT.match(value)
        if not found:
            return value
        moved = date.fromisoformat(found.group(1)) + timedelta(days=days)
        return moved.isoformat() + found.group(2)
    if isinstance(value, dict):
        return {k: _shifted(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_shifted(v, days) for v in value]
    return value


def cache_root() -> Path:
    """Return the folder that keeps generator output between test sessions."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clinical-mlops" / "test-corpus"


def _installed_version() -> str:
    from importlib.metadata import version

    return version("clinosim")


def _key() -> str:
    parts = [f"clinosim-{CLINOSIM_VERSION}"] + [f"{k.lstrip('-')}-{v}" for k, v in SETTINGS.items()]
    return "_".join(parts)


def clinosim_output(root: Path | None = None) -> Path:
    """Return the folder of the generator's FHIR R4 NDJSON, generating it on first use.

    The run happens under an exclusive file lock, into a temporary folder renamed into place
    only when the generator exits 0, so parallel test workers and interrupted runs never see
    half an output.
    """
    installed = _installed_version()
    if installed != CLINOSIM_VERSION:  # figures in the corpus test are for this version
        raise RuntimeError(f"clinosim {CLINOSIM_VERSION} expected, {installed} is installed")
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / _key()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "fhir_r4" / "Encounter.ndjson").exists():
            work = Path(tempfile.mkdtemp(prefix=".run-", dir=root))
            try:
                run_clinosim(work / "out")
                shutil.rmtree(final, ignore_errors=True)
                final.mkdir()
                (work / "out" / "fhir_r4").rename(final / "fhir_r4")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return final / "fhir_r4"


def run_clinosim(out: Path) -> None:
    """Run ``clinosim simulate`` with SETTINGS into ``out`` (FHIR R4 NDJSON only)."""
    exe = Path(sys.executable).with_name("clinosim")
    args = [str(exe), "simulate", *(x for kv in SETTINGS.items() for x in kv)]
    args += ["--output", str(out), "--format", "fhir-r4"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"clinosim failed ({done.returncode}): {done.stderr[-2000:]}")


def _read(fhir_dir: Path, resource_type: str) -> list[dict[str, Any]]:
    path = fhir_dir / f"{resource_type}.ndjson"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _ref_id(ref: Any, resource_type: str) -> str | None:
    """Return the id in a ``{"reference": "Type/id"}`` of the given type, else None."""
    if isinstance(ref, dict):
        value = ref.get("reference")
        if isinstance(value, str) and value.startswith(resource_type + "/"):
            return value.split("/", 1)[1]
    return None


def _encounter_of(resource: dict[str, Any]) -> str | None:
    """Return the id of the Encounter a resource belongs to, wherever its type keeps it."""
    for key in ("encounter", "context"):
        found = _ref_id(resource.get(key), "Encounter")
        if found:
            return found
    context = resource.get("context")
    if isinstance(context, dict):  # DocumentReference.context.encounter is a list
        for ref in context.get("encounter", []) or []:
            found = _ref_id(ref, "Encounter")
            if found:
                return found
    return None


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from _references(v)
    elif isinstance(value, list):
        for v in value:
            yield from _references(v)


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    if len(text) == 10:  # a date: midnight UTC
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _icu_start(encounter: dict[str, Any]) -> datetime | None:
    for item in encounter.get("classHistory", []) or []:
        if item.get("class", {}).get("code") == ICU_CLASS:
            return _instant(item.get("period", {}).get("start"))
    return None


def _entry(resource: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
    }


class _Output:
    """The generator's NDJSON indexed by id, patient and encounter."""

    def __init__(self, fhir_dir: Path) -> None:
        names = sorted(p.name.removesuffix(".ndjson") for p in fhir_dir.glob("*.ndjson"))
        by_type = {name: _read(fhir_dir, name) for name in names}
        self.by_id = {
            (rtype, r["id"]): r for rtype, resources in by_type.items() for r in resources
        }
        self.encounters_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.of_encounter: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.unattached_obs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.device_uses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rtype, resources in by_type.items():
            for res in resources:
                pid = _ref_id(res.get("subject") or res.get("patient"), "Patient")
                eid = _encounter_of(res) if rtype != "Encounter" else None
                if rtype == "Encounter" and pid:
                    self.encounters_of[pid].append(res)
                elif rtype == "DeviceUseStatement" and pid:
                    self.device_uses[pid].append(res)
                elif eid:
                    self.of_encounter[eid].append(res)
                elif rtype == "Observation" and pid:
                    self.unattached_obs[pid].append(res)
        self.inpatient = sorted(
            (r for r in by_type.get("Encounter", []) if r.get("class", {}).get("code") == "IMP"),
            key=lambda r: r["id"],
        )

    def get(self, resource_type: str, ref: Any) -> dict[str, Any] | None:
        rid = _ref_id(ref, resource_type)
        return self.by_id.get((resource_type, rid)) if rid else None

    def stay(self, enc: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the resources an EHR sends for one inpatient stay, Patient first."""
        pid = _ref_id(enc.get("subject"), "Patient")
        admitted = _instant(enc["period"]["start"])
        assert pid is not None and admitted is not None
        horizon = _instant(enc["period"].get("end")) or _instant(SETTINGS["--end"] + "T23:59:59Z")
        assert horizon is not None
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        picked: list[dict[str, Any] | None] = [self.get("Patient", enc["subject"]), enc]
        for other in sorted(self.encounters_of[pid], key=lambda e: e["period"]["start"]):
            start = _instant(other["period"].get("start"))
            if other is not enc and start is not None and start < horizon:
                picked.append(other)
        refs = [d.get("condition") for d in enc.get("diagnosis", [])]
        picked += [self.get("Condition", ref) for ref in refs + enc.get("reasonReference", [])]
        picked += self.of_encounter[enc["id"]]
        parent = _ref_id(enc.get("partOf"), "Encounter")
        if parent:  # the emergency visit the stay is part of: its vital signs and labs
            picked += [r for r in self.of_encounter[parent] if r["resourceType"] == "Observation"]
        picked += self.unattached_obs[pid]
        first_day = admitted.replace(hour=0, minute=0, second=0, microsecond=0)
        for use in self.device_uses[pid]:
            start = _instant(use.get("timingPeriod", {}).get("start"))
            end = _instant(use.get("timingPeriod", {}).get("end"))
            if start is not None and start <= horizon and (end is None or end >= first_day):
                picked += [use, self.get("Device", use.get("device"))]
        for res in picked:
            if res is not None:
                chosen.setdefault((res["resourceType"], res["id"]), res)
        for res in list(chosen.values()):  # the specimens the reports and results cite
            for ref in _references(res):
                spec = self.get("Specimen", {"reference": ref})
                if spec is not None:
                    chosen.setdefault(("Specimen", spec["id"]), spec)
        return list(chosen.values())


def inpatient_bundles(fhir_dir: Path, *, base_url: str = BASE_URL) -> list[CorpusBundle]:
    """Return one Bundle per inpatient (``class`` IMP) Encounter of the generator's output."""
    output = _Output(fhir_dir)
    out = []
    for enc in output.inpatient:
        patient = output.get("Patient", enc.get("subject"))
        if patient is None:
            continue
        admitted = _instant(enc["period"]["start"])
        discharged = _instant(enc["period"].get("end"))
        assert admitted is not None
        mrn = next(
            (i["value"] for i in patient.get("identifier", []) if i.get("system") == MRN_SYSTEM),
            patient["id"],
        )
        bundle = {
            "resourceType": "Bundle",
            "id": f"stay-{enc['id']}",
            "type": "collection",
            "timestamp": _zulu(discharged or admitted),
            "entry": [_entry(r, base_url) for r in output.stay(enc)],
        }
        out.append(
            CorpusBundle(
                patient_id=patient["id"],
                encounter_id=enc["id"],
                mrn=mrn,
                admitted=admitted,
                discharged=discharged,
                icu_start=_icu_start(enc),
                bundle=bundle,
            )
        )
    return out


def _zulu(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def codings(concept: Any) -> Iterable[tuple[str, str]]:
    """Return the ``(system, code)`` pairs of a CodeableConcept (none for text-only ones)."""
    if isinstance(concept, dict):
        for c in concept.get("coding", []) or []:
            if c.get("system") and c.get("code"):
                yield str(c["system"]), str(c["code"])


@pytest.fixture(scope="session")
def clinosim_corpus() -> list[CorpusBundle]:
    """Every inpatient stay of the clinosim run, one Bundle each (generated once, cached)."""
    return inpatient_bundles(clinosim_output())
