"""``clinical-mlops registry``, ``review`` and ``incident``: one library call per command.

A governed act (approve, reject, promote, suspend, resume, rollback, retire, acknowledge a
risk, a review, an incident step, registering a key) is made ``--as`` a person and proven
by their registered SSH Ed25519 key: ``--key`` signs a statement of exactly that act, or
``--signature`` presents one signed elsewhere (``--print-statement`` prints it). ``--as``
without proof is refused; the library verifies the proof before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clinical_mlops.cli._common import (
    CliTable,
    JsonOption,
    WorkspaceOption,
    current_actor,
    out_console,
    print_json,
    workspace_from,
)

if TYPE_CHECKING:
    from clinical_mlops.application.governance import Proof
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.registry.registry import Registry

__all__ = [
    "KeyOption",
    "PrintStatementOption",
    "SignatureOption",
    "StatementOption",
    "act_proof",
    "incident_app",
    "registry_app",
    "review_app",
]

registry_app = typer.Typer(
    help="Release bundles, statuses, gates, approvals, rollout and rollback.",
    no_args_is_help=True,
)
review_app = typer.Typer(
    help="Periodic reviews of releases in service (R-H3).", no_args_is_help=True
)
incident_app = typer.Typer(
    help="Incidents: open, contain, communicate, resolve (R-H4).", no_args_is_help=True
)

VersionArg = Annotated[str, typer.Argument(help="Release version (task@n) or bundle hash prefix.")]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Who acts (default: $CLINICAL_MLOPS_ACTOR or the login name).",
        show_default=False,
    ),
]
RoleOption = Annotated[
    str | None, typer.Option("--role", help="Role to act in (clinical, compliance, engineering).")
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Your SSH Ed25519 private key (registered with `registry person key add`): "
        "signs a statement of exactly this act, verified before it is recorded.",
        show_default=False,
    ),
]
SignatureOption = Annotated[
    Path | None,
    typer.Option(
        "--signature",
        help="A signature of this act's statement made elsewhere, e.g. with a hardware key: "
        "`ssh-keygen -Y sign -n clinical-mlops -f KEY STATEMENT` (see --print-statement).",
        show_default=False,
    ),
]
StatementOption = Annotated[
    Path | None,
    typer.Option(
        "--statement",
        help="The statement file --signature signs (default: the signature path without .sig).",
        show_default=False,
    ),
]
PrintStatementOption = Annotated[
    bool,
    typer.Option(
        "--print-statement",
        help="Print the statement of this act to sign elsewhere (valid 15 minutes); "
        "records nothing.",
    ),
]
WhyOption = Annotated[str, typer.Option("--why", help="Reason, recorded in the audit ledger.")]
RequiredWhy = Annotated[
    str | None,
    typer.Option(
        "--why", help="Reason, recorded in the audit ledger (required).", show_default=False
    ),
]


@contextmanager
def _open(workspace: Path | None) -> Iterator[Registry]:
    """Yield the workspace's registry, closed when the command ends."""
    from clinical_mlops.application.services import Services

    with Services.open(workspace_from(workspace)) as services:
        yield services.registry


@contextmanager
def _governance(workspace: Path | None) -> Iterator[Governance]:
    """Yield the governance of the workspace's registry (one ledger for the command)."""
    from clinical_mlops.application.services import Services

    with Services.open(workspace_from(workspace)) as services:
        yield services.governance


def _actor(actor: str | None) -> str:
    return actor or current_actor()


def act_proof(
    person: str, key: Path | None, signature: Path | None, statement: Path | None
) -> Proof:
    """Return the proof the command line offers that ``person`` makes the act."""
    from clinical_mlops.errors import IdentityRefused
    from clinical_mlops.governance.proof import SignedStatement, SigningKey

    if key is not None and signature is not None:
        raise IdentityRefused("key, signature: give one proof, --key or --signature, not both")
    if key is not None:
        return SigningKey(key)
    if signature is not None:
        text = statement or (signature.with_suffix("") if signature.suffix == ".sig" else signature)
        if text == signature:
            raise IdentityRefused(
                "statement: name the signed statement file with --statement (the signature "
                "file does not end in .sig)"
            )
        return SignedStatement(statement=text.read_bytes(), signature=signature.read_text())
    raise IdentityRefused(
        f"--as {person}: a governed act on the command line needs proof that {person!r} makes "
        "it: --key PATH (their SSH Ed25519 private key, registered with `clinical-mlops "
        "registry person key add`) or --signature FILE (a signature of the statement "
        "--print-statement prints); nothing was recorded"
    )


@contextmanager
def _act(
    workspace: Path | None,
    action: str,
    *,
    person: str,
    key: Path | None,
    signature: Path | None,
    statement: Path | None,
    print_statement: bool,
    **fields: Any,
) -> Iterator[tuple[Governance, Proof] | None]:
    """Yield the governance and the proof of one act, or None once its statement is printed."""
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        if print_statement:
            text = act.statement_of(gov, action, person=person, **fields).decode("utf-8")
            print(text, end="")
            yield None
            return
        yield gov, act_proof(person, key, signature, statement)


def _emit(obj: Any, as_json: bool, line: str) -> None:
    if as_json:
        print_json(obj)
    else:
        out_console.print(line, highlight=False)


@registry_app.command("bundle", help="Build and sign a release bundle from a trained model.")
def bundle_cmd(
    model_version: Annotated[str, typer.Argument(help="Trained model version (or prefix).")],
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Operating threshold (default: the task spec's)."),
    ] = None,
    escalation: Annotated[
        Path | None,
        typer.Option(
            "--escalation",
            help=(
                "YAML file with the escalation policy (a task spec's escalation: block; "
                "default: the task spec's)."
            ),
            show_default=False,
        ),
    ] = None,
    actor: ActorOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application.releases import build_release_bundle

    b = build_release_bundle(
        workspace_from(workspace),
        model_version=model_version,
        author=_actor(actor),
        threshold=threshold,
        escalation=escalation,
    )
    policy = b.deployment["escalation"]
    _emit(
        {
            "path": str(b.path),
            "sha256": b.sha256,
            "model_version": b.model_version,
            "threshold": b.threshold,
            "escalation": policy,
        },
        json_,
        f"bundle {b.sha256[:12]} at {b.path}\nescalation: {policy['statement']}",
    )


@registry_app.command(
    "recalibrate",
    help="Refit a release's calibration at one site, as a new release of the task.",
)
def recalibrate_cmd(
    version: VersionArg,
    site: Annotated[
        str,
        typer.Option("--site", help="The site to recalibrate for (as the snapshot records it)."),
    ],
    on: Annotated[
        str,
        typer.Option(
            "--on", help="Snapshot id (or prefix) holding the site's stays.", show_default=False
        ),
    ],
    method: Annotated[
        str, typer.Option("--method", help="isotonic, or logistic (Platt scaling).")
    ] = "isotonic",
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the split and bootstrap (default: the release's)."),
    ] = None,
    n_boot: Annotated[
        int | None,
        typer.Option(
            "--n-boot", help="Bootstrap resamples of the report (default: the release's)."
        ),
    ] = None,
    why: Annotated[
        str | None,
        typer.Option("--why", help="Reason, recorded with the registration.", show_default=False),
    ] = None,
    actor: ActorOption = None,
    role: RoleOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Refit the calibrator and conformal sets of a release on one site's stays.

    The scoring model is unchanged. The site's stays of the snapshot's training period
    fit the calibration; its test-period stays are held out and the new release's
    validation report is computed on them. The new release is a draft, scoped to the
    site, classed against its parent (clinical-impacting), and goes through its own
    gates and approvals. Refused, with nothing written, on fewer outcomes than the task
    spec's acceptance.min_recalibration_events, an unknown site or method, or a
    snapshot of another task or feature contract.
    """
    from clinical_mlops.application.recalibration import recalibrate_release

    with _governance(workspace) as gov:
        result = recalibrate_release(
            gov,
            version,
            site=site,
            snapshot=on,
            method=method,
            actor=_actor(actor),
            why=why,
            role=role,
            seed=seed,
            n_boot=n_boot,
        )
    body = result.to_json()
    if json_:
        print_json(body)
        return
    held = body["split"]["counts"]["held_out"]
    years = body["split"]["held_out_years"]
    out_console.print(
        f"[bold]{body['release']}[/] ({body['status']}): {body['method']} recalibration of "
        f"{body['parent']} at site {body['site']}; change {body['change_class']}",
        highlight=False,
    )
    for note in body["change"]["notes"]:
        out_console.print(f"- {note}", highlight=False, markup=False)
    before, after = (
        body["calibration_on_held_out"]["parent"],
        body["calibration_on_held_out"]["recalibrated"],
    )
    out_console.print(
        f"calibration on {held['stays']} held-out stays of site {body['site']} "
        f"({years[0]}-{years[1]}, {held['events']} events):",
        highlight=False,
    )
    table = CliTable("figure", f"before ({body['parent']})", f"after ({body['release']})")
    rows = (
        ("observed rate", "observed_rate"),
        ("mean predicted risk", "mean_predicted"),
        ("calibration intercept (0 ideal)", "intercept"),
        ("calibration slope (1 ideal)", "slope"),
        ("ECE", "ece"),
        ("Brier", "brier"),
    )
    for label, key in rows:
        table.add_row(label, f"{before[key]:.3f}", f"{after[key]:.3f}")
    out_console.print(table)
    out_console.print(
        f"next: `clinical-mlops registry validate {body['release']}`, approvals, then roll it "
        f"out at site {body['site']} only",
        highlight=False,
        markup=False,
    )


@registry_app.command("register", help="Register a signed bundle folder as a draft release.")
def register_cmd(
    path: Annotated[Path, typer.Argument(help="Bundle folder or .tar.gz export.")],
    why: WhyOption = "new release",
    actor: ActorOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application.releases import register_bundle

    with _governance(workspace) as gov:
        rel = register_bundle(gov, path, actor=_actor(actor), why=why)
    _emit(rel.to_json() | {"change": rel.change}, json_, f"registered {rel.version} ({rel.status})")


@registry_app.command("list", help="List releases with status.")
def list_cmd(json_: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    with _open(workspace) as reg:
        rels = [r.to_json() for r in reg.list()]
    if json_:
        print_json({"releases": rels})
        return
    table = CliTable("version", "status", "threshold", "change", "sha256")
    for r in rels:
        table.add_row(
            r["version"],
            r["status"],
            f"{r['threshold']:.2f}",
            str(r["change_class"]),
            r["sha256"][:12],
        )
    out_console.print(table)


def _per_100(workload: dict[str, Any], what: str) -> str:
    """Return "4.2 (95 % CI 3.1-5.4)" for ``what`` per 100, or "not stated"."""
    value, ci = workload[f"{what}_per_100"], workload[f"{what}_per_100_ci"]
    if not isinstance(value, int | float):
        return "not stated"
    if isinstance(ci, list) and all(isinstance(v, int | float) for v in ci):
        return f"{value:.1f} (95 % CI {ci[0]:.1f}-{ci[1]:.1f})"
    return f"{value:.1f}"


@registry_app.command("show", help="Show a release: status, sha256, lineage, gates, approvals.")
def show_cmd(
    version: VersionArg, json_: JsonOption = False, workspace: WorkspaceOption = None
) -> None:
    with _governance(workspace) as gov:
        shown = gov.show(version)
    if json_:
        print_json(shown)
        return
    out_console.print(f"[bold]{shown['version']}[/] {shown['status']}  sha256 {shown['sha256']}")
    w = shown["workload"]
    out_console.print(
        f"  at threshold {w['threshold']:.2f}: {_per_100(w, 'alerts')} alerts and "
        f"{_per_100(w, 'reviews')} clinician reviews per 100 test stays"
    )
    if w["policy"]:
        out_console.print(f"  escalation: {w['policy']}", highlight=False)
    for name, g in shown["gates"].items():
        out_console.print(
            f"  gate {name}: {'passed' if g['passed'] else 'FAILED ' + '; '.join(g['failures'])}"
        )
    for r in shown["risks"]:
        a = r["acknowledgement"]
        state = f"acknowledged by {a['actor']} ({a['role']}): {a['reason']}" if a else "OPEN"
        out_console.print(f"  risk {r['id']}: {state}", highlight=False, markup=False)
    for a in shown["approvals"]:
        out_console.print(f"  {a['decision']} by {a['person']} ({a['role']}): {a['why']}")
    for x in shown["external_validations"]:
        auroc = x["auroc"]
        measured = f"AUROC {auroc:.3f}" if isinstance(auroc, int | float) else "AUROC not measured"
        out_console.print(
            f"  external validation {x['id']}: snapshot {x['snapshot_id'][:12]}, site(s) "
            f"{', '.join(x['sites'])}, {x['years'][0]}-{x['years'][1]}, n={x['n']}, "
            f"{measured} (development {x['development_auroc']:.3f}); {x['path']}/report.html",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@registry_app.command(
    "card", help="Print a release's model card with its status and approvals as of now."
)
def card_cmd(
    version: VersionArg,
    fmt: Annotated[
        str, typer.Option("--format", help="md (Markdown) or html (one self-contained page).")
    ] = "md",
    workspace: WorkspaceOption = None,
) -> None:
    """Print the signed model card of a release, opened by a "Status as of" section.

    The section is read from the registry now: status, each decision (who, role, when,
    why) and each acknowledged risk. It is dated, because it is only as current as its
    date; the signed card in the bundle carries no status. Redirect to keep a copy
    (``> card.html``).
    """
    from clinical_mlops.application.releases import model_card

    with _governance(workspace) as gov:
        text = model_card(gov, version, fmt=fmt)
    typer.echo(text, nl=False)


@registry_app.command("diff", help="Classify the changes between two releases, with release notes.")
def diff_cmd(
    old: Annotated[str, typer.Argument(help="The approved (earlier) release.")],
    new: Annotated[str, typer.Argument(help="The candidate release.")],
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.registry.changes import classify_change

    with _open(workspace) as reg:
        report = classify_change(reg.bundle(old), reg.bundle(new)).to_json()
    _emit(
        report, json_, f"{report['change_class']}\n" + "\n".join(f"- {n}" for n in report["notes"])
    )


@registry_app.command("validate", help="Run gates 1-3 and record their evidence.")
def validate_cmd(
    version: VersionArg,
    actor: ActorOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        results = act.validate(gov, version, actor=_actor(actor))
    _emit(
        {n: r.to_json() for n, r in results.items()},
        json_,
        "\n".join(
            f"gate {n}: {'passed' if r.passed else 'FAILED ' + '; '.join(r.failures)}"
            for n, r in results.items()
        ),
    )


@registry_app.command("risks", help="List the risks a release carries and who acknowledged them.")
def risks_cmd(
    version: VersionArg, json_: JsonOption = False, workspace: WorkspaceOption = None
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        risks = act.release_risks(gov, version)
    if json_:
        print_json({"release": version, "risks": risks})
        return
    if not risks:
        out_console.print(f"{version}: no risk to acknowledge", highlight=False)
        return
    table = CliTable("risk", "observed", "limit", "acknowledged by", "reason")
    for r in risks:
        a = r["acknowledgement"]
        table.add_row(
            r["id"],
            f"{r['observed']:.3f}",
            f"{r['limit']:.3f}",
            f"{a['actor']} ({a['role']})" if a else "OPEN",
            a["reason"] if a else r["words"],
        )
    out_console.print(table)


@registry_app.command(
    "acknowledge",
    help="Acknowledge a validation risk of a release with a reason (clinical or compliance).",
)
def acknowledge_cmd(
    version: VersionArg,
    risk: Annotated[
        str,
        typer.Option("--risk", help="Risk id, as `registry risks` lists it.", show_default=False),
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            help="Why the release may go ahead despite the risk (required; recorded in the "
            "audit ledger and shown on the model card).",
            show_default=False,
        ),
    ] = None,
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "acknowledge_risk",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        risk=risk,
        role=role,
        why=reason,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        ack = act.acknowledge_risk(
            gov, version, risk=risk, actor=person, reason=reason, role=role, identity=proof
        )
    _emit(
        ack.to_json(),
        json_,
        f"{ack.risk} of {ack.release} acknowledged by {ack.actor} ({ack.role}); "
        f"audit record {ack.seq}",
    )


@registry_app.command("promote", help="Move a release one step along the lifecycle.")
def promote_cmd(
    version: VersionArg,
    why: WhyOption = "promotion",
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "promote",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        rel = act.promote(gov, version, actor=person, why=why, role=role, identity=proof)
    _emit(rel.to_json(), json_, f"{rel.version} is now {rel.status}")


def _decide(
    version: str,
    decision: str,
    role: str,
    why: str,
    actor: str | None,
    proof_files: tuple[Path | None, Path | None, Path | None, bool],
    as_json: bool,
    workspace: Path | None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    key, signature, statement, print_statement = proof_files
    with _act(
        workspace,
        decision,
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        a = (act.approve if decision == "approve" else act.reject)(
            gov, version, person=person, role=role, why=why, identity=proof
        )
    _emit(a.to_json() | {"release": version}, as_json, f"{a.decision} by {a.person} as {a.role}")


@registry_app.command("approve", help="Approve a release in your role (gate 4).")
def approve_cmd(
    version: VersionArg,
    role: Annotated[str, typer.Option("--role", help="clinical, compliance or engineering.")],
    why: WhyOption = "approved",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    proof_files = (key, signature, statement, print_statement)
    _decide(version, "approve", role, why, actor, proof_files, json_, workspace)


@registry_app.command("reject", help="Reject a release in your role (blocks gate 4).")
def reject_cmd(
    version: VersionArg,
    role: Annotated[str, typer.Option("--role", help="clinical, compliance or engineering.")],
    why: WhyOption = "rejected",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    proof_files = (key, signature, statement, print_statement)
    _decide(version, "reject", role, why, actor, proof_files, json_, workspace)


@registry_app.command("rollback", help="Make an earlier approved release active again.")
def rollback_cmd(
    version: VersionArg,
    why: RequiredWhy = None,
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "rollback",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        rel = act.rollback(gov, version, actor=person, why=why, role=role, identity=proof)
    _emit(rel.to_json(), json_, f"{rel.version} is active again")


@registry_app.command("suspend", help="Suspend a live release.")
def suspend_cmd(
    version: VersionArg,
    why: RequiredWhy = None,
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "suspend",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        rel = act.suspend(gov, version, actor=person, why=why, role=role, identity=proof)
    _emit(rel.to_json(), json_, f"{rel.version} is suspended")


@registry_app.command("resume", help="Return a suspended release to its previous status.")
def resume_cmd(
    version: VersionArg,
    why: RequiredWhy = None,
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "resume",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        rel = act.resume(gov, version, actor=person, why=why, identity=proof)
    _emit(rel.to_json(), json_, f"{rel.version} is {rel.status}")


@registry_app.command("retire", help="Retire a release (kept for audit, never served).")
def retire_cmd(
    version: VersionArg,
    why: WhyOption = "retired",
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "retire",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        rel = act.retire(gov, version, actor=person, why=why, role=role, identity=proof)
    _emit(rel.to_json(), json_, f"{rel.version} is retired")


@registry_app.command(
    "rollout",
    help=(
        "Serve a release at a site in pilot or full mode; shadow or silent starts a trial "
        "beside the live release there (see `registry trial`)."
    ),
)
def rollout_cmd(
    version: VersionArg,
    site: Annotated[
        str, typer.Option("--site", help="Site name ('*' = all sites, full mode only).")
    ],
    mode: Annotated[str, typer.Option("--mode", help="shadow, silent, pilot or full.")],
    why: WhyOption = "rollout",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "set_rollout",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        site=site,
        mode=mode,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        manifest = act.set_rollout(
            gov, version, site=site, mode=mode, actor=person, why=why, identity=proof
        )
    _emit(manifest, json_, f"{version} runs in {mode} mode at {site}")


@registry_app.command(
    "trial-end", help="End a release's silent or shadow trial at a site (a reason is recorded)."
)
def trial_end_cmd(
    version: VersionArg,
    site: Annotated[str, typer.Option("--site", help="The site the trial runs at.")],
    why: RequiredWhy = None,
    actor: ActorOption = None,
    role: RoleOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import trials

    person = _actor(actor)
    with _act(
        workspace,
        "end_trial",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        site=site,
        role=role,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        ended = trials.end_trial(
            gov, version, site=site, actor=person, why=why, role=role, identity=proof
        )
    _emit(ended, json_, f"the {ended['mode']} trial of {version} at {site} ended")


def _figure(value: Any, digits: int = 3) -> str:
    """Return "0.812 (0.770-0.850)" for a value with a CI, a number, or the text as it is."""
    if isinstance(value, dict):
        lo, hi = value.get("ci") or (None, None)
        ci = f" ({lo:.{digits}f}-{hi:.{digits}f})" if lo is not None and hi is not None else ""
        return f"{value['value']:.{digits}f}{ci}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


@registry_app.command(
    "trial",
    help=(
        "Write a release's trial dossier: candidate vs live vs outcomes per site, "
        "ending in a go/no-go summary (JSON and HTML with --out)."
    ),
)
def trial_cmd(
    version: VersionArg,
    site: Annotated[str | None, typer.Option("--site", help="Only this site.")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Read the ledger up to this UTC time (ISO 8601; default now)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write the JSON and HTML dossier to.")
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import trials

    with _governance(workspace) as gov:
        d = trials.write_dossier(gov, version, as_of=as_of, site=site, out=out)
    if json_:
        print_json(d)
        return
    out_console.print(
        f"[bold]{d['release']}[/] trial dossier as of {d['as_of']}: {d['summary']['decision']}",
        highlight=False,
    )
    table = CliTable(
        "site",
        "modes",
        "n",
        "outcomes",
        "candidate AUROC",
        "live AUROC",
        "reviews/100 cand.",
        "reviews/100 live",
        "verdict",
    )
    for s in d["sites"]:
        c, lv = s["candidate"], s["live"] or {}
        table.add_row(
            s["site"],
            ",".join(s["modes"]),
            str(s["n_candidate"]),
            str(c["n_outcomes"]),
            _figure(c["auroc"]),
            _figure(lv.get("auroc")),
            _figure(c["reviews_per_100"], 1),
            _figure(lv.get("reviews_per_100"), 1),
            s["verdict"]["decision"],
        )
    out_console.print(table)
    for s in d["sites"]:
        for r in s["verdict"]["rules"]:
            out_console.print(
                f"  {s['site']}: {r['verdict']}: {r['rule']}", highlight=False, markup=False
            )
    for kind, path in d.get("written", {}).items():
        out_console.print(f"wrote {kind}: {path}", highlight=False)


@registry_app.command("grant", help="Grant governance roles to a person (compliance only).")
def grant_cmd(
    person: Annotated[str, typer.Argument(help="The person's name.")],
    role: Annotated[list[str], typer.Option("--role", help="Role to grant (repeatable).")],
    why: WhyOption = "role granted",
    actor: ActorOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        roles = act.grant_roles(gov, person, roles=role, actor=_actor(actor), why=why)
    _emit({"person": person, "roles": roles}, json_, f"{person}: {', '.join(roles)}")


person_app = typer.Typer(help="People and the keys that prove their acts.", no_args_is_help=True)
key_app = typer.Typer(
    help="SSH Ed25519 public keys that prove a person's command-line acts (one key, one person).",
    no_args_is_help=True,
)
person_app.add_typer(key_app, name="key")
registry_app.add_typer(person_app, name="person")


@key_app.command(
    "add",
    help="Register a person's SSH Ed25519 public key (compliance; the first key in a "
    "workspace is a compliance person's own, signed with it).",
)
def key_add_cmd(
    person: Annotated[str, typer.Argument(help="Whose key it is (a person holding a role).")],
    public_key: Annotated[
        Path,
        typer.Option(
            "--public-key",
            help="Their public key file, e.g. ~/.ssh/id_ed25519.pub.",
            show_default=False,
        ),
    ],
    why: WhyOption = "key registered",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    by = _actor(actor)
    line = public_key.read_text()
    with _act(
        workspace,
        "add_key",
        person=by,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        key_for=person,
        public_key=" ".join(line.split()[:2]),
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        added = act.add_key(gov, person, public_key=line, actor=by, why=why, identity=proof)
    _emit(added, json_, f"{person}: key {added['fingerprint']} registered")


@key_app.command("list", help="List the registered keys (of one person, or everyone's).")
def key_list_cmd(
    person: Annotated[str | None, typer.Argument(help="Whose keys (default: everyone's).")] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        rows = act.keys(gov, person)
    if json_:
        print_json({"keys": rows})
        return
    table = CliTable("person", "fingerprint", "added", "added by")
    for r in rows:
        table.add_row(r["person"], r["fingerprint"], r["added"], r["added_by"])
    out_console.print(table)


@registry_app.command("export", help="Export a release's bundle as a .tar.gz.")
def export_cmd(
    version: VersionArg,
    out: Annotated[Path, typer.Option("--out", help="Destination file or folder.")] = Path("."),
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.registry.bundle import export_bundle

    with _open(workspace) as reg:
        path = export_bundle(reg.bundle(version), out)
    _emit({"path": str(path)}, json_, f"wrote {path}")


@registry_app.command("ops", help="Operations metrics from the ledger (R-L9).")
def ops_cmd(json_: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    from clinical_mlops.governance.operations import operations_metrics

    m = operations_metrics(workspace_from(workspace))
    _emit(m, json_, "\n".join(f"{k}: {v}" for k, v in m.items()))


# -- reviews -----------------------------------------------------------------------------------


def _fig(value: Any, fmt: str = ".3f") -> str:
    """Return a pack figure as a table cell: the number, "insufficient" or "-"."""
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int | float):
        return format(value, fmt)
    return "insufficient" if str(value).startswith("insufficient data") else str(value)


def _max_gap(gaps: dict[str, Any]) -> str:
    numbers = {a: g for a, g in gaps.items() if isinstance(g, int | float)}
    if not numbers:
        return "insufficient" if gaps else "-"
    attr = max(numbers, key=lambda a: numbers[a])
    return f"{numbers[attr]:.3f} {attr}"


def _print_pack(pack: dict[str, Any]) -> None:
    """Print the live review pack: one row per site, live beside validation, then the checklist."""
    table = CliTable(
        title=f"live review of {pack['release']}: {pack['since']} ({pack['since_what']}) "
        f"to {pack['as_of']}"
    )
    for col in (
        "Site",
        "Scored",
        "Outcomes (events)",
        "AUROC live [95% CI]",
        "AUROC valid.",
        "ECE live / valid.",
        "CITL / slope live",
        "Alerts/100 live / valid.",
        "Reviews/100 live / valid.",
        "Override rate",
        "Max subgroup gap live / valid.",
    ):
        table.add_column(col)
    notes: list[str] = []
    for r in pack["sites"]:
        v = r["validation"]
        ci = r["auroc_ci"]
        live_auroc = _fig(r["auroc"])
        if isinstance(ci, list) and all(isinstance(x, float) for x in ci):
            live_auroc += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        gaps = {a: s["gap"] for a, s in r["subgroups"].items()}
        table.add_row(
            r["site"],
            str(r["n_scored"]),
            f"{r['n_outcomes']} ({r['n_positive']})",
            live_auroc,
            _fig(v["auroc"]),
            f"{_fig(r['ece'])} / {_fig(v['ece'])}",
            f"{_fig(r['calibration_in_the_large'], '+.2f')} / {_fig(r['calibration_slope'], '.2f')}",
            f"{_fig(r['alerts_per_100'], '.1f')} / {_fig(v['alerts_per_100'], '.1f')}",
            f"{_fig(r['reviews_per_100'], '.1f')} / {_fig(v['reviews_per_100'], '.1f')}",
            _fig(r["override_rate"], ".1%"),
            f"{_max_gap(gaps)} / {_max_gap(v['subgroup_gaps'])}",
        )
        for key in ("auroc", "override_rate"):
            if isinstance(r[key], str):
                notes.append(f"{r['site']}: {key.replace('_', ' ')} {r[key]}")
    out_console.print(table)
    for line in [*notes, *pack["limitations"]]:
        out_console.print(f"  note: {line}", highlight=False)
    for item, c in pack["checklist"].items():
        state = "BREACHED" if c["breached"] else "within limits"
        out_console.print(f"{item}: {state} ({c['evidence']})", highlight=False)
        for finding in c["findings"]:
            out_console.print(f"  - {finding}", highlight=False)


def _as_of(value: str | None) -> Any:
    from datetime import UTC, datetime

    from clinical_mlops.errors import InputInvalid

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputInvalid(
            [("--as-of", f"expected an ISO-8601 time such as 2026-03-02T09:00:00Z, got {value!r}")]
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@review_app.command(
    "pack",
    help="Show the live figures per site since the last review, beside the validation figures.",
)
def review_pack_cmd(
    version: VersionArg,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="End of the review period (ISO-8601; default: now)."),
    ] = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        pack = act.review_pack(gov, version, as_of=_as_of(as_of))
    if json_:
        print_json(pack)
    else:
        _print_pack(pack)


@review_app.command(
    "record",
    help="Record a periodic review against a release and the live figures of its period.",
)
def review_record(
    version: VersionArg,
    calibration: Annotated[str, typer.Option(help="Calibration finding ('ok' or what was found).")],
    fairness: Annotated[str, typer.Option(help="Fairness finding.")],
    incidents: Annotated[str, typer.Option(help="Incidents since the last review.")],
    documentation: Annotated[str, typer.Option(help="Documentation completeness.")],
    outcome: Annotated[
        str, typer.Option(help="continue, continue_with_actions or suspend.")
    ] = "continue",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    checklist = {
        "calibration": calibration,
        "fairness": fairness,
        "incidents": incidents,
        "documentation": documentation,
    }
    person = _actor(actor)
    with _act(
        workspace,
        "record_review",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        outcome=outcome,
        checklist=checklist,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        r = act.record_review(
            gov, version, reviewer=person, checklist=checklist, outcome=outcome, identity=proof
        )
    if json_:
        print_json(r)
        return
    _print_pack(r["pack"])
    out_console.print(
        f"review of {version} recorded: {outcome} (review pack sha256 {r['review_pack_sha256']})",
        highlight=False,
    )


@review_app.command("status", help="Show the review schedule and due date of a release.")
def review_status_cmd(
    version: VersionArg, json_: JsonOption = False, workspace: WorkspaceOption = None
) -> None:
    from clinical_mlops.governance.reviews import review_status

    with _governance(workspace) as gov:
        s = review_status(gov, version)
    _emit(s, json_, f"{version}: due {s['due']}{' (OVERDUE)' if s['overdue'] else ''}")


@review_app.command("overdue", help="List overdue reviews and raise an alert for each.")
def review_overdue_cmd(json_: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    from clinical_mlops.governance.reviews import overdue_reviews

    with _governance(workspace) as gov:
        due = overdue_reviews(gov, actor=current_actor())
    _emit(
        {"overdue": due}, json_, "\n".join(f"{d['version']} due {d['due']}" for d in due) or "none"
    )


@review_app.command("schedule", help="Set the review interval of a task (days; default 90).")
def review_schedule_cmd(
    task: Annotated[str, typer.Argument(help="Task name.")],
    days: Annotated[int, typer.Option("--days", help="Interval in days.")] = 90,
    actor: ActorOption = None,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    with _governance(workspace) as gov:
        n = act.set_review_schedule(gov, task=task, interval_days=days, actor=_actor(actor))
    _emit({"task": task, "interval_days": n}, json_, f"{task}: every {n} days")


# -- incidents ---------------------------------------------------------------------------------


@incident_app.command("open", help="Open an incident on a release with named roles.")
def incident_open(
    version: VersionArg,
    summary: Annotated[str, typer.Option(help="What happened.")],
    lead: Annotated[str, typer.Option(help="Incident lead.")],
    clinical_lead: Annotated[str, typer.Option(help="Clinical lead.")],
    communications_lead: Annotated[str, typer.Option(help="Communications lead.")],
    severity: Annotated[str, typer.Option(help="low, moderate, high or critical.")] = "high",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    roles = {
        "incident_lead": lead,
        "clinical_lead": clinical_lead,
        "communications_lead": communications_lead,
    }
    person = _actor(actor)
    with _act(
        workspace,
        "open_incident",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        release=version,
        summary=summary,
        severity=severity,
        roles=roles,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        inc = act.open_incident(
            gov,
            version,
            actor=person,
            summary=summary,
            severity=severity,
            roles=roles,
            identity=proof,
        )
    _emit(inc, json_, f"opened {inc['id']} on {version}")


@incident_app.command("contain", help="Contain an incident: suspend its release or roll back.")
def incident_contain(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    action: Annotated[str, typer.Option(help="suspend or rollback.")],
    to: Annotated[str | None, typer.Option("--to", help="Release to roll back to.")] = None,
    why: WhyOption = "containment",
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "contain_incident",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        incident=incident_id,
        containment=action,
        rollback_to=to,
        why=why,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        inc = act.contain_incident(
            gov,
            incident_id,
            actor=person,
            action=action,
            why=why,
            rollback_to=to,
            identity=proof,
        )
    _emit(inc, json_, f"{incident_id} contained")


@incident_app.command("step", help="Record a communication or patient-notification step.")
def incident_step(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    kind: Annotated[str, typer.Option(help="communication, patient_notification or note.")],
    detail: Annotated[str, typer.Option(help="What was done (or 'not required: why').")],
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "add_incident_step",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        incident=incident_id,
        kind=kind,
        detail=detail,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        inc = act.add_incident_step(
            gov, incident_id, actor=person, kind=kind, detail=detail, identity=proof
        )
    _emit(inc, json_, f"{incident_id}: {kind} recorded")


@incident_app.command("resolve", help="Resolve a contained incident.")
def incident_resolve(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    root_cause: Annotated[str, typer.Option(help="Root cause and corrective action.")],
    actor: ActorOption = None,
    key: KeyOption = None,
    signature: SignatureOption = None,
    statement: StatementOption = None,
    print_statement: PrintStatementOption = False,
    json_: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from clinical_mlops.application import governance as act

    person = _actor(actor)
    with _act(
        workspace,
        "resolve_incident",
        person=person,
        key=key,
        signature=signature,
        statement=statement,
        print_statement=print_statement,
        incident=incident_id,
        root_cause=root_cause,
    ) as ready:
        if ready is None:
            return
        gov, proof = ready
        inc = act.resolve_incident(
            gov, incident_id, actor=person, root_cause=root_cause, identity=proof
        )
    _emit(inc, json_, f"{incident_id} resolved")


@incident_app.command("list", help="List incidents.")
def incident_list(json_: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    from clinical_mlops.governance.incidents import list_incidents

    with _governance(workspace) as gov:
        incs = list_incidents(gov)
    _emit(
        {"incidents": incs},
        json_,
        "\n".join(f"{i['id']} {i['status']} {i['version']}: {i['summary']}" for i in incs)
        or "none",
    )
