"""Audit: search the ledger, open one entry with its inclusion proof, verify the whole
ledger (or an uploaded auditor bundle) and export a bundle for an auditor."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, UploadFile
from fastapi.responses import HTMLResponse, Response

from clinical_mlops.console.deps import Viewer, page, posted, render
from clinical_mlops.errors import BundleInvalid, InputInvalid
from clinical_mlops.governance.audit_search import entry_types, parse_bound, search_ledger

router = APIRouter()
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def _search_page(
    viewer: Viewer,
    q: dict[str, str],
    *,
    verified: dict[str, Any] | None = None,
    bundle_verified: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    ledger = viewer.console.ledger
    before = q.get("before", "")
    result = search_ledger(
        ledger,
        types=[q["type"]] if q.get("type") else None,
        since=parse_bound(q.get("since"), where="since"),
        until=parse_bound(q.get("until"), where="until", end=True),
        subject=q.get("subject") or None,
        actor=q.get("actor") or None,
        model_version=q.get("model_version") or None,
        before=int(before) if before.isdigit() else None,
    )
    return render(
        viewer,
        "audit.html",
        status=status,
        title="Audit",
        q=q,
        result=result,
        types=entry_types(),
        size=ledger.size(),
        origin=ledger.origin,
        verified=verified,
        bundle_verified=bundle_verified,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit(
    viewer: Annotated[Viewer, Depends(page("/audit"))],
    type: str = "",
    since: str = "",
    until: str = "",
    subject: str = "",
    actor: str = "",
    model_version: str = "",
    before: str = "",
) -> HTMLResponse:
    q = {
        "type": type,
        "since": since,
        "until": until,
        "subject": subject.strip(),
        "actor": actor.strip(),
        "model_version": model_version.strip(),
        "before": before,
    }
    return _search_page(viewer, q)


@router.get("/audit/entries/{seq}", response_class=HTMLResponse)
def entry(
    seq: int, viewer: Annotated[Viewer, Depends(page("/audit/entries/{seq}"))]
) -> HTMLResponse:
    ledger = viewer.console.ledger
    view = ledger.read(seq).to_json()
    proof = ledger.inclusion_proof(seq) if seq < ledger.size() else None
    return render(
        viewer,
        "entry.html",
        title=f"Ledger entry {seq}",
        e=view,
        payload=json.dumps(view["payload"], indent=2, sort_keys=True, default=str),
        proof=proof,
    )


@router.post("/audit/verify", response_class=HTMLResponse)
def verify(viewer: Annotated[Viewer, Depends(posted("/audit/verify"))]) -> HTMLResponse:
    report = viewer.console.ledger.verify()
    return _search_page(viewer, {}, verified=report.to_json())


@router.post("/audit/export")
def export(
    viewer: Annotated[Viewer, Depends(posted("/audit/export"))],
    start: Annotated[str, Form()] = "0",
    end: Annotated[str, Form()] = "",
) -> Response:
    from clinical_mlops.ledger.export import export_bundle

    ledger = viewer.console.ledger
    try:
        first = int(start or 0)
        last = int(end) if end.strip() else None
    except ValueError:
        raise InputInvalid(
            [("start", "give the first seq and, optionally, one past the last")]
        ) from None
    bundle = export_bundle(ledger, start=first, end=last)
    body = json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    size = bundle["checkpoint"]["size"]
    name = f"audit-bundle-{ledger.origin}-{first}-{first + len(bundle['entries'])}-of-{size}.json"
    return Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/audit/verify-bundle", response_class=HTMLResponse)
async def verify_bundle_upload(
    viewer: Annotated[Viewer, Depends(posted("/audit/verify-bundle"))],
    bundle: UploadFile,
) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    raw = await bundle.read(MAX_BUNDLE_BYTES + 1)
    return await run_in_threadpool(_verify_uploaded, viewer, raw, bundle.filename or "upload")


def _verify_uploaded(viewer: Viewer, raw: bytes, name: str) -> HTMLResponse:
    from clinical_mlops.application.audit import verify_bundle

    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleInvalid(f"{name}: larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BundleInvalid(f"{name}: not a JSON audit bundle") from None
    if not isinstance(data, dict):
        raise BundleInvalid(f"{name}: not a JSON object")
    report = verify_bundle(data, ledger_keys=viewer.console.ledger.provider)
    return _search_page(viewer, {}, bundle_verified=report.to_json() | {"name": name})
