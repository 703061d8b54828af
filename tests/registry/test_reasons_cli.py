"""`registry suspend`, `resume` and `rollback` need a reason, as the console does: without
one (or with a blank one) the command exits 2 naming ``why`` and changes nothing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from clinical_mlops.application.walkthrough import govern_demo_release
from clinical_mlops.cli import app
from clinical_mlops.cli._common import run_guarded
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.workspace import Workspace

CLIN, COMP, AUTHOR, ENG = (
    "demo.dr.lena.ortiz",
    "demo.sam.okafor",
    "demo.alex.kim",
    "demo.priya.nair",
)


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """Run the command line as a user would: return (exit code, stdout + stderr)."""

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["clinical-mlops", *args])
        try:
            code = run_guarded(app)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + " ".join(out.err.split())

    return run


def _state(ws: Workspace) -> tuple[Any, ...]:
    """Return what a refused act must leave as it was: statuses, active release, ledger size."""
    with Registry.open(ws) as reg:
        statuses = tuple((r.version, r.status) for r in reg.list())
        active = reg.active("icu_mortality_48h")
    with Ledger.open(ws) as led:
        size = led.size()
    return statuses, active.version if active else None, size


def _key(ws: Workspace, person: str) -> tuple[str, str]:
    """The --key option proving ``person``'s act: their key, made in the workspace by the demo."""
    return "--key", str(ws.root / "demo-people" / f"{person}_ed25519")


def _refused(cli: Callable[..., tuple[int, str]], ws: Workspace, *args: str) -> None:
    before = _state(ws)
    code, err = cli(*args, "-w", str(ws.root))
    assert code == 2, err
    assert "why" in err and "say why" in err
    assert _state(ws) == before


@pytest.mark.parametrize("given", [(), ("--why", ""), ("--why", "   ")])
def test_suspend_and_resume_need_a_reason(
    cli: Callable[..., tuple[int, str]], fresh_workspace: Any, trained: Any, given: tuple[str, ...]
) -> None:
    ws = fresh_workspace("reasons")
    v = govern_demo_release(ws, model_version=trained[1])["version"]
    _refused(cli, ws, "registry", "suspend", v, "--as", CLIN, *_key(ws, CLIN), *given)
    code, err = cli(
        "registry",
        "suspend",
        v,
        "--as",
        CLIN,
        *_key(ws, CLIN),
        "--why",
        "drift",
        "-w",
        str(ws.root),
    )
    assert code == 0, err
    _refused(cli, ws, "registry", "resume", v, "--as", COMP, *_key(ws, COMP), *given)


def test_rollback_needs_a_reason(
    cli: Callable[..., tuple[int, str]], fresh_workspace: Any, trained: Any
) -> None:
    ws = fresh_workspace("rollback-reason")
    v1 = govern_demo_release(ws, model_version=trained[1])["version"]
    root = str(ws.root)
    code, out = cli(
        "registry", "bundle", trained[1], "--threshold", "0.2", "--as", AUTHOR, "--json", "-w", root
    )
    assert code == 0, out
    code, out = cli(
        "registry", "register", json.loads(out)["path"], "--as", AUTHOR, "--json", "-w", root
    )
    assert code == 0, out
    v2 = json.loads(out)["version"]
    code, out = cli("registry", "risks", v2, "--json", "-w", root)
    assert code == 0, out
    for risk in json.loads(out)["risks"]:
        code, err = cli(
            "registry", "acknowledge", v2, "--risk", risk["id"], "--reason", "accepted",
            "--as", CLIN, *_key(ws, CLIN), "-w", root,
        )  # fmt: skip
        assert code == 0, err
    for step in (
        ("validate", v2, "--as", AUTHOR),
        ("promote", v2, "--as", AUTHOR, "--why", "gates passed"),
        ("promote", v2, "--as", CLIN, "--why", "reviewed"),
        ("approve", v2, "--role", "engineering", "--as", ENG, "--why", "ok"),
        ("approve", v2, "--role", "clinical", "--as", CLIN, "--why", "ok"),
        ("approve", v2, "--role", "compliance", "--as", COMP, "--why", "ok"),
        ("promote", v2, "--as", COMP, "--why", "limited"),
        ("promote", v2, "--as", COMP, "--why", "approved"),
    ):
        proof = _key(ws, step[step.index("--as") + 1]) if step[0] != "validate" else ()
        code, err = cli("registry", *step, *proof, "-w", root)
        assert code == 0, err
    with Registry.open(ws) as reg:
        assert reg.active("icu_mortality_48h").version == v2
    for given in ((), ("--why", ""), ("--why", " ")):
        _refused(cli, ws, "registry", "rollback", v1, "--as", CLIN, *_key(ws, CLIN), *given)
    code, err = cli(
        "registry", "rollback", v1, "--as", CLIN, *_key(ws, CLIN), "--why", "v2 misfires",
        "-w", root,
    )  # fmt: skip
    assert code == 0, err
    with Registry.open(ws) as reg:
        assert reg.active("icu_mortality_48h").version == v1
