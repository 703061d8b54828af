"""The console's Evidence page: each document, its freshness, what it owes and to whom.

Writing a set goes through the same use case as ``clinical-mlops evidence``; a file is
served only from a set whose signature and hashes verify, and only the files its signed
manifest lists.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from console_world import (
    AUDITOR,
    CLINICIAN,
    COMPLIANCE,
    console_client,
    form_token,
    ledger_size,
    sign_in,
)

from clinical_mlops.evidence import FORMATS
from clinical_mlops.evidence.store import MANIFEST, SIGNATURE, evidence_sets
from clinical_mlops.ledger import Ledger


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _write(client: Any, version: str) -> Any:
    page = client.get(f"/console/releases/{version}/evidence")
    action = f"/console/releases/{version}/evidence"
    return client.post(
        action, data={"csrf_token": form_token(page.text, action)}, follow_redirects=False
    )


def test_the_page_writes_a_signed_set_and_lists_each_document_and_its_owners(
    fresh_world: dict[str, Any],
) -> None:
    ws, v1 = fresh_world["ws"], fresh_world["v1"]
    client = console_client(ws)
    assert sign_in(client, COMPLIANCE).status_code == 303
    empty = client.get(f"/console/releases/{v1}/evidence")
    assert empty.status_code == 200, empty.text[:400]
    assert "No evidence set has been written" in _text(empty.text)
    assert _text(empty.text).count("not written yet") == len(FORMATS)
    # the release page links to it
    assert f"/console/releases/{v1}/evidence" in client.get(f"/console/releases/{v1}").text

    before = ledger_size(ws)
    done = _write(client, v1)
    assert done.status_code == 303, done.text[:400]
    with Ledger.open(ws) as led:
        entry = led.read(before)
    assert entry.entry.type == "evidence_written" and entry.entry.actor == COMPLIANCE
    assert entry.payload["release"] == v1 and entry.payload["formats"] == list(FORMATS)

    page = client.get(done.headers["location"])
    text = _text(page.text)
    assert "verified" in text and f"record {before}" in text
    [folder] = evidence_sets(ws, v1)
    manifest = json.loads((folder / MANIFEST).read_text())
    # every file of the signed set is linked, and nothing else of the folder
    linked = set(
        re.findall(rf"/console/releases/{re.escape(v1)}/evidence/files/([^\"]+)\"", page.text)
    )
    assert linked == set(manifest["files"])
    # every owed field is listed under its owner, with the count per document
    owed = [(d["format"], m) for d in manifest["documents"] for m in d["missing"]]
    assert owed, "the documents owe nothing: owners cannot be shown"
    for fmt, m in owed:
        assert m["owner"] in text and html.unescape(f"{fmt}: {m['label']}") in text
    # the CHAI card is served as signed, as XML that the browser may not run
    chai = next(n for n in manifest["files"] if n.endswith(".xml"))
    got = client.get(f"/console/releases/{v1}/evidence/files/{chai}")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/xml")
    assert "sandbox" in got.headers["content-security-policy"]
    assert got.content == (folder / chai).read_bytes()
    # the manifest and signature are not documents; a name outside the set is not found
    for name in (MANIFEST, SIGNATURE, "..%2Freport.json", "nothing.xml"):
        assert client.get(f"/console/releases/{v1}/evidence/files/{name}").status_code == 404


def test_a_changed_file_is_shown_as_not_verifying_and_nothing_is_served(
    fresh_world: dict[str, Any],
) -> None:
    ws, v1 = fresh_world["ws"], fresh_world["v1"]
    client = console_client(ws)
    assert sign_in(client, COMPLIANCE).status_code == 303
    assert _write(client, v1).status_code == 303
    [folder] = evidence_sets(ws, v1)
    name = next(n for n in json.loads((folder / MANIFEST).read_text())["files"])
    target: Path = folder / name
    target.write_bytes(target.read_bytes() + b" ")
    page = _text(client.get(f"/console/releases/{v1}/evidence").text)
    assert "does not verify" in page and name in page
    assert client.get(f"/console/releases/{v1}/evidence/files/{name}").status_code == 409


def test_roles_clinicians_do_not_see_it_and_auditors_read_but_do_not_write(
    fresh_world: dict[str, Any],
) -> None:
    ws, v1 = fresh_world["ws"], fresh_world["v1"]
    client = console_client(ws)
    assert sign_in(client, CLINICIAN).status_code == 303
    assert client.get(f"/console/releases/{v1}/evidence").status_code == 403
    assert sign_in(client, AUDITOR).status_code == 303
    page = client.get(f"/console/releases/{v1}/evidence")
    assert page.status_code == 200
    assert "Write the documents as of now" not in page.text
    before = ledger_size(ws)
    refused = client.post(f"/console/releases/{v1}/evidence", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert ledger_size(ws) == before and evidence_sets(ws, v1) == []
