"""``clinical-mlops witness ...``: run a witness that cosigns only consistent ledger checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clinical_mlops.cli._common import JsonOption, err_console, out_console, print_json

witness_app = typer.Typer(
    help="A checkpoint witness (C2SP tlog-witness): set one up, serve it, list what it refused.",
    no_args_is_help=True,
)

StateOption = Annotated[Path, typer.Option("--state", help="The witness's state directory.")]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key", help="The witness's Ed25519 private key (PEM); default STATE/witness.key."
    ),
]


@witness_app.command("init")
def init(
    state: StateOption,
    name: Annotated[str, typer.Option("--name", help="The witness's name, e.g. audit.example/w1.")],
    log: Annotated[
        list[str],
        typer.Option(
            "--log", help="The vkey of a ledger to witness (repeatable; see `audit checkpoint`)."
        ),
    ],
    key: KeyOption = None,
) -> None:
    """Set up a witness in STATE (its key made unless --key names one); print its vkey."""
    from clinical_mlops.application.witness import init_witness

    out_console.print(init_witness(state, name=name, logs=log, key=key), highlight=False)


@witness_app.command("serve")
def serve(
    state: StateOption,
    key: KeyOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8480,
) -> None:
    """Serve add-checkpoint and the latest cosigned checkpoints over HTTP."""
    import uvicorn

    from clinical_mlops.http.witness import witness_app as make_app

    app = make_app(state, key)
    err_console.print(f"witness listening on http://{host}:{port}", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@witness_app.command("refusals")
def refusals(state: StateOption, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """List every checkpoint the witness refused, with why."""
    from clinical_mlops.application.witness import open_witness

    found = open_witness(state, key).refusals()
    if as_json:
        print_json(found)
        return
    for item in found:
        out_console.print(
            f"{item['time']} {item['origin']} {item['status']}: {item['reason']}",
            highlight=False,
            markup=False,
        )
