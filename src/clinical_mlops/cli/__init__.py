"""The ``clinical-mlops`` command: a thin typer layer over the library.

Each sub-command parses its input, calls one library function and renders the
result (a rich table, or one JSON object with ``--json``). Progress bars and
human messages go to standard error so that ``--json`` output stays parseable.
Every :class:`~clinical_mlops.errors.ClinicalMlopsError` becomes a readable
message and exit code 2; nothing else is caught.
"""

from __future__ import annotations

import sys

import typer

from clinical_mlops.cli._common import run_guarded
from clinical_mlops.cli.audit import audit_app
from clinical_mlops.cli.console import console_app
from clinical_mlops.cli.data import data_app
from clinical_mlops.cli.demo import demo_command
from clinical_mlops.cli.keys import keys_app
from clinical_mlops.cli.model import evaluate, report, train
from clinical_mlops.cli.monitor import monitor_app, simulate_app
from clinical_mlops.cli.privacy import privacy_app
from clinical_mlops.cli.registry import incident_app, registry_app, review_app
from clinical_mlops.cli.score import score_command
from clinical_mlops.cli.serve import serve_command
from clinical_mlops.cli.tasks import tasks_app
from clinical_mlops.cli.workspace import workspace_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="clinical-mlops",
    help="Governed clinical risk models from raw EHR data to bedside use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(tasks_app, name="tasks")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(privacy_app, name="privacy")
app.add_typer(registry_app, name="registry")
app.add_typer(review_app, name="review")
app.add_typer(incident_app, name="incident")
app.add_typer(monitor_app, name="monitor")
app.add_typer(simulate_app, name="simulate")
app.add_typer(console_app, name="console")
app.add_typer(workspace_app, name="workspace")
app.command("demo")(demo_command)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("report")(report)
app.command("serve")(serve_command)
app.command("score")(score_command)


@app.command("version", help="Print the installed version.")
def version() -> None:
    from clinical_mlops import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_guarded(app))
