"""Console fixtures (the world and the helpers are in console_world.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_world import CHROMIUM_ARGS, build_world, copy_world

from registry_helpers import trained  # noqa: F401


@pytest.fixture(scope="session")
def console_template(
    trained: tuple[Path, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The world, built once per session (copy it before changing anything)."""
    return build_world(tmp_path_factory.mktemp("console-template"), trained[0], trained[1])


@pytest.fixture(scope="module")
def world(
    console_template: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A copy of the world for one test module (tests take distinct cases)."""
    return copy_world(console_template, tmp_path_factory.mktemp("console-world") / "ws")


@pytest.fixture
def fresh_world(console_template: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A copy of the world for one test that changes governance state."""
    return copy_world(console_template, tmp_path / "ws")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    assert Path("/usr/bin/chromium").exists(), "install Debian's chromium (make sysdeps)"
    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        pw.stop()
