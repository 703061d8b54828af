"""Evidence fixtures: a governed demo release registered at a fixed past time, copied per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clinical_mlops.clock import FixedClock
from clinical_mlops.workspace import Workspace
from registry_helpers import REVIEW_UNSURE, T0, meta_backend, trained  # noqa: F401


@pytest.fixture(scope="session")
def governed_release(
    trained: tuple[Path, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A workspace whose demo release was governed to approved at T0 (in the past)."""
    from clinical_mlops.application.walkthrough import govern_demo_release

    ws = Workspace.open(tmp_path_factory.mktemp("evidence-governed"))
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    shown = govern_demo_release(
        ws, model_version=trained[1], escalation=REVIEW_UNSURE, clock=FixedClock(T0)
    )
    return {"root": ws.root, "release": shown["version"], "registered": T0}


@pytest.fixture
def world(governed_release: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the governed workspace."""
    root = tmp_path / "ws"
    shutil.copytree(governed_release["root"], root)
    return {"ws": Workspace.open(root), "release": governed_release["release"], "t0": T0}


@pytest.fixture
def cli(cli: Callable[..., tuple[int, str, str]]) -> Callable[[list[str]], tuple[int, str, str]]:
    """The suite's ``cli`` (errors become exit code 2 and one line), taking a list of args."""
    return lambda args: cli(*args)
