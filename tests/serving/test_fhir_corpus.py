"""Realistic inpatient Bundles from a third-party generator, posted to a live service.

Every inpatient stay clinosim simulates (tests/fhir_corpus.py: 71 stays of 48 patients,
each a Patient, its Encounters, Conditions, medications, procedures, devices, a few hundred
Observations and the reports, orders, notes and specimens an EHR keeps beside them) is
posted as one FHIR Bundle to ``POST /v1/fhir/predict`` of ``clinical-mlops serve`` (a real
uvicorn process on loopback), once with a served ICU-mortality release and once with a
served readmission release. Each must be answered with a RiskAssessment or an audited
refusal saying why no risk is given (too few inputs, or a patient outside the model's
intended use): never a 5xx, never a Bundle refused for what an EHR normally sends. The
ledger record of every answer holds the task's declared inputs only: no resource content,
no identifier, no code the task does not declare.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clinical_mlops.application.training import train_model
from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.data.sources import ward_source
from clinical_mlops.data.ward import WardConfig
from clinical_mlops.features.online import features_for_one
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.serving.fhir_input import read_bundle
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.workspace import Workspace
from fhir_corpus import MRN_SYSTEM, CorpusBundle, clinosim_corpus, codings  # noqa: F401
from registry_helpers import FAST

pytestmark = pytest.mark.slow

ICU, WARD = "icu_mortality_48h", "readmission_30d"
#: the audited answers that give no risk, and why each may be right for a real stay
REFUSALS = {
    "insufficient_data": "more of the task's inputs are missing than it was validated with",
    "outside_intended_use": "the stay is outside the task's setting or age range",
}
#: ledger entry types a single scoring request may leave
ANSWER_TYPES = ("inference", "inference_refused", "fallback_served")


def _bench_module() -> Any:
    path = Path(__file__).resolve().parents[2] / "bench" / "api_fuzz.py"
    spec = importlib.util.spec_from_file_location("api_fuzz", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("api_fuzz", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readmission_served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a workspace with an approved readmission release (synthetic ward source)."""
    ws = Workspace.open(tmp_path_factory.mktemp("readmission-served"))
    source = ward_source(ws, WardConfig(seed=11, scale=0.2))
    snap = build_snapshot(ws, load_task(WARD), source)
    result = train_model(ws, snap, config=FAST)
    govern_demo_release(ws, model_version=result.model_version)
    return ws.root


def _with_corpus_consent(root: Path, into: Path, corpus: list[CorpusBundle]) -> Path:
    """Copy a served workspace and register every corpus patient, with direct-care consent."""
    shutil.copytree(root, into)
    ws = Workspace.open(into)
    with Ledger.open(ws) as led:
        for mrn in sorted({b.mrn for b in corpus}):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(mrn),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
    return into


def _risk_assessment(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Return the RiskAssessment of an answer (alone, or in a Bundle with its Provenance)."""
    if doc.get("resourceType") == "RiskAssessment":
        return doc
    if doc.get("resourceType") == "Bundle":
        for entry in doc.get("entry", []):
            if entry.get("resource", {}).get("resourceType") == "RiskAssessment":
                return dict(entry["resource"])
    return None


def _post_corpus(
    root: Path, folder: Path, corpus: list[CorpusBundle], task: str
) -> list[tuple[CorpusBundle, int, dict[str, Any]]]:
    """Post every Bundle, as the EHR interface (system API key), to a live service."""
    bench = _bench_module()
    answers = []
    env_key = "CLINICAL_MLOPS_FHIR_IDENTIFIER_SYSTEM"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(env_key, MRN_SYSTEM)  # the service identifies patients by their MRN
        with (
            bench.live_service(root, folder) as svc,
            httpx.Client(base_url=svc.url, timeout=300) as client,
        ):
            # the run replayed as if it ended yesterday: stays in progress then are in
            # progress now, and nothing lies in the future
            day = datetime.now(UTC).date() - timedelta(days=1)
            for k, b in enumerate(one.as_of(day) for one in corpus):
                body = {
                    "purpose": "direct_care",
                    "bundle": b.bundle,
                    "request_id": f"corpus-{task}-{k}",
                }
                r = client.post("/v1/fhir/predict", json=body, headers={"X-API-Key": svc.api_key})
                try:
                    doc = r.json()
                except ValueError:  # a server error may have no JSON body
                    doc = {"text": r.text[:300]}
                answers.append((b, r.status_code, doc))
    return answers


@pytest.fixture(scope="module")
def answered(
    served: dict[str, Any],
    readmission_served: Path,
    clinosim_corpus: list[CorpusBundle],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """Each task's live service, the corpus posted to it, and its workspace afterwards."""
    out = {}
    for task, root in ((ICU, served["ws"].root), (WARD, readmission_served)):
        folder = tmp_path_factory.mktemp(f"corpus-{task}")
        ws_root = _with_corpus_consent(root, folder / "ws", clinosim_corpus)
        answers = _post_corpus(ws_root, folder, clinosim_corpus, task)
        out[task] = {"answers": answers, "ws": Workspace.open(ws_root)}
    return out


def test_the_corpus_is_realistic(clinosim_corpus: list[CorpusBundle]) -> None:  # noqa: F811
    """At least 50 inpatient stays, each the way an EHR holds it, with what a reader ignores."""
    assert len(clinosim_corpus) >= 50
    assert len({b.patient_id for b in clinosim_corpus}) >= 30
    for b in clinosim_corpus:
        kinds = Counter(e["resource"]["resourceType"] for e in b.bundle["entry"])
        assert kinds["Patient"] == 1 and kinds["Encounter"] >= 1
        assert kinds["Observation"] >= 20, b.encounter_id
        # the EHR's other records of the stay, none of them an input of any task
        assert {"ServiceRequest", "DiagnosticReport"} <= set(kinds), b.encounter_id
        patient = f"Patient/{b.patient_id}"
        for e in b.bundle["entry"]:
            subject = e["resource"].get("subject") or e["resource"].get("patient")
            if isinstance(subject, dict) and "reference" in subject:
                assert subject["reference"] == patient
    # what the generator emits that a task spec declares: the BP panel (components only),
    # medications, procedures and device uses of the stays
    kinds = Counter(
        e["resource"]["resourceType"] for b in clinosim_corpus for e in b.bundle["entry"]
    )
    for rtype in ("MedicationAdministration", "MedicationRequest", "Procedure", "Condition"):
        assert kinds[rtype] > 0, rtype
    assert any("DeviceUseStatement" in b.resource_types() for b in clinosim_corpus)


def _declared_codes(spec: TaskSpec) -> set[str]:
    out = set()
    for f in spec.features:
        for d in f.fhir:
            for pair in (*d.codes, d.systolic, d.diastolic):
                if pair:
                    out.add(str(pair).partition("|")[2])
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _private(b: CorpusBundle, spec: TaskSpec, basis: set[str]) -> set[str]:
    """Return text of the Bundle that must never reach the ledger record of this stay.

    The patient's identifiers, name, birth date, address and telecom; the EHR's ids of the
    Encounters and of every resource not used as an input; every code the task does not
    declare (as the EHR sends it: the bare code, as strings in the record would hold it).
    """
    declared = _declared_codes(spec)
    out: set[str] = {b.mrn, b.patient_id, b.encounter_id}
    for e in b.bundle["entry"]:
        res = e["resource"]
        rtype = res["resourceType"]
        if rtype == "Patient":
            for name in res.get("name", []):
                out.update(name.get("given", []))
                if name.get("family"):
                    out.add(name["family"])
            out.update(t["value"] for t in res.get("telecom", []) if t.get("value"))
            out.update(a["line"][0] for a in res.get("address", []) if a.get("line"))
            out.add(res["birthDate"])
        elif f"{rtype}/{res['id']}" not in basis:
            out.add(res["id"])
        for field in ("code", "medicationCodeableConcept", "type"):
            concept = res.get(field)
            for concept_one in concept if isinstance(concept, list) else [concept]:
                for _, code in codings(concept_one):
                    if code not in declared and len(code) >= 4:
                        out.add(code)
    return out


def _leaks(record: Any, private: set[str]) -> set[str]:
    """Return the private tokens found in the record's texts, as whole tokens.

    Whole tokens only: an RxNorm code may occur by chance inside a SHA-256 hex digest, a
    short given name inside an English word.
    """
    texts = list(_strings(record))
    found = set()
    for token in private:
        pattern = re.compile(rf"(?<![0-9A-Za-z]){re.escape(token)}(?![0-9A-Za-z])")
        if any(pattern.search(t) for t in texts):
            found.add(token)
    return found


@pytest.mark.parametrize("task", [ICU, WARD])
def test_every_bundle_is_answered_and_audited(
    answered: dict[str, dict[str, Any]], task: str
) -> None:
    answers = answered[task]["answers"]
    spec = load_task(task)
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    wrong: list[str] = []
    for b, status, doc in answers:
        where = f"{task} {b.encounter_id}"
        if status >= 500:
            wrong.append(f"{where}: {status} {json.dumps(doc)[:300]}")
            continue
        if status == 200:
            ra = _risk_assessment(doc)
            if ra is None or not ra.get("prediction"):
                wrong.append(f"{where}: 200 without a RiskAssessment: {json.dumps(doc)[:300]}")
                continue
            outcomes["risk_assessment"] += 1
            continue
        detail = doc.get("detail")
        code = detail.get("code") if isinstance(detail, dict) else None
        message = str(detail.get("message")) if isinstance(detail, dict) else ""
        if code == "outside_intended_use" and not ("setting" in message or "age" in message):
            wrong.append(f"{where}: outside the intended use for no stated reason: {message}")
            continue
        if status == 422 and code in REFUSALS and detail.get("audit_seq") is not None:
            outcomes[str(code)] += 1
            reasons[f"{code}: {message[:60]}"] += 1
            continue
        # a realistic Bundle refused: the reader broke on something EHRs send
        wrong.append(f"{where}: {status} {json.dumps(detail)[:600]}")
    print(f"\n{task}: {len(answers)} bundles -> {dict(outcomes)}; refusals: {dict(reasons)}")
    assert not wrong, "\n".join(wrong)
    assert len(answers) >= 50 and sum(outcomes.values()) == len(answers)
    if spec.cohort.setting == "ward":  # the corpus is of ward stays: most must get a risk
        assert outcomes["risk_assessment"] > len(answers) // 2, outcomes


@pytest.mark.parametrize("task", [ICU, WARD])
def test_the_ledger_holds_declared_inputs_only(
    answered: dict[str, dict[str, Any]], task: str
) -> None:
    answers = answered[task]["answers"]
    spec = load_task(task)
    names = set(spec.feature_names)
    by_request = {f"corpus-{task}-{k}": b for k, (b, _, _) in enumerate(answers)}
    seen: set[str] = set()
    completeness: list[float] = []
    problems: list[str] = []
    with Ledger.open(answered[task]["ws"]) as led:
        for view in led.read_from(0, types=ANSWER_TYPES):
            payload = view.payload or {}
            b = by_request.get(str(payload.get("request_id")))
            if b is None:
                continue
            seen.add(b.encounter_id)
            record = view.to_json()
            inputs = payload.get("inputs", {})
            if set(inputs) - names:
                problems.append(f"{b.encounter_id}: undeclared inputs {set(inputs) - names}")
            for item in payload.get("explanation", []) or []:
                if isinstance(item, dict) and item.get("feature") not in names:
                    problems.append(f"{b.encounter_id}: explanation of {item.get('feature')}")
            basis = set(payload.get("basis", []))
            in_bundle = {
                f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b.bundle["entry"]
            }
            if basis - in_bundle:
                problems.append(f"{b.encounter_id}: basis outside the Bundle {basis - in_bundle}")
            leaked = _leaks(record, _private(b, spec, basis))
            if leaked:
                problems.append(f"{b.encounter_id}: {sorted(leaked)[:5]}")
            if "completeness" in payload:
                completeness.append(float(payload["completeness"]))
    assert not problems, "\n".join(problems)
    assert seen == {b.encounter_id for b, _, _ in answers}  # every answer is in the ledger
    if completeness:
        completeness.sort()
        print(
            f"\n{task}: completeness of {len(completeness)} scored stays: min "
            f"{completeness[0]:.2f}, median {completeness[len(completeness) // 2]:.2f}, "
            f"max {completeness[-1]:.2f}"
        )


@pytest.mark.parametrize("task", [ICU, WARD])
def test_which_inputs_the_corpus_carries(
    clinosim_corpus: list[CorpusBundle],  # noqa: F811
    task: str,
) -> None:
    """Each task's inputs as read from the corpus: every Bundle is read, most inputs found."""
    spec = load_task(task)
    present: Counter[str] = Counter()
    now = datetime.now(UTC)
    for b in (one.as_of(now.date() - timedelta(days=1)) for one in clinosim_corpus):
        # the stay is found without being named, as when an EHR posts its Bundle
        reading = read_bundle(b.bundle, spec, now=now, identifier_system=MRN_SYSTEM)
        assert reading.subject_id == b.mrn and reading.encounter_id == b.encounter_id
        values = features_for_one(spec, reading.unit)
        assert set(values) <= set(spec.feature_names)
        present.update(k for k, v in values.items() if v is not None)
    n = len(clinosim_corpus)
    table = ", ".join(f"{k} {present[k]}/{n}" for k in spec.feature_names)
    print(f"\n{task}: inputs present: {table}")
    # demographics come from every Patient, vital signs from nearly every stay
    assert present["age"] == n and present["sex"] == n
    # every stay's principal diagnosis, linked from its Encounter when not from the Condition
    assert present["diagnosis_category"] == n
    assert present["heart_rate"] >= n * 0.8 and present["resp_rate"] >= n * 0.8
