"""Verified identities for tests that act through the library as a signed-in person would.

A console or API front end hands the library the identity its session proved; these build
the same for a test acting in-process: a console user, by their user name. On the command
line a person proves an act with their own registered SSH key: :func:`demo_proof` for the
people the demo made keys for, :class:`Keyring` for a team a test builds itself.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from typer.testing import CliRunner

from clinical_mlops.cli import app
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.workspace import Workspace


def console(person: str) -> VerifiedIdentity:
    """Return the identity of ``person`` signed in to the console with their password."""
    return VerifiedIdentity(person=person, method="console-password", subject=person)


def demo_proof(workspace: Workspace, person: str) -> list[str]:
    """Return the command-line options that make an act as demo ``person``, signed with
    the key the demo made and registered for them in the workspace."""
    return ["--as", person, "--key", str(workspace.root / "demo-people" / f"{person}_ed25519")]


class Keyring:
    """SSH Ed25519 keys of a team, made with ``ssh-keygen`` in ``folder`` and registered
    to their people in a workspace with ``registry person key add``, as an operator would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def key(self, person: str) -> Path:
        """Return ``person``'s private key file, made on first use."""
        path = self.folder / f"{person}_ed25519"
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", person, "-f", str(path)],
                check=True,
            )
        return path

    def proof(self, person: str) -> list[str]:
        """Return the command-line options that make an act as ``person``, signed with their key."""
        return ["--as", person, "--key", str(self.key(person))]

    def register(self, root: str | Path, people: Iterable[str], *, compliance: str) -> None:
        """Register each person's key in the workspace at ``root``; ``compliance`` (a person
        in the compliance role) registers their own first, signed with it, then the others'."""
        runner = CliRunner()
        for person in dict.fromkeys([compliance, *people]):
            res = runner.invoke(
                app,
                [
                    "registry", "person", "key", "add", person,
                    "--public-key", f"{self.key(person)}.pub",
                    *self.proof(compliance), "-w", str(root),
                ],
            )  # fmt: skip
            assert res.exit_code == 0, (person, res.output, res.exception)
