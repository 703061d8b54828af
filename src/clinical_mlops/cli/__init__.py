"""The ``clinical-mlops`` command: a thin typer layer over the library.

Each sub-command parses its input, calls one library function and renders the
result (a rich table, or one JSON object with ``--json``). Progress bars and
human messages go to standard error so that ``--json`` output stays parseable.
Every :class:`~clinical_mlops.errors.ClinicalMlopsError` becomes a readable
message and exit code 2; nothing else is caught.

The root group loads each sub-command's module only when that command runs (or
its own ``--help`` is asked for): ``clinical-mlops --help`` and ``version`` start
without importing the data, modeling or serving stacks. :data:`COMMANDS` names
every command with its one-line help; a test checks that line against the
command's own help.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from clinical_mlops.cli._common import run_guarded

__all__ = ["COMMANDS", "LazyCommand", "app", "main"]


class LazyCommand(NamedTuple):
    """A root command known by name and one-line help; ``target`` is ``module:attribute``.

    The attribute is a ``typer.Typer`` (a command group) or a function (one command).
    """

    name: str
    target: str
    help: str


COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "data",
        "clinical_mlops.cli.data:data_app",
        "Raw sources, cohorts, contracts, features and snapshots.",
    ),
    LazyCommand(
        "tasks",
        "clinical_mlops.cli.tasks:tasks_app",
        "Task specs: the built-in tasks, a draft from your own table, checking a spec.",
    ),
    LazyCommand(
        "audit",
        "clinical_mlops.cli.audit:audit_app",
        "The tamper-evident audit ledger: verify, show, prove, export, checkpoint, purge, "
        "migrate; check a FHIR Provenance.",
    ),
    LazyCommand(
        "witness",
        "clinical_mlops.cli.witness:witness_app",
        "A checkpoint witness (C2SP tlog-witness): set one up, serve it, list what it refused.",
    ),
    LazyCommand(
        "keys",
        "clinical_mlops.cli.keys:keys_app",
        "Keys of the key provider (local keyring or Vault).",
    ),
    LazyCommand(
        "privacy",
        "clinical_mlops.cli.privacy:privacy_app",
        "Consent and erasure of patients (subjects).",
    ),
    LazyCommand(
        "registry",
        "clinical_mlops.cli.registry:registry_app",
        "Release bundles, statuses, gates, approvals, rollout and rollback.",
    ),
    LazyCommand(
        "review",
        "clinical_mlops.cli.registry:review_app",
        "Periodic reviews of releases in service (R-H3).",
    ),
    LazyCommand(
        "incident",
        "clinical_mlops.cli.registry:incident_app",
        "Incidents: open, contain, communicate, resolve (R-H4).",
    ),
    LazyCommand(
        "monitor",
        "clinical_mlops.cli.monitor:monitor_app",
        "Drift, outcome-linked, fairness and workflow monitoring of served releases (R-O1..R-O3).",
    ),
    LazyCommand(
        "simulate",
        "clinical_mlops.cli.monitor:simulate_app",
        "Simulated operation on simulated time (no sleeping).",
    ),
    LazyCommand(
        "export",
        "clinical_mlops.cli.export:export_app",
        "Exports for other tools: ODCS data contracts, seismometer predictions and events.",
    ),
    LazyCommand(
        "console",
        "clinical_mlops.cli.console:console_app",
        "The clinician and governance web console (run it, manage its users).",
    ),
    LazyCommand(
        "workspace",
        "clinical_mlops.cli.workspace:workspace_app",
        "The workspace as a whole: back it up, restore it.",
    ),
    LazyCommand(
        "demo",
        "clinical_mlops.cli.demo:demo_command",
        "Run the end-to-end pipeline on the embedded synthetic source.",
    ),
    LazyCommand(
        "train",
        "clinical_mlops.cli.model:train",
        "Select, fit, calibrate and validate a model; write artifacts, report and model card.",
    ),
    LazyCommand(
        "evaluate",
        "clinical_mlops.cli.model:evaluate",
        "Replay a model's validation from its stored artifacts and check it matches bit for bit.",
    ),
    LazyCommand(
        "report",
        "clinical_mlops.cli.model:report",
        "Show where a model's validation report and model card are, with the headline table.",
    ),
    LazyCommand(
        "validate",
        "clinical_mlops.cli.validate:validate_command",
        "Validate a release on another snapshot (another site, later years) and store the "
        "report as its evidence.",
    ),
    LazyCommand(
        "evidence",
        "clinical_mlops.cli.evidence:evidence_command",
        "Write a release's standard evidence documents (CHAI, HTI-1, ...), signed beside it.",
    ),
    LazyCommand(
        "serve",
        "clinical_mlops.cli.serve:serve_command",
        "Serve the task's approved release over HTTP (TLS 1.3 minimum when a cert and key "
        "are given).",
    ),
    LazyCommand(
        "score",
        "clinical_mlops.cli.score:score_command",
        "Score every request of a file through the governed Predictor, one audit record each.",
    ),
)


def load_command(spec: LazyCommand) -> Any:
    """Import ``spec``'s module and return its click command, named ``spec.name``."""
    module_name, _, attribute = spec.target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    if isinstance(obj, typer.Typer):
        # get_group, not get_command: completion options belong to the root only.
        command: Any = typer.main.get_group(obj)
    else:
        single = typer.Typer(add_completion=False)
        single.command(spec.name)(obj)
        command = typer.main.get_command(single)
    command.name = spec.name
    return command


class _Commands(MutableMapping[str, Any]):
    """The root's commands by name: the eager ones as given, the others imported on lookup."""

    def __init__(self, eager: MutableMapping[str, Any], lazy: tuple[LazyCommand, ...]):
        self._loaded = dict(eager)
        self._lazy = {spec.name: spec for spec in lazy}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            self._loaded[name] = load_command(self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self._lazy
        yield from (n for n in self._loaded if n not in self._lazy)

    def __len__(self) -> int:
        return len(set(self._lazy) | set(self._loaded))

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def spec(self, name: str) -> LazyCommand | None:
        return self._lazy.get(name)


class LazyGroup(TyperGroup):
    """The root group: lists every command by its one-line help, imports one when it runs."""

    def __init__(self, **attrs: Any):
        super().__init__(**attrs)
        self.commands = _Commands(self.commands, COMMANDS)
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        commands = self.commands
        assert isinstance(commands, _Commands)
        spec = commands.spec(cmd_name)
        if self._listing and spec is not None and not commands.is_loaded(cmd_name):
            # The root's own --help shows each command's one-line help without importing it.
            return TyperCommand(name=spec.name, help=spec.help)
        return commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="clinical-mlops",
    cls=LazyGroup,
    help="Governed clinical risk models from raw EHR data to bedside use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    # A callback makes typer build a group even though only ``version`` is registered eagerly.
    pass


@app.command("version", help="Print the installed version.")
def version() -> None:
    from clinical_mlops import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_guarded(app))
