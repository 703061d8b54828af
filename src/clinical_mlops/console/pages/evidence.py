"""Evidence of a release (R-I7): its standard documents, how fresh they are, what they owe.

The page lists every document format with the newest signed set's files, the fields
still to be completed and by whom, and whether the release or its monitoring changed
since the set was written. Writing a new set (as of the console's clock) and opening a
file both go through :mod:`clinical_mlops.application.evidence`; a file is served only
from a set whose signature and hashes verify.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clinical_mlops.application.evidence import evidence_file, evidence_overview, write_evidence
from clinical_mlops.console.deps import Viewer, page, posted, render

router = APIRouter()


@router.get("/releases/{version}/evidence", response_class=HTMLResponse)
def evidence(
    version: str,
    viewer: Annotated[Viewer, Depends(page("/releases/{version}/evidence"))],
    written: str | None = None,
) -> HTMLResponse:
    overview = evidence_overview(viewer.console.workspace, version, now=viewer.console.clock.now())
    owed: dict[str, list[str]] = {}
    for doc in overview["documents"]:
        for f in doc["missing"]:
            owed.setdefault(f["owner"], []).append(f"{doc['format']}: {f['label']}")
    return render(
        viewer,
        "evidence.html",
        title=f"Evidence of {overview['release']}",
        o=overview,
        version=overview["release"],
        owed=dict(sorted(owed.items())),
        written=written,
        may_write=viewer.may("POST", "/releases/{version}/evidence"),
    )


@router.post("/releases/{version}/evidence")
def write(
    version: str,
    viewer: Annotated[Viewer, Depends(posted("/releases/{version}/evidence"))],
) -> RedirectResponse:
    made = write_evidence(
        viewer.console.workspace,
        version,
        formats=("all",),
        as_of=viewer.console.clock.now(),
        actor=viewer.user.name,
        clock=viewer.console.clock,
    )
    return RedirectResponse(
        viewer.url(f"/releases/{made['release']}/evidence?written={made['seq']}"),
        status_code=303,
    )


@router.get("/releases/{version}/evidence/files/{name}")
def document_file(
    version: str,
    name: str,
    viewer: Annotated[Viewer, Depends(page("/releases/{version}/evidence/files/{name}"))],
) -> Response:
    data, media_type = evidence_file(viewer.console.workspace, version, name)
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # a document is shown, never run: no script, no form, no other origin
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    }
    if media_type != "text/html":
        headers["Content-Disposition"] = f'inline; filename="{name}"'
    return Response(data, media_type=media_type, headers=headers)
