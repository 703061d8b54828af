"""What a CDS Hooks call needs from the EHR: prefetch templates, and fetching what was not prefetched.

Templates (:func:`prefetch_templates`) use only the prefetch tokens CDS Hooks 2.0 defines
for ``patient-view`` (:data:`PATIENT_VIEW_TOKENS`) and ask only for the codes the task
declares, so the EHR sends nothing the model does not read. When the EHR sent no
prefetch for a key (absent; ``null`` means it has no data), the service reads it from
``fhirServer`` with the ``fhirAuthorization`` bearer token (:func:`fetch_missing`):
only servers on the operator's allow-list, a timeout per request, a cap on the bytes of
the whole call, and a bounded number of search pages. Any failure raises
:class:`~clinical_mlops.errors.FhirDataUnavailable` naming the server's answer, before
anything is scored or recorded; CDS Hooks answers it with 412 Precondition Failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from clinical_mlops.errors import FhirDataUnavailable, InputInvalid
from clinical_mlops.features.engine import load_feature_sql
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "PATIENT_VIEW_TOKENS",
    "FetchLimits",
    "allowed_server",
    "declared_codes",
    "fetch_missing",
    "prefetch_templates",
    "render",
    "tokens_of",
]

#: the prefetch tokens CDS Hooks 2.0 allows in a ``patient-view`` template: the hook's
#: context fields marked "Prefetch Token: Yes" and the four user identifiers
PATIENT_VIEW_TOKENS = frozenset(
    {
        "context.userId",
        "context.patientId",
        "context.encounterId",
        "userPractitionerId",
        "userPractitionerRoleId",
        "userPatientId",
        "userRelatedPersonId",
    }
)
_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on reading one hook call's data from the EHR's FHIR server."""

    #: seconds to connect, and between bytes of an answer
    timeout: float = 5.0
    #: bytes of all answers of one call together
    max_bytes: int = 10_000_000
    #: search pages followed per template (``link`` relation ``next``)
    max_pages: int = 20


#: what a ``patient=`` search of each resource type the spec may declare filters on
_CODE_PARAM = {
    "Observation": "code",
    "MedicationAdministration": "code",
    "MedicationRequest": "code",
    "Procedure": "code",
    # DeviceUseStatement has no code search parameter in R4: every one of the patient's
    "DeviceUseStatement": None,
}
#: prefetch key of each resource type (the discovery document's names)
_KEYS = {
    "Observation": "observations",
    "MedicationAdministration": "medicationAdministrations",
    "MedicationRequest": "medicationRequests",
    "Procedure": "procedures",
    "DeviceUseStatement": "deviceUseStatements",
}
#: what says what a resource of each type is when it only references it: (the searched
#: type's reference element, the referenced type). A search answers only the searched type
#: unless asked to ``_include`` these, and a DeviceUseStatement's code is its Device's type.
_REFERENCED = {
    "Encounter": ("location", "Location"),
    "MedicationAdministration": ("medication", "Medication"),
    "MedicationRequest": ("medication", "Medication"),
    "DeviceUseStatement": ("device", "Device"),
}
_REF = re.compile(r"(Location|Medication|Device)/[A-Za-z0-9\-.]{1,64}")
# the relations of the feature SQL that the patient's Conditions and Encounters fill
_READS = re.compile(r"\b(?:FROM|JOIN)\s+(diagnoses|admissions)\b", re.IGNORECASE)
# the cohort's principal diagnosis, which the reader takes from the encounter's Conditions
_PRINCIPAL = re.compile(r"\bdiagnosis_icd10\b", re.IGNORECASE)


def declared_codes(spec: TaskSpec, resource: str = "Observation") -> list[str]:
    """Return the ``system|code`` tokens of every ``resource`` code the task's features read.

    Only approved features count, and a panel's component codes (``derive``) are included:
    the EHR is asked for nothing the model does not read.
    """
    out: list[str] = []
    for f in spec.features:
        if f.status != "approved":
            continue
        for entry in f.fhir:
            if entry.resource == resource:
                out += [c for c in entry.all_codes if c not in out]
    return out


#: feature SQL file -> the source relations it reads (the shipped files do not change)
_READ_BY_SQL: dict[str, frozenset[str]] = {}


def _relations_read(spec: TaskSpec) -> set[str]:
    """Return which of ``diagnoses``/``admissions`` the task's feature SQL reads.

    A task that reads the cohort's principal diagnosis (``diagnosis_icd10``) reads
    ``diagnoses`` too: the encounter's Conditions are where an EHR records it.
    """
    if spec.table is not None or spec.feature_sql is None:
        return set()
    # read once per process: the hook builds its templates on every call
    if spec.feature_sql not in _READ_BY_SQL:
        text = load_feature_sql(spec).text
        reads = frozenset(m.lower() for m in _READS.findall(text))
        _READ_BY_SQL[spec.feature_sql] = reads | (
            {"diagnoses"} if _PRINCIPAL.search(text) else set()
        )
    return set(_READ_BY_SQL[spec.feature_sql])


def prefetch_templates(spec: TaskSpec) -> dict[str, str]:
    """Return the discovery document's ``prefetch``: what the task's features read, nothing more.

    Always the patient and the encounter in context; one ``patient=`` search per resource
    type the features declare, restricted to the declared codes; the patient's
    Conditions when the task's features read coded diagnoses (ICD-10 chapter, Charlson
    index), and the patient's Encounters (the current one, and prior admissions).
    """
    out = {
        "patient": "Patient/{{context.patientId}}",
        "encounter": "Encounter/{{context.encounterId}}",
    }
    for resource, key in _KEYS.items():
        codes = declared_codes(spec, resource)
        if not codes:
            continue
        search = f"{resource}?patient={{{{context.patientId}}}}"
        param = _CODE_PARAM[resource]
        out[key] = search + (f"&{param}=" + ",".join(codes) if param else "")
        if resource in _REFERENCED:
            out[key] += f"&_include={resource}:{_REFERENCED[resource][0]}"
    # ``code`` matches Observation.code only: a panel (e.g. blood pressure 85354-9) whose
    # components a feature derives from is found by its component codes
    components = [
        c
        for f in spec.features
        if f.status == "approved"
        for e in f.fhir
        if e.resource == "Observation" and e.derive is not None
        for c in (e.systolic, e.diastolic)
        if c is not None
    ]
    if components:
        out["observationPanels"] = (
            "Observation?patient={{context.patientId}}&component-code="
            + ",".join(dict.fromkeys(components))
        )
    reads = _relations_read(spec)
    if "diagnoses" in reads:
        out["conditions"] = "Condition?patient={{context.patientId}}"
    # every task places its window on the encounter; without encounterId in the context the
    # current one is found among the patient's (the latest current inpatient stay). Its
    # Locations say whether it is an ICU stay (the intended-use setting).
    out["encounters"] = "Encounter?patient={{context.patientId}}&_include=Encounter:location"
    return out


def tokens_of(template: str) -> set[str]:
    """Return the prefetch tokens a template uses (without the braces)."""
    return set(_TOKEN.findall(template))


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Return the template with its tokens filled from ``context`` (None when one is missing)."""
    out = template
    for token in tokens_of(template):
        value = (
            context.get(token.removeprefix("context.")) if token.startswith("context.") else None
        )
        if not isinstance(value, str) or not value or "/" in value or "?" in value:
            return None
        out = out.replace("{{" + token + "}}", value)
    return out


def allowed_server(url: Any, allowed: Sequence[str]) -> str:
    """Return ``url`` without a trailing slash when it is on the allow-list, else InputInvalid.

    Only ``http``/``https`` URLs that start with one of the configured bases are read:
    the service never follows a caller to a host the operator did not name.
    """
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise InputInvalid(
            [("fhirServer", "expected the http(s) base URL of the EHR's FHIR server")]
        )
    base = url.rstrip("/")
    parts = urlsplit(base)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InputInvalid([("fhirServer", "a base URL carries no credentials, query or fragment")])
    if not any(base == a.rstrip("/") or base.startswith(a.rstrip("/") + "/") for a in allowed):
        raise InputInvalid(
            [
                (
                    "fhirServer",
                    f"{base} is not a FHIR server this service reads from; the operator lists "
                    "them in CLINICAL_MLOPS_FHIR_SERVERS" + ("" if allowed else " (none is)"),
                )
            ]
        )
    return base


class _Reader:
    """One call's reads: shared client, byte budget, and errors in words."""

    def __init__(self, base: str, token: str, limits: FetchLimits):
        self.base, self.limits, self.used = base, limits, 0
        self.client = httpx.Client(
            timeout=limits.timeout,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        )

    def get(self, url: str, key: str) -> Any:
        where = f"{key}: GET {url.removeprefix(self.base + '/')}"
        try:
            with self.client.stream("GET", url) as r:
                if r.status_code in (401, 403):
                    raise FhirDataUnavailable(
                        f"{where}: the FHIR server refused the access token (HTTP "
                        f"{r.status_code}); send a valid fhirAuthorization or prefetch the data"
                    )
                if r.status_code == 404 and "?" not in url:
                    return None
                if r.status_code != 200:
                    raise FhirDataUnavailable(
                        f"{where}: the FHIR server answered HTTP {r.status_code}"
                    )
                body = bytearray()
                for chunk in r.iter_bytes():
                    self.used += len(chunk)
                    if self.used > self.limits.max_bytes:
                        raise FhirDataUnavailable(
                            f"{where}: the FHIR server's answers exceed {self.limits.max_bytes} "
                            "bytes for one call; nothing was scored"
                        )
                    body += chunk
        except httpx.TimeoutException:
            raise FhirDataUnavailable(
                f"{where}: the FHIR server did not answer within {self.limits.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise FhirDataUnavailable(
                f"{where}: the FHIR server cannot be reached ({type(exc).__name__})"
            ) from None
        try:
            return httpx.Response(200, content=bytes(body)).json()
        except ValueError:
            raise FhirDataUnavailable(f"{where}: the FHIR server's answer is not JSON") from None

    def search(self, first: str, key: str) -> dict[str, Any]:
        """Return one searchset with the entries of every page (at most ``max_pages``)."""
        entries: list[Any] = []
        url: str | None = first
        for _ in range(self.limits.max_pages):
            page = self.get(url, key) if url else None
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
                raise FhirDataUnavailable(f"{key}: the FHIR server's answer is not a Bundle")
            entries += [e for e in page.get("entry") or [] if isinstance(e, dict)]
            url = next(
                (
                    str(link.get("url"))
                    for link in page.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
            if url is None:
                return {"resourceType": "Bundle", "type": "searchset", "entry": entries}
            if not url.startswith(self.base + "/"):
                raise FhirDataUnavailable(
                    f"{key}: the next page is on another server ({urlsplit(url).netloc}); not followed"
                )
        raise FhirDataUnavailable(
            f"{key}: more than {self.limits.max_pages} pages of results; prefetch the data or "
            "narrow the observation window"
        )


def fetch_missing(
    templates: Mapping[str, str],
    prefetch: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    server: str | None,
    authorization: Mapping[str, Any] | None,
    allowed: Sequence[str],
    limits: FetchLimits | None = None,
) -> dict[str, Any]:
    """Return every template's data: the prefetched value, or what ``server`` answers.

    A key the EHR prefetched (a value, or ``null`` for "no data") is used as sent. A key
    it left out is read from ``server`` when the call names one with a bearer token
    (allow-listed, see :func:`allowed_server`); without one it stays missing and the
    reader decides whether the rest is enough. A template whose context token is absent
    (no ``encounterId``) is not read.
    """
    out: dict[str, Any] = {k: prefetch[k] for k in templates if k in prefetch}
    rendered = {k: render(t, context) for k, t in templates.items() if k not in prefetch}
    wanted = {k: url for k, url in rendered.items() if url is not None}
    if not wanted or server is None:
        return out
    base = allowed_server(server, allowed)
    token = authorization.get("access_token") if isinstance(authorization, Mapping) else None
    if not isinstance(token, str) or not token:
        raise InputInvalid(
            [("fhirAuthorization.access_token", "a bearer token is needed to read the FHIR server")]
        )
    reader = _Reader(base, token, limits or FetchLimits())
    try:
        for key, path in wanted.items():
            url = f"{base}/{path}"
            out[key] = reader.search(url, key) if "?" in path else reader.get(url, key)
        for key in wanted:
            if isinstance(out.get(key), dict):
                out[key] = _with_referenced(reader, base, out[key], key)
    finally:
        reader.client.close()
    return out


def _with_referenced(reader: _Reader, base: str, found: dict[str, Any], key: str) -> dict[str, Any]:
    """Return ``found`` with the resources its entries reference that it lacks, read one by one.

    A server may ignore ``_include`` (FHIR lets it). The Location is what says an encounter
    is an ICU stay, the Device what a DeviceUseStatement records, the Medication what was
    given: each is read rather than the stay taken for a ward one or the input for absent.
    """
    if found.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in found.get("entry") or [] if isinstance(e, dict)]
    else:
        resources = [found]
    have = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources if isinstance(r, Mapping)}
    wanted: list[str] = []
    for res in resources:
        if not isinstance(res, Mapping) or res.get("resourceType") not in _REFERENCED:
            continue
        element, target = _REFERENCED[res["resourceType"]]
        if element == "location":
            held = [x.get("location") for x in res.get("location") or [] if isinstance(x, Mapping)]
        else:
            held = [res.get("medicationReference" if element == "medication" else element)]
        for item in held:
            ref = item.get("reference") if isinstance(item, Mapping) else None
            if (
                isinstance(ref, str)
                and _REF.fullmatch(ref)
                and ref.startswith(f"{target}/")
                and ref not in have
                and ref not in wanted
            ):
                wanted.append(ref)
    extra = []
    for ref in wanted[: reader.limits.max_pages]:
        got = reader.get(f"{base}/{ref}", key)
        if isinstance(got, dict) and got.get("resourceType") == ref.split("/")[0]:
            extra.append({"resource": got, "search": {"mode": "include"}})
    if not extra:
        return found
    if found.get("resourceType") == "Bundle":
        return {**found, "entry": [*(found.get("entry") or []), *extra]}
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": found}, *extra]}
