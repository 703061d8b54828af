"""Supply chain files: the release lock and the reviewed vulnerability exceptions.

Offline checks (the audit itself needs PyPI's JSON API and runs as ``make audit``): the lock
pins every dependency the release installs, with hashes, inside the ranges pyproject.toml
declares; and every ignored vulnerability carries its review and an expiry that has not passed.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, timedelta
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RELEASE_EXTRAS = ("serve", "fhir", "postgres", "vault")
ENTRY = re.compile(
    r"^(?P<id>\S+)\s+(?P<package>\S+)\s+reviewed=(?P<reviewed>\d{4}-\d{2}-\d{2})\s+"
    r"expires=(?P<expires>\d{4}-\d{2}-\d{2})\s+(?P<reason>\S.{15,})$"
)


def pins(path: Path) -> dict[str, tuple[str, int]]:
    """Return {name: (version, number of sha256 hashes)} of a ``uv pip compile`` output."""
    out: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text(encoding="utf-8").splitlines():
        pinned = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pinned:
            name = canonicalize_name(pinned.group(1))
            out[name] = (pinned.group(2), 0)
        elif name and "--hash=sha256:" in line:
            version, hashes = out[name]
            out[name] = (version, hashes + 1)
    return out


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def test_the_release_lock_pins_every_dependency_with_hashes_inside_the_declared_ranges() -> None:
    lock = pins(ROOT / "requirements" / "lock.txt")
    for req in declared(RELEASE_EXTRAS):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is declared but not pinned in requirements/lock.txt"
        version, hashes = lock[name]
        assert req.specifier.contains(version, prereleases=True), (req, version)
        assert hashes >= 1, f"{req.name} is pinned without a hash"
    assert all(h >= 1 for _, h in lock.values())
    # one package, one module: the CPU build of XGBoost only (docs/ARCHITECTURE.md)
    assert "xgboost-cpu" in lock and "xgboost" not in lock


def test_the_development_lock_covers_every_extra_the_makefile_installs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.M)
    assert extras is not None
    lock = pins(ROOT / "requirements" / "lock-dev.txt")
    for req in declared(tuple(extras.group(1).split(","))):
        assert canonicalize_name(req.name) in lock, req.name


def test_every_ignored_vulnerability_is_reviewed_and_not_expired() -> None:
    lines = (ROOT / "requirements" / "audit-ignore.txt").read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    today = date.today()
    for line in entries:
        m = ENTRY.match(line)
        assert m, (
            f"audit-ignore.txt: {line!r} is not '<id> <package> reviewed=... expires=... <reason>'"
        )
        reviewed = date.fromisoformat(m["reviewed"])
        expires = date.fromisoformat(m["expires"])
        assert reviewed <= today, f"{m['id']}: reviewed in the future"
        assert expires - reviewed <= timedelta(days=90), f"{m['id']}: exception longer than 90 days"
        assert today <= expires, f"{m['id']} expired on {expires}: review it again or upgrade"
    assert len({line.split()[0] for line in entries}) == len(entries)  # one line per id
