"""A service whose keys live in OpenBao Transit fails closed when the key server goes away:
503, no risk returned, nothing written to the ledger; once the server is back the ledger
verifies, with no partial entry, and scoring resumes; readiness names the keys meanwhile
(R-P2, R-H4)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app as cli_app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.http.app import create_app
from clinical_mlops.ledger import Ledger
from clinical_mlops.privacy.consent import record_consent
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig
from clinical_mlops.workspace import Workspace
from openbao_server import SIGN_KEY, OpenBao
from serving.conftest import rows_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette warns that httpx is deprecated for TestClient
    from fastapi.testclient import TestClient


@pytest.fixture
def transit_service(
    trained: tuple[Path, str],
    openbao_persistent: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    """A governed release and its service, every key and signature in OpenBao Transit."""
    token_file = tmp_path / "bao-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, openbao_persistent.product_token().encode())
    os.close(fd)
    for key in (
        "CLINICAL_MLOPS_LEDGER_URL",
        "CLINICAL_MLOPS_IDENTITY_URL",
        "CLINICAL_MLOPS_META_URL",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CLINICAL_MLOPS_KEY_PROVIDER", "transit")
    monkeypatch.setenv("BAO_ADDR", openbao_persistent.url)
    monkeypatch.setenv("CLINICAL_MLOPS_VAULT_TOKEN_FILE", str(token_file))
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(ws, model_version=trained[1])
    with Ledger.open(ws) as led:
        for i in range(4):
            record_consent(
                led.vault,
                pseudonym=led.vault.pseudonym_for(f"MRN-{i}"),
                purposes=["direct_care"],
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_until=None,
                recorded_by="test",
            )
    predictor = Predictor.open(ws, site="demo-icu-north", status_ttl=0.0)
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    client = TestClient(create_app(predictor, auth))
    headers = {"Authorization": "Bearer " + auth.issue(subject="dr.t", roles=["clinician"])}
    rows = rows_of(ws, shown["lineage"]["snapshot"]["id"])
    yield {"ws": ws, "predictor": predictor, "client": client, "headers": headers, "rows": rows}
    predictor.close()


def predict(service: dict[str, Any], i: int) -> Any:
    body = {
        "subject_id": f"MRN-{i}",
        "purpose": "direct_care",
        "setting": "icu",
        "features": service["rows"][i],
    }
    return service["client"].post("/v1/predict", json=body, headers=service["headers"])


def audit_verify(ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> dict[str, Any]:
    monkeypatch.setattr(
        sys, "argv", ["clinical-mlops", "audit", "verify", "--json", "-w", str(ws.root)]
    )
    try:
        code = run_guarded(cli_app)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out)
    assert code == 0 and report["ok"] is True, out
    return report


def test_the_key_server_going_away_answers_503_and_writes_nothing(
    transit_service: dict[str, Any],
    openbao_persistent: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
):
    served = predict(transit_service, 0)
    assert served.status_code == 200, served.text
    ledger = transit_service["predictor"].ledger
    size = ledger.size()
    client = transit_service["client"]
    assert client.get("/readyz").json()["checks"]["keys"] == "ok"
    openbao_persistent.kill()
    # MRN-0's data key is in memory (the ledger entry still needs a signature); MRN-1's is
    # not (it must be unwrapped first). Neither gets an answer or an entry.
    for i in (0, 1):
        refused = predict(transit_service, i)
        assert refused.status_code == 503, refused.text
        detail = refused.json()["detail"]
        assert detail["code"] == "KeyProviderUnavailable"
        assert set(refused.json()) == {"detail"}  # no risk, band or explanation
        assert f"MRN-{i}" not in refused.text
        assert ledger.size() == size
    assert client.get("/healthz").status_code == 200  # the process itself is alive
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert {k for k, v in ready.json()["checks"].items() if v != "ok"} == {"keys"}
    assert openbao_persistent.url.split("//")[1] not in ready.text  # no address for anyone
    openbao_persistent.start()  # the same storage: the keys are back
    assert client.get("/readyz").status_code == 200  # by itself, no restart
    report = audit_verify(transit_service["ws"], monkeypatch, capsys)
    assert report["entries"] == size and report["first_bad_seq"] is None
    again = predict(transit_service, 1)
    assert again.status_code == 200, again.text
    assert ledger.size() == size + 1
    last = list(ledger.read_from(size))
    assert [v.entry.type for v in last] == ["inference"]
    assert last[0].entry.sig_key_id == f"{SIGN_KEY}:v1"
    assert audit_verify(transit_service["ws"], monkeypatch, capsys)["entries"] == size + 1


def test_a_revoked_token_answers_503_and_writes_nothing(
    transit_service: dict[str, Any], openbao_persistent: OpenBao
):
    assert predict(transit_service, 2).status_code == 200
    ledger = transit_service["predictor"].ledger
    size = ledger.size()
    token = Path(os.environ["CLINICAL_MLOPS_VAULT_TOKEN_FILE"]).read_text()
    openbao_persistent.revoke(token)
    refused = predict(transit_service, 2)
    assert refused.status_code == 503, refused.text
    assert "permission denied" in refused.json()["detail"]["message"]
    assert token not in refused.text
    assert ledger.size() == size
    ready = transit_service["client"].get("/readyz").json()["checks"]
    assert ready["keys"] == "the key server cannot be reached or refused the service's token"
