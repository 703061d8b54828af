"""Signed sets of evidence documents stored beside the release, and their verification.

:func:`write_documents` writes one set — every document's files plus ``EVIDENCE.json``
(the manifest: release, bundle SHA-256, as-of time, each file's SHA-256, each
document's missing fields with their owners) and ``SIGNATURE.json`` (Ed25519 over the
manifest hash and the workspace id, by the workspace key provider's signing key, the
way release bundles are signed) — under
``artifacts/evidence/<release>/<as-of stamp>/``, atomically (a set is visible whole or
not at all), and records an ``evidence_written`` ledger entry carrying the manifest
hash. :func:`read_evidence` verifies the newest set (every file against the manifest,
no file added or missing, the signature, the workspace) and says how fresh it is: the
age of its as-of time, and whether the release (status, ledger events) or its
monitoring (newer windows) changed since.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from clinical_mlops.clock import utc_iso
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evidence.facts import GOVERNANCE_EVENTS, ReleaseFacts, parse_time
from clinical_mlops.evidence.fields import Document
from clinical_mlops.hashing import canonical_json, sha256_bytes, sha256_file

if TYPE_CHECKING:
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.workspace import Workspace

__all__ = [
    "EVIDENCE_FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "evidence_root",
    "evidence_sets",
    "read_evidence",
    "write_documents",
]

EVIDENCE_FORMAT = "clinical-mlops/evidence/v1"
SIGNATURE_KIND = "clinical-mlops/evidence-signature/v1"
MANIFEST = "EVIDENCE.json"
SIGNATURE = "SIGNATURE.json"


def evidence_root(workspace: Workspace, version: str) -> Path:
    """Return ``artifacts/evidence/<release>`` of ``workspace`` (not created)."""
    return workspace.artifacts_dir / "evidence" / version


def _stamp(as_of: datetime) -> str:
    return utc_iso(as_of).replace("-", "").replace(":", "").replace(".", "-")


def _signing_message(signature: dict[str, Any]) -> bytes:
    return canonical_json(
        {
            "kind": SIGNATURE_KIND,
            "manifest_sha256": signature["manifest_sha256"],
            "workspace_id": signature["workspace_id"],
            "key_id": signature["key_id"],
            "signed_at": signature["signed_at"],
        }
    )


def write_documents(
    workspace: Workspace,
    facts: ReleaseFacts,
    documents: list[Document],
    *,
    actor: str,
    ledger: Ledger,
    now: datetime,
) -> dict[str, Any]:
    """Return the manifest of the signed set written for ``documents`` (with path and seq).

    Two documents naming the same file are refused (``ValueInvalid``) before anything
    is written; the set is published by an atomic rename, then the ledger entry is
    appended, so a set without its ledger entry can only follow a crash in between.
    """
    from clinical_mlops.privacy.keys import provider_for_workspace, public_key_hex
    from clinical_mlops.registry.bundle import workspace_id

    files: dict[str, bytes] = {}
    for doc in documents:
        for name, data in doc.files.items():
            if name in files or name in (MANIFEST, SIGNATURE):
                raise ValueInvalid(f"evidence {doc.format}: file {name} is written twice")
            files[name] = data
    manifest: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "release": facts.version,
        "task": facts.task,
        "bundle_sha256": facts.bundle_sha256,
        "release_status": facts.release["status"],
        "as_of": facts.as_of_iso,
        "written_at": utc_iso(now),
        "written_by": actor,
        "formats": [d.format for d in documents],
        "documents": [
            {
                "format": d.format,
                "title": d.title,
                "files": {name: sha256_bytes(data) for name, data in sorted(d.files.items())},
                "fields": len(d.fields),
                "missing": [
                    {"key": f.key, "label": f.label, "owner": f.owner, "note": f.note}
                    for f in d.missing()
                ],
            }
            for d in documents
        ],
        "files": {name: sha256_bytes(data) for name, data in sorted(files.items())},
        "monitoring_window": facts.local.window_end if facts.local else None,
        "last_release_event": facts.events[-1]["seq"] if facts.events else None,
    }
    manifest_bytes = canonical_json(manifest)
    manifest_sha = sha256_bytes(manifest_bytes)
    keys = provider_for_workspace(workspace)
    key_id, signer = keys.signer()
    signature: dict[str, Any] = {
        "algorithm": "Ed25519",
        "manifest_sha256": manifest_sha,
        "workspace_id": workspace_id(workspace),
        "key_id": key_id,
        "public_key": public_key_hex(keys.public_keys()[key_id]),
        "signed_at": utc_iso(now),
    }
    signature["signature"] = signer.sign(_signing_message(signature)).hex()
    parent = evidence_root(workspace, facts.version)
    final = parent / f"{_stamp(facts.as_of)}-{manifest_sha[:12]}"
    with workspace.staging_dir(parent) as stage:
        for name, data in files.items():
            (stage / name).write_bytes(data)
        (stage / MANIFEST).write_bytes(manifest_bytes)
        (stage / SIGNATURE).write_bytes(canonical_json(signature))
        workspace.publish(stage, final)
    seq = ledger.append(
        type="evidence_written",
        actor=actor,
        payload={
            "release": facts.version,
            "manifest_sha256": manifest_sha,
            "formats": manifest["formats"],
            "as_of": facts.as_of_iso,
            "path": str(final.relative_to(workspace.root)),
        },
    ).seq
    return manifest | {"path": str(final), "manifest_sha256": manifest_sha, "seq": seq}


def evidence_sets(workspace: Workspace, version: str) -> list[Path]:
    """Return the folders of the evidence sets of ``version``, newest as-of time last."""
    root = evidence_root(workspace, version)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _verify(workspace: Workspace, folder: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Return the manifest of ``folder`` and what is wrong with the set (empty: it verifies)."""
    from clinical_mlops.privacy.keys import provider_for_workspace
    from clinical_mlops.registry.bundle import workspace_id

    problems: list[str] = []
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        signature = json.loads((folder / SIGNATURE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, [f"{folder.name}: manifest or signature unreadable ({exc})"]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != EVIDENCE_FORMAT:
        return None, [f"{folder.name}: {MANIFEST} is not an {EVIDENCE_FORMAT} manifest"]
    present = {p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE}
    added, missing = sorted(present - set(files)), sorted(set(files) - present)
    if added or missing:
        problems.append(
            f"file set differs from the signed manifest (added: {added or 'none'}; "
            f"missing: {missing or 'none'})"
        )
    for name, expected in sorted(files.items()):
        if name in present and sha256_file(folder / name) != expected:
            problems.append(f"{name} does not match its SHA-256 in the signed manifest")
    manifest_sha = sha256_file(folder / MANIFEST)
    if signature.get("manifest_sha256") != manifest_sha:
        problems.append(f"{MANIFEST} was changed after signing")
    if signature.get("workspace_id") != workspace_id(workspace):
        problems.append("signed for another workspace")
    key = provider_for_workspace(workspace).public_keys().get(str(signature.get("key_id")))
    if key is None:
        problems.append(f"signed with key {signature.get('key_id')!r}, which this workspace lacks")
    else:
        try:
            key.verify(bytes.fromhex(str(signature.get("signature"))), _signing_message(signature))
        except (InvalidSignature, ValueError, KeyError):
            problems.append("the Ed25519 signature does not verify")
    return manifest, problems


def read_evidence(workspace: Workspace, version: str, *, now: datetime) -> dict[str, Any] | None:
    """Return the newest evidence set of ``version``, verified, with its freshness; None if none.

    ``verified`` is False with ``problems`` naming each failure when a file, the
    manifest or the signature was changed. ``age_hours`` is the time since the set's
    as-of time; ``release_changed`` lists the ledger events about the release written
    after it (status changes, rollout, trials, reviews ...), ``monitoring_changed`` is
    True when a monitored window newer than the one the set read exists.
    """
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.monitoring.runs import stored_windows

    sets = evidence_sets(workspace, version)
    if not sets:
        return None
    folder = sets[-1]
    manifest, problems = _verify(workspace, folder)
    if manifest is None:
        return {"path": str(folder), "verified": False, "problems": problems}
    as_of = parse_time(manifest["as_of"])
    later = []
    with Ledger.open(workspace) as led:
        for view in led.read_from(0, types=GOVERNANCE_EVENTS):
            payload = view.payload or {}
            if view.entry.type == "evidence_written" or payload.get("release") != version:
                continue
            if parse_time(view.entry.time) > as_of:
                later.append(
                    {"seq": view.entry.seq, "type": view.entry.type, "time": view.entry.time}
                )
    windows = [
        w for w in stored_windows(workspace, version, since=as_of) if w.at_iso > manifest["as_of"]
    ]
    return {
        "path": str(folder),
        "verified": not problems,
        "problems": problems,
        "manifest": manifest,
        "manifest_sha256": sha256_file(folder / MANIFEST),
        "as_of": manifest["as_of"],
        "age_hours": round((now - as_of).total_seconds() / 3600.0, 2),
        "release_changed": later,
        "monitoring_changed": bool(windows),
        "newer_windows": len(windows),
        "sets": len(sets),
    }
