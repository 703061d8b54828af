"""FHIR outputs carry provenance: R4-valid RiskAssessment + Provenance, AIAST, probability scale.

``POST /v1/fhir/predict`` answers a scored request with a collection Bundle: the
RiskAssessment (the task's own outcome coding, ``probabilityDecimal`` on the R4 percentage
scale unless the deployment chose 0-1) and the Provenance naming the release (a contained AI
Device with the model version and bundle SHA-256) and the audit record (ledger seq and entry
hash). Both carry the AI Transparency security label. ``clinical-mlops audit provenance``
checks such a Provenance against the ledger: 0 when it agrees, 1 naming what differs, 2 when
the file is not a Provenance.
"""

from __future__ import annotations

import copy
import json
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import clinical_mlops
from clinical_mlops.cli import app as cli_app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.http.app import create_app
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.tasks import load_task
from serving.fhir_bundles import ehr_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient

AIAST = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")
ICU = load_task("icu_mortality_48h")
# The documented setting of the probabilityDecimal scale (docs/SERVING.md).
PROBABILITY_SCALE_ENV = "CLINICAL_MLOPS_FHIR_PROBABILITY_SCALE"


def _client(served: dict[str, Any]) -> tuple[TestClient, dict[str, str], Predictor]:
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth, base_url="https://cds.example"))
    token = {"Authorization": "Bearer " + auth.issue(subject="dr.t", roles=["clinician"])}
    return client, token, predictor


def _ask(client: TestClient, token: dict[str, str], served: dict[str, Any], i: int) -> Any:
    body = {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "bundle": ehr_bundle(ICU, served["rows"][i], f"MRN-{i}"),
    }
    return client.post("/v1/fhir/predict", headers=token, json=body)


@pytest.fixture(scope="module")
def answered(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One scored FHIR answer, with the ledger record and the release it names."""
    client, token, predictor = _client(served)
    try:
        r = _ask(client, token, served, 30)
        assert r.status_code == 200, r.text
        doc = r.json()
        seq = int(doc["entry"][0]["resource"]["identifier"][0]["value"])
        entry = predictor.ledger.entry(seq)
        payload = predictor.ledger.read(seq).payload
    finally:
        predictor.close()
    with Registry.open(served["ws"]) as reg:
        release = reg.get(payload["release"])
    folder = tmp_path_factory.mktemp("prov")
    return {
        "doc": doc,
        "seq": seq,
        "entry": entry,
        "payload": payload,
        "release": release,
        "folder": folder,
    }


def _security(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource.get("meta", {}).get("security", [])}


def test_the_fhir_answer_is_an_r4_bundle_of_risk_assessment_and_provenance(
    answered: dict[str, Any],
) -> None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.provenance import Provenance
    from fhir.resources.R4B.riskassessment import RiskAssessment

    doc, seq, payload = answered["doc"], answered["seq"], answered["payload"]
    Bundle.model_validate(doc)
    assert doc["type"] == "collection" and len(doc["entry"]) == 2
    ra_doc, prov_doc = (e["resource"] for e in doc["entry"])
    ra = RiskAssessment.model_validate(ra_doc)
    prov = Provenance.model_validate(prov_doc)

    # the task's own outcome, on the R4 percentage scale (invariant ras-2: at most 100)
    pred = ra.prediction[0]
    spec_words = yaml.safe_load(
        (Path(clinical_mlops.__file__).parent / "tasks" / "icu_mortality_48h.yaml").read_text()
    )["presentation"]
    assert pred.outcome.text == spec_words["outcome"]
    assert [(c.system, c.code) for c in pred.outcome.coding] == [
        (c["system"], c["code"]) for c in spec_words["outcome_coding"]
    ]
    assert float(pred.probabilityDecimal) == pytest.approx(100 * payload["probability"], abs=1e-4)
    assert 0 <= float(pred.probabilityDecimal) <= 100

    # AI Transparency: every resource the model produced is labelled AIAST
    assert AIAST in _security(ra_doc) and AIAST in _security(prov_doc)
    assert (prov.reason[0].coding[0].system, prov.reason[0].coding[0].code) == AIAST

    # the Provenance targets the RiskAssessment, resolvable inside the Bundle
    assert prov.target[0].reference == f"RiskAssessment/{ra.id}" == f"RiskAssessment/pred-{seq}"
    assert doc["entry"][0]["fullUrl"].endswith(f"/fhir/RiskAssessment/pred-{seq}")

    # the release as a contained AI Device: release, model version, bundle hash
    device = prov_doc["contained"][0]
    assert prov.agent[0].who.reference == f"#{device['id']}"
    idents = {i["system"]: i["value"] for i in device["identifier"]}
    assert idents["urn:clinical-mlops:release"] == payload["release"]
    assert idents["urn:clinical-mlops:bundle-sha256"] == answered["release"].bundle_sha256
    assert device["version"][0]["value"] == payload["model_version"]
    assert device["type"]["coding"][0]["code"] == "Artificial-Intelligence"

    # the audit record: ledger seq and its entry (leaf) hash
    entity = prov_doc["entity"][0]
    assert entity["what"]["identifier"]["value"].endswith(f"/{seq}")
    assert entity["extension"][0]["valueString"] == answered["entry"].leaf_hash


def test_the_probability_scale_is_a_setting_refused_when_unknown(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROBABILITY_SCALE_ENV, "unit")
    client, token, predictor = _client(served)
    try:
        r = _ask(client, token, served, 31)
        assert r.status_code == 200, r.text
        ra = r.json()["entry"][0]["resource"]
        seq = int(ra["identifier"][0]["value"])
        p = predictor.ledger.read(seq).payload["probability"]
    finally:
        predictor.close()
    assert ra["prediction"][0]["probabilityDecimal"] == pytest.approx(p, abs=1e-6)
    assert "0-1 scale (set by the deployment)" in ra["note"][0]["text"]

    monkeypatch.setenv(PROBABILITY_SCALE_ENV, "fraction")
    predictor = Predictor.open(served["ws"], site="demo-icu-north", status_ttl=0.0)
    try:
        with pytest.raises(ValueInvalid, match=PROBABILITY_SCALE_ENV):
            create_app(predictor, AuthConfig.from_secret(secrets.token_hex(32)))
    finally:
        predictor.close()


def _audit(served: dict[str, Any], path: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        cli_app, ["audit", "provenance", str(path), "-w", str(served["ws"].root), *extra]
    )


def _write(folder: Path, name: str, doc: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


def test_audit_provenance_accepts_the_bundle_and_the_provenance_alone(
    served: dict[str, Any], answered: dict[str, Any]
) -> None:
    doc, folder = answered["doc"], answered["folder"]
    res = _audit(served, _write(folder, "bundle.json", doc), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ok"] is True and out["seq"] == answered["seq"] and out["mismatches"] == []
    checked = {c["what"] for c in out["checks"]}
    assert {"entry hash", "release", "bundle SHA-256", "model version", "target"} <= checked
    alone = _audit(served, _write(folder, "prov.json", doc["entry"][1]["resource"]))
    assert alone.exit_code == 0, alone.output
    assert "VALID" in alone.output


def _tampered(doc: dict[str, Any], how: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    prov = doc["entry"][1]["resource"]
    device = prov["contained"][0]
    if how == "entry hash":
        prov["entity"][0]["extension"][0]["valueString"] = "0" * 64
    elif how == "release":
        device["identifier"][0]["value"] = "icu_mortality_48h@99"
    elif how == "bundle SHA-256":
        device["identifier"][1]["value"] = "f" * 64
    elif how == "model version":
        device["version"][0]["value"] = "icu_mortality_48h-other"
    elif how == "target":
        prov["target"][0]["reference"] = "RiskAssessment/pred-1"
    elif how == "audit record":
        ident = prov["entity"][0]["what"]["identifier"]
        origin = ident["value"].rpartition("/")[0]
        ident["value"] = f"{origin}/999999"
    return doc


@pytest.mark.parametrize(
    "how", ["entry hash", "release", "bundle SHA-256", "model version", "target", "audit record"]
)
def test_audit_provenance_names_what_differs(
    served: dict[str, Any], answered: dict[str, Any], how: str
) -> None:
    path = _write(answered["folder"], f"bad-{how}.json", _tampered(answered["doc"], how))
    res = _audit(served, path, "--json")
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert any(m.startswith(f"{how}:") for m in out["mismatches"]), out["mismatches"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "(file)"),
        ({"resourceType": "Patient"}, "resourceType: expected Provenance or Bundle"),
        ({"resourceType": "Bundle", "entry": []}, "expected exactly one Provenance"),
        ({"resourceType": "Provenance", "target": []}, "Provenance.entity"),
    ],
)
def test_audit_provenance_refuses_a_file_that_is_not_a_provenance(
    served: dict[str, Any],
    answered: dict[str, Any],
    content: Any,
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write(answered["folder"], "bad-input.json", content)
    args = ["audit", "provenance", str(path), "-w", str(served["ws"].root)]
    monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
    assert run_guarded(cli_app) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and fragment in err and str(path) in " ".join(err.split())
