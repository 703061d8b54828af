"""Evidence use cases (R-I7): write a release's standard documents, show what they owe.

``clinical-mlops evidence`` and the console's Evidence page call these functions.
:func:`write_evidence` checks the formats asked for, reads the release's facts once as
of the given time (refusing an unknown release, a time in the future or before the
release was registered), builds each document, refuses any document with a field
that is blank without an owner or known without a pointer, and only then writes the
signed set and its ledger entry — a refusal writes nothing.
:func:`evidence_overview` verifies the newest set and lists each document's freshness,
missing fields and their owners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from clinical_mlops.clock import Clock, SystemClock
from clinical_mlops.errors import ValueInvalid
from clinical_mlops.workspace import Workspace

__all__ = ["evidence_file", "evidence_overview", "write_evidence"]

#: how a document file is served, by its extension
_MEDIA_TYPES = {
    ".xml": "application/xml",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".html": "text/html",
}


def write_evidence(
    workspace: Workspace,
    release: str,
    *,
    formats: Sequence[str] = ("all",),
    as_of: datetime | None = None,
    actor: str,
    progress: Callable[[str], None] | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Return the signed manifest of the evidence set written for ``release`` as of ``as_of``.

    ``formats`` are names from :data:`clinical_mlops.evidence.ALL_FORMATS` or ``all``
    (every format this version builds); ``progress`` receives one line per step; ``clock``
    gives the signing time and the ledger entry's time (the system clock by default; the
    console passes its own).
    """
    from clinical_mlops.evidence import FORMATS, resolve_formats
    from clinical_mlops.evidence.facts import gather_facts
    from clinical_mlops.evidence.fields import field_problems
    from clinical_mlops.evidence.store import write_documents
    from clinical_mlops.ledger import Ledger

    say = progress or (lambda _line: None)
    names = resolve_formats(formats)
    facts = gather_facts(workspace, release, as_of=as_of)
    say(f"read the facts of {facts.version} as of {facts.as_of_iso}")
    documents = []
    for name in names:
        doc = FORMATS[name](facts)
        problems = field_problems(doc)
        if problems:
            raise ValueInvalid(
                f"evidence {name} of {facts.version}: refusing to write a document with "
                f"unsupported fields: {'; '.join(problems[:5])}"
            )
        say(f"built {name}: {len(doc.fields)} fields, {len(doc.missing())} to be completed")
        documents.append(doc)
    clock = clock or SystemClock()
    with Ledger.open(workspace, clock=clock) as led:
        written = write_documents(
            workspace, facts, documents, actor=actor, ledger=led, now=clock.now()
        )
    say(f"signed {len(written['files'])} files; audit record {written['seq']}")
    return written


def evidence_overview(
    workspace: Workspace, release: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Return the evidence of ``release``: the newest set verified, its freshness, what it owes.

    ``documents`` lists every format this version builds with the newest set's files,
    missing fields and owners (``written`` False when the set lacks that format).
    """
    from clinical_mlops.evidence import FORMATS
    from clinical_mlops.evidence.store import read_evidence
    from clinical_mlops.registry.registry import Registry

    with Registry.open(workspace) as reg:
        version = reg.get(release).version
    status = read_evidence(workspace, version, now=now or SystemClock().now())
    manifest = (status or {}).get("manifest") or {}
    by_format = {d["format"]: d for d in manifest.get("documents", [])}
    documents = [
        {
            "format": name,
            "written": name in by_format,
            "title": by_format.get(name, {}).get("title"),
            "files": by_format.get(name, {}).get("files", {}),
            "missing": by_format.get(name, {}).get("missing", []),
        }
        for name in FORMATS
    ]
    return {"release": version, "evidence": status, "documents": documents}


def evidence_file(workspace: Workspace, release: str, name: str) -> tuple[bytes, str]:
    """Return (bytes, media type) of file ``name`` of the newest evidence set of ``release``.

    The set is verified first: a set whose signature, manifest or file hashes do not
    hold raises :class:`~clinical_mlops.errors.EvidenceInvalid` naming each problem,
    and only a file the signed manifest lists is read
    (:class:`~clinical_mlops.errors.EvidenceNotFound` otherwise).
    """
    from pathlib import Path

    from clinical_mlops.errors import EvidenceInvalid, EvidenceNotFound
    from clinical_mlops.evidence.store import read_evidence
    from clinical_mlops.hashing import sha256_bytes
    from clinical_mlops.registry.registry import Registry

    with Registry.open(workspace) as reg:
        version = reg.get(release).version
    status = read_evidence(workspace, version, now=SystemClock().now())
    if status is None:
        raise EvidenceNotFound(f"{version} has no evidence set; write one with: evidence {version}")
    if not status["verified"]:
        raise EvidenceInvalid(
            f"the newest evidence set of {version} does not verify: {'; '.join(status['problems'])}"
        )
    if name not in status["manifest"]["files"]:
        raise EvidenceNotFound(f"the newest evidence set of {version} has no file {name!r}")
    data = (Path(status["path"]) / name).read_bytes()
    # the bytes served are the bytes signed, even if the file changed after the check
    if sha256_bytes(data) != status["manifest"]["files"][name]:
        raise EvidenceInvalid(f"{name} of {version} changed after its set was verified")
    return data, _MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")
