"""``clinical-mlops privacy ...``: record or withdraw consent, erase a subject."""

from __future__ import annotations

from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    JsonOption,
    WorkspaceOption,
    err_console,
    print_json,
    time_option,
    workspace_from,
)
from clinical_mlops.cli.audit import ActorOption, default_actor

privacy_app = typer.Typer(help="Consent and erasure of patients (subjects).", no_args_is_help=True)


@privacy_app.command("consent")
def consent(
    subject: Annotated[str, typer.Argument(help="The subject's identifier (e.g. an MRN).")],
    purpose: Annotated[
        list[str], typer.Option("--purpose", help="A purpose the consent covers (repeatable).")
    ],
    valid_from: Annotated[
        str | None, typer.Option("--valid-from", help="ISO date/time (default: now).")
    ] = None,
    valid_until: Annotated[
        str | None, typer.Option("--valid-until", help="ISO date/time (default: no end).")
    ] = None,
    actor: ActorOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a subject's consent scope; the subject gets a random pseudonym if new."""
    from clinical_mlops.application.privacy import grant_consent
    from clinical_mlops.application.services import Services

    start = time_option(valid_from, "--valid-from")
    end = time_option(valid_until, "--valid-until")
    with Services.open(workspace_from(workspace)) as services:
        try:
            granted = grant_consent(
                services,
                subject=subject,
                purposes=purpose,
                valid_from=start,
                valid_until=end,
                actor=actor or default_actor(),
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    if as_json:
        print_json(granted.to_json())
    else:
        err_console.print(
            f"consent recorded for {granted.record.pseudonym}: "
            f"{', '.join(granted.record.purposes)} (ledger entry {granted.seq})"
        )


@privacy_app.command("withdraw")
def withdraw(
    subject: Annotated[str, typer.Argument(help="The subject's identifier (e.g. an MRN).")],
    purpose: Annotated[
        list[str] | None,
        typer.Option("--purpose", help="A purpose to withdraw (repeatable; default: all)."),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="ISO date/time it ends (default: now).")
    ] = None,
    actor: ActorOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw a subject's consent to some or all purposes; later requests are refused."""
    from clinical_mlops.application.privacy import withdraw_consent
    from clinical_mlops.application.services import Services

    with Services.open(workspace_from(workspace)) as services:
        try:
            withdrawn = withdraw_consent(
                services,
                subject=subject,
                purposes=purpose or None,
                at=time_option(at, "--at"),
                actor=actor or default_actor(),
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    if as_json:
        print_json(withdrawn.to_json())
    else:
        err_console.print(
            f"consent withdrawn for {withdrawn.pseudonym}: {', '.join(withdrawn.purposes)} "
            f"from {withdrawn.at.isoformat()} (ledger entry {withdrawn.seq})"
        )


@privacy_app.command("erase")
def erase(
    subject: Annotated[str, typer.Argument(help="The subject's identifier to erase.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (e.g. the erasure request reference).")
    ] = "erasure request",
    actor: ActorOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Erase a subject: delete the identity mapping and data keys; log it by pseudonym."""
    from clinical_mlops.application.privacy import erase_subject
    from clinical_mlops.application.services import Services

    with Services.open(workspace_from(workspace)) as services:
        receipt = erase_subject(
            services, identifier=subject, actor=actor or default_actor(), reason=reason
        )
    if as_json:
        print_json(receipt.to_json())
    else:
        err_console.print(
            f"erased {receipt.pseudonym}: {receipt.data_keys} data keys destroyed "
            f"(ledger entry {receipt.seq})"
        )
