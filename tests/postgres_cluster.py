"""A throw-away PostgreSQL cluster for the tests (imported by tests/conftest.py).

The Makefile's ``sysdeps`` step installs Debian's ``postgresql``; here a session
fixture runs ``initdb`` and ``pg_ctl`` as the ``postgres`` user (the server
refuses to run as root) on a free loopback port, and stops it at the end.
Missing binaries make the tests that need the server FAIL, never skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["create_database", "drop_database", "postgres_database", "postgres_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Yield the admin URL of a fresh PostgreSQL cluster on 127.0.0.1 (session-wide)."""
    bindir = _bin_dir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin/initdb); run `make sysdeps` "
            "(apt-get install postgresql). These tests never skip."
        )
    base = Path(tempfile.mkdtemp(prefix="cm-pg-"))
    datadir = base / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(datadir, "postgres", "postgres")
    port = _free_port()
    log = base / "server.log"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(log),
                "-o",
                f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200",
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def create_database(server_url: str) -> str:
    """Return the URL of a new, empty database in the cluster at ``server_url``."""
    import psycopg

    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    """Drop the database at ``url`` (connections are terminated)."""
    import psycopg

    server, name = url.rsplit("/", 1)
    admin = server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """Yield the URL of a new, empty database in the session cluster."""
    # Not dropped afterwards: DROP DATABASE forces a checkpoint (seconds each), and the
    # whole cluster is deleted at the end of the session anyway.
    yield create_database(postgres_server)
