"""The witness's HTTP interface (C2SP tlog-witness): add-checkpoint and the monitoring read.

``POST /add-checkpoint`` answers 200 with the cosignature lines, or the spec's status with
the reason as text (409 carries the size held, ``text/x.tlog.size``).
``GET /<sha256(origin)>/checkpoint`` returns the latest cosigned checkpoint (404: none).
"""

from pathlib import Path
from typing import Any

__all__ = ["witness_app"]


def witness_app(state: Path, key: Path | None = None) -> Any:
    """Return the ASGI app of the witness kept in ``state``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse

    from clinical_mlops.application.witness import add_checkpoint, latest_checkpoint, open_witness
    from clinical_mlops.errors import WitnessRefused

    witness = open_witness(state, key)
    app = FastAPI(title="clinical-mlops witness", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/add-checkpoint")
    async def post_add_checkpoint(request: Request) -> PlainTextResponse:
        body = await request.body()
        try:
            accepted = add_checkpoint(witness, body)
        except WitnessRefused as exc:
            if exc.status == 409 and exc.latest_size is not None:
                return PlainTextResponse(
                    f"{exc.latest_size}\n", status_code=409, media_type="text/x.tlog.size"
                )
            return PlainTextResponse(exc.reason + "\n", status_code=exc.status)
        return PlainTextResponse(accepted.cosignatures)

    @app.get("/{digest}/checkpoint")
    def get_checkpoint(digest: str) -> PlainTextResponse:
        note = latest_checkpoint(witness, digest)
        if note is None:
            return PlainTextResponse("no checkpoint of this log\n", status_code=404)
        return PlainTextResponse(note)

    return app
