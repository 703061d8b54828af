"""``clinical-mlops serve``: the inference service for the workspace's approved release."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

import typer

from clinical_mlops.cli._common import WorkspaceOption, err_console, workspace_from

__all__ = ["FHIR_SERVERS_ENV", "serve_command"]

#: comma-separated base URLs of the EHR FHIR servers CDS Hooks calls may be read from
FHIR_SERVERS_ENV = "CLINICAL_MLOPS_FHIR_SERVERS"


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Task whose active release is served (default: the workspace's one task).",
        ),
    ] = None,
    site: Annotated[
        str,
        typer.Option(
            "--site",
            help="Rollout site of this service: where a credential naming no site is scored.",
        ),
    ] = "*",
    jwt_secret_file: Annotated[
        Path | None, typer.Option("--jwt-secret-file", help="File holding the HS256 JWT secret.")
    ] = None,
    jwt_public_key: Annotated[
        Path | None,
        typer.Option("--jwt-public-key", help="PEM public key verifying JWTs (EdDSA/RS256)."),
    ] = None,
    api_keys: Annotated[
        Path | None,
        typer.Option(
            "--api-keys",
            help='JSON {"keys": [{"name", "sha256", "roles", "sites"}]} for systems.',
        ),
    ] = None,
    audience: Annotated[
        str, typer.Option("--audience", help="Expected JWT audience.")
    ] = "clinical-mlops",
    jwt_issuer: Annotated[
        str | None,
        typer.Option(
            "--jwt-issuer", help="Expected JWT issuer ('iss'); tokens without it are refused."
        ),
    ] = None,
    oidc_issuer: Annotated[
        str | None,
        typer.Option(
            "--oidc-issuer",
            help="OpenID provider whose published keys (JWKS, via discovery) verify tokens.",
        ),
    ] = None,
    oidc_claims: Annotated[
        Path | None,
        typer.Option(
            "--oidc-claims",
            help="JSON {person_claim, roles_claim, groups_claim, group_roles} for --oidc-issuer.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")
    ] = None,
    base_url: Annotated[
        str, typer.Option("--base-url", help="Public URL, for model-card links.")
    ] = "",
    console: Annotated[
        bool,
        typer.Option("--console/--no-console", help="Also serve the web console at /console."),
    ] = True,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve the task's approved release over HTTP (TLS 1.3 minimum when a cert and key are given).

    Refuses to start, saying why, when no release is servable or its bundle fails
    signature verification. CDS Hooks discovery and model cards are open; every other
    route needs a JWT bearer token or an API key with a role the route declares, and the
    rollout site comes from that credential (--site for one naming none). The web console
    (sign-in with console users) is served at /console unless --no-console.
    """
    import uvicorn

    from clinical_mlops.application.scoring import open_predictor
    from clinical_mlops.http.app import create_app
    from clinical_mlops.serving.auth import AuthConfig

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    auth = AuthConfig.from_files(
        secret_file=jwt_secret_file,
        public_key_file=jwt_public_key,
        api_keys_file=api_keys,
        audience=audience,
        issuer=jwt_issuer,
        oidc_issuer=oidc_issuer,
        claim_mapping_file=oidc_claims,
    )
    predictor = open_predictor(workspace_from(workspace), task=task, site=site)
    scheme = "https" if tls_cert else "http"
    # CDS Hooks reads a call's missing data only from the FHIR servers named here
    fhir_servers = [u.strip() for u in os.environ.get(FHIR_SERVERS_ENV, "").split(",") if u.strip()]
    app = create_app(
        predictor,
        auth,
        base_url=base_url or f"{scheme}://{host}:{port}",
        fhir_servers=fhir_servers,
    )
    if console:
        from clinical_mlops.console import create_console_app

        app.mount(
            "/console",
            create_console_app(
                predictor.workspace,
                ledger=predictor.ledger,
                registry=predictor.registry,
                clock=predictor.clock,
            ),
        )
    err_console.print(
        f"serving {predictor.default} ({predictor.status_of(predictor.default) or 'status pending'}) "
        f"at {scheme}://{host}:{port} for site {site}"
    )
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning")
    if tls_cert and tls_key:
        config.ssl_certfile, config.ssl_keyfile = str(tls_cert), str(tls_key)
    server = uvicorn.Server(config)
    if tls_cert and tls_key:
        config.load()
        assert config.ssl is not None
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        server.run()
    finally:
        predictor.close()
