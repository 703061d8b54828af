"""``clinical-mlops console``: run the clinician and governance console; manage its users."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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

__all__ = ["console_app"]

console_app = typer.Typer(
    help="The clinician and governance web console (run it, manage its users).",
    invoke_without_command=True,
)
user_app = typer.Typer(
    help="Console users: names, roles and passwords (scrypt hashes).", no_args_is_help=True
)
console_app.add_typer(user_app, name="user")


@console_app.callback()
def console_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8090,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")
    ] = None,
    session_minutes: Annotated[
        int, typer.Option("--session-minutes", help="Sign-in lifetime in minutes.", min=1)
    ] = 480,
    workspace: WorkspaceOption = None,
) -> None:
    """Run the console alone at http(s)://HOST:PORT/console (TLS 1.3 minimum with a cert and key).

    Clinicians see the escalation queue and cases; reviewers, compliance and ML
    engineers the releases, model status, reviews and incidents; auditors the audit
    search. Add users first with `clinical-mlops console user add`.
    """
    if ctx.invoked_subcommand is not None:
        return
    import ssl

    import uvicorn

    from clinical_mlops.console import close_console, standalone_app

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    app = standalone_app(workspace_from(workspace), session_max_age=session_minutes * 60)
    scheme = "https" if tls_cert else "http"
    err_console.print(f"console at {scheme}://{host}:{port}/console")
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning")
    if tls_cert and tls_key:
        config.ssl_certfile, config.ssl_keyfile = str(tls_cert), str(tls_key)
        config.load()
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        uvicorn.Server(config).run()
    finally:
        close_console(app.state.inner)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != first:
        raise typer.BadParameter("the two passwords differ")
    return first


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (the JWT sub of the same person).")],
    role: Annotated[
        list[str],
        typer.Option(
            "--role",
            help="Role: clinician, reviewer, ml_engineer, compliance or auditor (repeatable).",
        ),
    ],
    site: Annotated[str | None, typer.Option("--site", help="The user's site, if any.")] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from the first line of standard input."
        ),
    ] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a console user (or replace one, ending their open sessions), asking for the password.

    The password is never an argument (it would land in shell history and process
    lists): it is prompted for twice, or read from standard input. At least 12
    characters; stored only as a scrypt hash.
    """
    from clinical_mlops.console.session import session_secret
    from clinical_mlops.console.users import UserDirectory

    ws = workspace_from(workspace)
    user = UserDirectory.open(ws).add(
        name, roles=list(role), password=_read_password(password_stdin), site=site
    )
    session_secret(ws)  # made now, so a read-only deployment finds it in place
    if as_json:
        print_json(user.to_json())
    else:
        err_console.print(f"console user {user.name} with roles {', '.join(user.roles)}")


@user_app.command("password")
def user_password(
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from the first line of standard input."
        ),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Give a console user a new password; every session they have open ends.

    Roles and site are kept. The sessions end in every running console at their next
    request, signed in before the change from whatever browser. The password is
    prompted for twice, or read from standard input.
    """
    from clinical_mlops.console.users import UserDirectory

    user = UserDirectory.open(workspace_from(workspace)).set_password(
        name, _read_password(password_stdin)
    )
    err_console.print(f"new password for console user {user.name}; their open sessions have ended")


@user_app.command("list")
def user_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """List console users and their roles (never their password hashes)."""
    from clinical_mlops.console.users import UserDirectory

    users = UserDirectory.open(workspace_from(workspace)).list()
    if as_json:
        print_json({"users": [u.to_json() for u in users]})
        return
    table = CliTable("user", "roles", "site", "created")
    for u in users:
        table.add_row(u.name, ", ".join(u.roles), u.site or "", u.created or "")
    out_console.print(table)


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    workspace: WorkspaceOption = None,
) -> None:
    """Remove a console user; their open sessions end at their next request.

    Adding the same name again later does not bring those sessions back.
    """
    from clinical_mlops.console.users import UserDirectory

    UserDirectory.open(workspace_from(workspace)).remove(name)
    err_console.print(f"removed console user {name}")
