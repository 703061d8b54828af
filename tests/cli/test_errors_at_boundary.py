"""Every command answers bad input with exit code 2 and one line naming what was wrong.

The whole command tree is walked: each command and group is run with an unknown
option, without its required arguments, with ids and files that do not exist, and
with a workspace that cannot exist. None may end in a traceback.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded

# Dummy input that is valid for these commands (any identifier may be given consent).
ACCEPTS_ANY_ID = {"privacy consent"}


def _tree() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if path:
            yield " ".join(path), cmd
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(None):
                yield from walk(cmd.get_command(None, name), [*path, name])

    yield from walk(typer.main.get_command(app), [])


TREE = dict(_tree())
LEAVES = {name: cmd for name, cmd in TREE.items() if not hasattr(cmd, "list_commands")}


def _required(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.required]


def _has_workspace(cmd: Any) -> bool:
    return any("--workspace" in getattr(p, "opts", ()) for p in cmd.params)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    monkeypatch.setenv("CLINICAL_MLOPS_ACTOR", "dr.test")
    monkeypatch.setenv("COLUMNS", "80")
    for key in (
        "CLINICAL_MLOPS_HOME",
        "CLINICAL_MLOPS_META_URL",
        "CLINICAL_MLOPS_LEDGER_URL",
        "CLINICAL_MLOPS_IDENTITY_URL",
        "CLINICAL_MLOPS_KEY_PROVIDER",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _one_clear_line(name: str, code: int, err: str, *expected: str) -> None:
    assert "Traceback" not in err, f"{name}: {err}"
    assert code == 2, f"{name}: exit {code}: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name}: {err}"
    for text in expected:
        assert text.lower() in lines[0].lower(), f"{name}: {lines[0]!r} does not name {text!r}"


def _dummy(param: Any, tmp_path: Path) -> str:
    annotation = str(param.type_descriptor.annotation)
    if "int" in annotation or "float" in annotation:
        return "999999"
    if "Path" in annotation:
        return str(tmp_path / "no-such-file.jsonl")
    return "no-such-id"


def _fill(cmd: Any, tmp_path: Path) -> list[str]:
    args: list[str] = []
    for p in _required(cmd):
        if p.param_type_name == "argument":
            args.append(_dummy(p, tmp_path))
        else:
            args += [p.opts[0], _dummy(p, tmp_path)]
    if any("--password-stdin" in getattr(p, "opts", ()) for p in cmd.params):
        args.append("--password-stdin")
    return args


def test_the_tree_is_walked_whole() -> None:
    assert {"registry list", "audit verify", "console user add", "score", "version"} <= set(LEAVES)
    assert len(LEAVES) > 50


@pytest.mark.parametrize("name", sorted(TREE))
def test_unknown_option_names_the_option(cli, name: str) -> None:
    code, _, err = cli(*name.split(), "--no-such-option")
    _one_clear_line(name, code, err, "--no-such-option")


@pytest.mark.parametrize("name", sorted(n for n, c in LEAVES.items() if _required(c)))
def test_missing_required_argument_is_named(cli, name: str) -> None:
    cmd = LEAVES[name]
    first = _required(cmd)[0]
    shown = first.name.upper() if first.param_type_name == "argument" else first.opts[0]
    code, _, err = cli(*name.split())
    _one_clear_line(name, code, err, "missing", shown)


@pytest.mark.parametrize(
    "name", sorted(n for n, c in LEAVES.items() if _required(c) and n not in ACCEPTS_ANY_ID)
)
def test_ids_and_files_that_do_not_exist_are_named(cli, name: str, tmp_path: Path) -> None:
    cmd = LEAVES[name]
    args = [*name.split(), *_fill(cmd, tmp_path)]
    if _has_workspace(cmd):
        args += ["-w", str(tmp_path / "ws")]
    code, _, err = cli(*args)
    _one_clear_line(name, code, err)


@pytest.mark.parametrize("name", sorted(n for n, c in TREE.items() if _has_workspace(c)))
def test_a_workspace_that_cannot_exist_is_named(cli, name: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text(
        "a file, not a folder: it stands where the workspace would be\n", encoding="utf-8"
    )
    # Options these commands check before they open the workspace, given valid values.
    valid = {
        "audit purge": ["--retention", "inference=30"],
        "serve": ["--jwt-secret-file", str(blocker)],
        "registry person key add": ["someone", "--public-key", str(blocker)],
    }
    cmd = TREE[name]
    args = valid.get(name) or _fill(cmd, tmp_path)
    code, _, err = cli(*name.split(), *args, "-w", str(blocker / "ws"))
    _one_clear_line(name, code, err, str(blocker / "ws"))


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["monitor", "alerts", "--status", "bogus"], {}, "status: expected one of"),
        (["data", "generate", "--scale", "0"], {}, "scale: expected a value between"),
        (["registry", "list"], {"CLINICAL_MLOPS_META_URL": "not a url"}, "META_URL"),
        (["audit", "verify"], {"CLINICAL_MLOPS_LEDGER_URL": "::"}, "LEDGER_URL"),
        (["serve", "--jwt-secret-file", "{short}"], {}, "at least 32 bytes"),
    ],
    ids=["alert-status", "scale", "meta-url", "ledger-url", "short-jwt-secret"],
)
def test_bad_values_are_named_errors(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], env: dict, named: str
) -> None:
    short = tmp_path / "short-secret"
    short.write_text("too short\n", encoding="utf-8")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = [a.format(short=short) for a in args]
    code, _, err = cli(*argv, "-w", str(tmp_path / "ws"))
    _one_clear_line(" ".join(args), code, err, named)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("soon", "expected a whole number of milliseconds"), ("-5", "expected 0 or more")],
    ids=["not-a-number", "negative"],
)
def test_a_bad_busy_timeout_setting_is_named(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: str
) -> None:
    """A store setting the library refuses ends in exit 2 and one line naming the setting."""
    monkeypatch.setenv("CLINICAL_MLOPS_BUSY_TIMEOUT_MS", value)
    code, _, err = cli("registry", "list", "-w", str(tmp_path / "ws"))
    _one_clear_line("busy timeout", code, err)
    assert "CLINICAL_MLOPS_BUSY_TIMEOUT_MS" in err and expected in err, err
