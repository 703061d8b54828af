"""``clinical-mlops privacy ...``: record consent, erase a subject."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from clinical_mlops.cli._common import (
    JsonOption,
    WorkspaceOption,
    err_console,
    print_json,
    workspace_from,
)
from clinical_mlops.cli.audit import ActorOption, default_actor

privacy_app = typer.Typer(help="Consent and erasure of patients (subjects).", no_args_is_help=True)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{name} {value!r} is not an ISO date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.privacy.consent import record_consent

    who = actor or default_actor()
    start = _when(valid_from, "--valid-from") or datetime.now(UTC)
    end = _when(valid_until, "--valid-until")
    with Ledger.open(workspace_from(workspace)) as ledger:
        pseudonym = ledger.vault.pseudonym_for(subject)
        try:
            record = record_consent(
                ledger.vault,
                pseudonym=pseudonym,
                purposes=purpose,
                valid_from=start,
                valid_until=end,
                recorded_by=who,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        receipt = ledger.append(
            type="consent_recorded", actor=who, subject=pseudonym, payload=record.to_json()
        )
    result = {**record.to_json(), "seq": receipt.seq}
    if as_json:
        print_json(result)
    else:
        err_console.print(
            f"consent recorded for {pseudonym}: {', '.join(record.purposes)} "
            f"(ledger entry {receipt.seq})"
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
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.privacy.erasure import erase_subject

    with Ledger.open(workspace_from(workspace)) as ledger:
        receipt = erase_subject(
            ledger, identifier=subject, actor=actor or default_actor(), reason=reason
        )
    if as_json:
        print_json(receipt.to_json())
    else:
        err_console.print(
            f"erased {receipt.pseudonym}: {receipt.data_keys} data keys destroyed "
            f"(ledger entry {receipt.seq})"
        )
