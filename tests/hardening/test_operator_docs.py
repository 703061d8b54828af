"""The operator documents cite only commands that exist.

Every backticked span in docs/DEPLOYMENT.md, OPERATIONS.md, COMPLIANCE.md and RELIABILITY.md
that starts with a ``clinical-mlops`` command (with or without the program name) must name a
real command path of the CLI, and every Makefile target and file path they cite must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clinical_mlops.cli.reference import commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["DEPLOYMENT.md", "OPERATIONS.md", "COMPLIANCE.md", "RELIABILITY.md"]


def cited(doc: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", (ROOT / "docs" / doc).read_text(encoding="utf-8"))


def known_paths() -> tuple[set[str], set[str]]:
    """Return (every command path, every group path) of the CLI, e.g. "console user add"."""
    leaves = {path for path, _ in commands()}
    groups = {" ".join(p.split()[:i]) for p in leaves for i in range(1, len(p.split()))}
    return leaves | groups, groups


def unknown(words: list[str], paths: set[str], groups: set[str]) -> str | None:
    """Return the first word of ``words`` that is not a command where one is expected."""
    at: list[str] = []
    for word in words:
        if (at and " ".join(at) not in groups) or word.startswith("-"):
            return None  # the arguments and options of a command
        if " ".join([*at, word]) not in paths:
            return word if re.fullmatch(r"[a-z][a-z-]*", word) else None
        at.append(word)
    return None


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_command_exists(doc: str) -> None:
    paths, groups = known_paths()
    tops = {p.split()[0] for p in paths}
    checked = 0
    for span in cited(doc):
        words = span.split()
        if words[0] == "clinical-mlops":
            words = words[1:]
        elif words[0] not in tops:
            continue
        assert unknown(words, paths, groups) is None, f"{doc}: `{span}` is not a command"
        checked += 1
    assert checked >= 5, f"{doc} cites almost no commands"


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_make_target_and_repository_file_exists(doc: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for span in cited(doc):
        if span.startswith("make "):
            assert span.split()[1] in targets, f"{doc}: `{span}` is not a Makefile target"
        elif re.fullmatch(r"(deploy|docs|tests|bench|requirements|src)/[\w./-]+", span):
            assert (ROOT / span).exists(), f"{doc}: {span} does not exist"
