"""Shared fixtures for the test suite."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.workspace import Workspace

# CDS Hooks without prefetch: a real FHIR server on loopback (session).
from fhir_server import fhir_server  # noqa: F401

# Single sign-on: a real OpenID Connect provider on loopback (per test module).
from oidc_provider import oidc_provider  # noqa: F401

# Key server: a live OpenBao with the Transit engine (one per test).
from openbao_server import openbao, openbao_persistent  # noqa: F401

# Evidence plane: a throw-away PostgreSQL cluster (session) and one database per test.
from postgres_cluster import postgres_database, postgres_server  # noqa: F401


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace in a temporary folder."""
    return Workspace.open(tmp_path / "ws")


@pytest.fixture(scope="session")
def small_source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic raw source (about 2,400 cohort stays), generated once per session."""
    ws = Workspace.open(tmp_path_factory.mktemp("small-source"))
    return synthetic_source(ws, SyntheticConfig(seed=11, scale=0.1)).path


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``clinical-mlops ARGS`` as the console script does; return (code, out, err).

    Errors become exit code 2 and one line, as a user sees them. A module that needs
    another shape defines its own ``cli``.
    """
    from clinical_mlops.cli import app
    from clinical_mlops.cli._common import run_guarded

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
