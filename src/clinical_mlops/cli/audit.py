"""``clinical-mlops audit ...``: verify, show, prove, export, checkpoint, purge and migrate the ledger."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    err_console,
    out_console,
    print_json,
    workspace_from,
)
from clinical_mlops.errors import BundleInvalid

if TYPE_CHECKING:
    from clinical_mlops.application.services import Services
    from clinical_mlops.ledger import Ledger

audit_app = typer.Typer(
    help="The tamper-evident audit ledger: verify, show, prove, export, checkpoint, purge, "
    "migrate; check a FHIR Provenance.",
    no_args_is_help=True,
)

ActorOption = Annotated[
    str,
    typer.Option("--actor", help="Who does this (default: $CLINICAL_MLOPS_ACTOR or $USER)."),
]


def default_actor() -> str:
    return os.environ.get("CLINICAL_MLOPS_ACTOR") or os.environ.get("USER") or "cli"


@contextmanager
def _services(workspace: Path | None, *, create: bool = False) -> Iterator[Services]:
    """Yield the workspace's stores; the ledger must exist unless ``create``."""
    from clinical_mlops.application.services import Services

    with Services.open(workspace_from(workspace), create=create) as services:
        yield services


@contextmanager
def _open(workspace: Path | None, *, create: bool = False) -> Iterator[Ledger]:
    """Yield the workspace's ledger, for reading (verify, show, prove)."""
    with _services(workspace, create=create) as services:
        yield services.ledger


def _print_report(report_json: dict, *, title: str) -> None:
    status = "[green]OK[/]" if report_json["ok"] else "[bold red]FAILED[/]"
    err_console.print(
        f"{title}: {status} — {report_json['entries']} entries, "
        f"{report_json['checkpoints']} checkpoints verified, "
        f"first bad seq: {report_json['first_bad_seq']}"
    )
    for problem in report_json["problems"][:20]:
        err_console.print(
            f"  [{problem['check']}] {problem['message']}", highlight=False, markup=False
        )


@audit_app.command("verify")
def verify(
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Verify an exported audit bundle instead, against the keys pinned with "
            "--public-key or else the workspace ledger's signing keys; needs no database.",
        ),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint", help="A checkpoint JSON file held outside the ledger (repeatable)."
        ),
    ] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key",
            help="Trust this ledger public key, KEY_ID=HEX from the ledger's owner (with --bundle).",
        ),
    ] = None,
    thorough: Annotated[
        bool,
        typer.Option(
            "--thorough", help="Check every entry signature, not only where no checkpoint vouches."
        ),
    ] = False,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            "--witness",
            help="A witness (URL, its state directory, or a file holding a cosigned "
            "checkpoint) whose latest checkpoint the ledger must agree with (repeatable).",
        ),
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key",
            help="A witness's cosigning vkey (NAME+ID+KEY), obtained from it out of band "
            "(repeatable).",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify leaves, tree, signatures and checkpoints; exit 1 when anything is wrong.

    With --witness, also detects a tail cut after the newest local checkpoint and a
    rollback of the database together with its checkpoint log.
    """
    from clinical_mlops.ledger.entries import Checkpoint

    if bundle is not None:
        from clinical_mlops.application.audit import verify_bundle, workspace_keys
        from clinical_mlops.ledger.export import load_bundle

        pins = {}
        for item in public_key or []:
            kid, sep, value = item.partition("=")
            if not sep:
                raise BundleInvalid(f"--public-key {item!r}: expected KEY_ID=HEX")
            pins[kid] = value
        data = load_bundle(bundle)
        report = verify_bundle(
            data,
            pinned=pins,
            ledger_keys=None if pins else workspace_keys(workspace),
        )
        title = f"bundle {bundle}"
    else:
        trusted = []
        for path in checkpoint or []:
            try:
                trusted.append(Checkpoint.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BundleInvalid(f"{path}: not a checkpoint JSON file ({exc})") from None
        from clinical_mlops.application.witness import verify_with_witnesses

        with _open(workspace) as ledger:
            report = verify_with_witnesses(
                ledger,
                witnesses=witness or [],
                witness_keys=witness_key or [],
                trusted=trusted,
                thorough=thorough,
            )
        title = "ledger"
    out = report.to_json()
    if as_json:
        print_json(out)
    else:
        _print_report(out, title=title)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("provenance")
def provenance(
    file: Annotated[
        Path, typer.Argument(help="A FHIR Provenance, or a Bundle holding one (JSON).")
    ],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a prediction's FHIR Provenance against the ledger; exit 1 naming what differs.

    Compares the audit record it names (exists, an inference record, entry hash), the
    release, model version and bundle hash of its Device, and its target. Exit 0 when
    all agree, 1 on any mismatch, 2 when the file is not a Provenance.
    """
    from clinical_mlops.application.audit import check_provenance
    from clinical_mlops.errors import DocumentInvalid

    with _services(workspace) as services:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DocumentInvalid(
                str(file), "FHIR Provenance (or Bundle holding one)", [("(file)", str(exc))]
            ) from None
        result = check_provenance(services, document, source=str(file))
    out = result.to_json()
    if as_json:
        print_json(out)
    else:
        table = CliTable("check", "ledger", "provenance", "")
        for what, expected, found, agrees in result.checks:
            table.add_row(what, expected, found, "ok" if agrees else "DIFFERS")
        out_console.print(table)
        status = "[green]VALID[/]" if result.ok else "[bold red]MISMATCH[/]"
        err_console.print(f"Provenance of audit record {result.seq}: {status}")
        for line in result.mismatches:
            err_console.print(f"  {line}", highlight=False, markup=False)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def show(
    seq: Annotated[int, typer.Argument(help="Sequence number of the entry.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one entry with its payload decrypted (or marked erased / purged)."""
    with _open(workspace) as ledger:
        view = ledger.read(seq).to_json()
    if as_json:
        print_json(view)
        return
    table = CliTable(show_header=False)
    for key in ("seq", "time", "type", "schema", "actor", "subject", "payload_status"):
        table.add_row(key, str(view[key]))
    table.add_row("payload", json.dumps(view["payload"], indent=1, sort_keys=True))
    out_console.print(table)


@audit_app.command("prove")
def prove(
    seq: Annotated[int | None, typer.Argument(help="Entry to prove (inclusion proof).")] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Tree size to prove against (default: latest checkpoint)."),
    ] = None,
    old: Annotated[
        int | None, typer.Option("--from", help="Consistency proof: the older tree size.")
    ] = None,
    new: Annotated[
        int | None, typer.Option("--to", help="Consistency proof: the newer tree size.")
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Print an inclusion proof (SEQ) or a consistency proof (--from M --to N) as JSON."""
    with _open(workspace) as ledger:
        if seq is not None:
            print_json(ledger.inclusion_proof(seq, size=size))
        elif old is not None and new is not None:
            print_json(ledger.consistency_proof(old, new))
        else:
            raise typer.BadParameter("give SEQ, or --from M --to N")


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle file to write.")],
    start: Annotated[int, typer.Option("--from", help="First seq to export.")] = 0,
    end: Annotated[
        int | None, typer.Option("--to", help="One past the last seq (default: all).")
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            "--since-checkpoint", help="Add a consistency proof from this earlier checkpoint size."
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export entries, proofs, a fresh checkpoint and the public keys as one file."""
    from clinical_mlops.application.audit import export_audit_bundle

    with _services(workspace) as services:
        bundle = export_audit_bundle(services, out, start=start, end=end, since=since)
    summary = {
        "bundle": str(out),
        "entries": len(bundle["entries"]),
        "checkpoint": bundle["checkpoint"],
        "public_keys": bundle["public_keys"],
    }
    if as_json:
        print_json(summary)
    else:
        err_console.print(
            f"wrote {out}: {summary['entries']} entries against checkpoint of size "
            f"{bundle['checkpoint']['size']}"
        )


@audit_app.command("checkpoint")
def checkpoint(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Also write the checkpoint JSON here (to hand to an auditor)."
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make (or return) a signed checkpoint of the ledger as it stands now."""
    from clinical_mlops.application.audit import make_checkpoint

    with _services(workspace) as services:
        cp = make_checkpoint(services, out)
    if as_json:
        print_json(cp)
    else:
        err_console.print(f"checkpoint: size {cp['size']}, root {cp['root']}, time {cp['time']}")
        out_console.print(cp["note"], end="", highlight=False, markup=False)
        err_console.print(f"ledger key (vkey, for witnesses): {cp['vkey']}", highlight=False)
        for outcome in cp["witnesses"]:
            err_console.print(
                f"witness {outcome['witness']}: {outcome['status']}"
                + (f" ({outcome['reason']})" if outcome.get("reason") else ""),
                highlight=False,
                markup=False,
            )


@audit_app.command("migrate")
def migrate(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Index the ledger's unique keys (request ids, decisions, outcomes) if not done yet.

    A ledger written before unique keys were enforced by the store is indexed once —
    by this command, or by the service when it starts — and keys already held twice
    are listed: the earlier entry keeps the key, the later ones stay as written.
    """
    from clinical_mlops.application.audit import index_unique_keys

    with _services(workspace) as services:
        index = index_unique_keys(services)
    if as_json:
        print_json(index.to_json())
    else:
        done = "built now" if index.built_now else "already built"
        err_console.print(f"{done}: {index.report_text()}", highlight=False, markup=False)


@audit_app.command("purge")
def purge(
    retention: Annotated[
        list[str], typer.Option("--retention", help="TYPE=DAYS retention period (repeatable).")
    ],
    actor: ActorOption = "",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove payloads past their retention period, as an audited purge entry."""
    from clinical_mlops.application.audit import purge_payloads

    days: dict[str, float] = {}
    for item in retention:
        entry_type, sep, value = item.partition("=")
        try:
            days[entry_type] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"--retention {item!r}: expected TYPE=DAYS")
    with _services(workspace) as services:
        try:
            result = purge_payloads(services, days=days, actor=actor or default_actor())
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--retention") from None
    if as_json:
        print_json(result.to_json())
    else:
        err_console.print(f"purged {result.purged} payloads; audit entry {result.seq}")


@audit_app.command("replay")
def replay(
    seq: Annotated[int, typer.Argument(help="Sequence number of an inference record.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute one past prediction from the bundle it names and show whether it is identical.

    Decrypts the record's inputs, loads the exact release bundle it was served by
    (verified as of the inference time) and recomputes probability, conformal set,
    flags and contributions bit for bit; exit code 1 when anything differs.
    """
    from clinical_mlops.serving.replay import replay_inference

    result = replay_inference(workspace_from(workspace), seq)
    if as_json:
        print_json(result.to_json())
    else:
        words = {
            "identical": "[green]identical[/]",
            "different": "[bold red]DIFFERENT[/]",
            "erased": "[yellow]not replayable: erased[/]",
            "purged": "[yellow]not replayable: purged[/]",
        }
        out_console.print(
            f"inference {seq}: {words[result.status]} — release {result.release}, model "
            f"{result.model_version}; compared {', '.join(result.compared) or 'nothing'}",
            highlight=False,
        )
        for diff in result.differences:
            out_console.print(
                f"  {diff['field']}: stored {diff['stored']!r} != recomputed {diff['recomputed']!r}",
                highlight=False,
                markup=False,
            )
        err_console.print(result.reason, highlight=False)
    if result.status == "different":
        raise typer.Exit(1)
