"""The command line starts without the numerical, database and web stacks.

``--help`` (of the root, of every group and of every command) and ``version``
import none of the heavy libraries: each is checked in a fresh interpreter, by
what ``sys.modules`` holds at exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clinical_mlops import __version__

SRC = Path(sys.modules["clinical_mlops"].__file__).resolve().parents[1]

HEAVY = (
    "pandas",
    "sklearn",
    "scipy",
    "xgboost",
    "matplotlib",
    "mlflow",
    "pyspark",
    "duckdb",
    "sqlalchemy",
    "fastapi",
    "numpy",
)

# Runs the CLI as the console script does, then reports the heavy modules it imported.
ONE_RUN = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: print(json.dumps(sorted(h for h in HEAVY if h in sys.modules)),
                              file=open({report!r}, "w", encoding="utf-8")))
sys.argv = ["clinical-mlops", *{argv!r}]
from clinical_mlops.cli import main
main()
"""

# Walks the whole command tree, asking each group and command for --help in turn.
EVERY_HELP = """
import contextlib, io, json, sys
HEAVY = {heavy!r}

def heavy():
    return {{h for h in HEAVY if h in sys.modules}}

at_start = heavy()
import typer.main
from clinical_mlops.cli import app

root = typer.main.get_command(app)
offenders, seen = {{}}, []

def ask_help(path):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = root.main([*path, "--help"], prog_name="clinical-mlops", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), (path, code)

def visit(cmd, path, before=None):
    before = heavy() if before is None else before
    ask_help(path)
    children = []
    if hasattr(cmd, "list_commands"):
        children = [(n, cmd.get_command(None, n)) for n in cmd.list_commands(None)]
    new = heavy() - before
    if new:
        offenders[" ".join(path) or "(root)"] = sorted(new)
    seen.append(" ".join(path))
    for name, child in children:
        visit(child, [*path, name])

visit(root, [], at_start)
print(json.dumps({{"offenders": offenders, "seen": seen}}))
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize("argv", [["--help"], ["version"], []], ids=["help", "version", "bare"])
def test_root_help_and_version_import_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    report = tmp_path / "imported.json"
    run = _python(ONE_RUN.format(heavy=HEAVY, report=str(report), argv=argv))
    assert "Traceback" not in run.stderr, run.stderr
    assert json.loads(report.read_text(encoding="utf-8")) == []
    if argv == ["version"]:
        assert run.returncode == 0 and run.stdout.strip() == __version__
    else:
        # the root's help lists every command by its one-line help
        assert "registry" in run.stdout and "Release bundles, statuses" in run.stdout


def test_every_group_and_command_help_imports_no_heavy_library() -> None:
    run = _python(EVERY_HELP.format(heavy=HEAVY))
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert {"registry list", "audit verify", "monitor alerts", "console user add"} <= set(
        found["seen"]
    )
    assert found["offenders"] == {}


def test_root_lists_each_command_with_its_own_one_line_help() -> None:
    import typer.main

    from clinical_mlops.cli import COMMANDS, app, load_command

    root = typer.main.get_command(app)
    assert set(root.list_commands(None)) == {c.name for c in COMMANDS} | {"version"}  # type: ignore[attr-defined,arg-type]
    for spec in COMMANDS:
        command = load_command(spec)
        first_line = (command.help or "").strip().splitlines()[0]
        assert first_line == spec.help, spec.name
