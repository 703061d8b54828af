"""The release page and ``registry show`` state the workload at the release's own threshold:
alerts and clinician reviews per 100 with their CIs, and the escalation policy in words."""

from __future__ import annotations

import html
from typing import Any

from console_world import REVIEWER, console_client, sign_in
from typer.testing import CliRunner

from clinical_mlops.cli import app
from clinical_mlops.registry.registry import Registry


def _report(world: dict[str, Any], version: str) -> dict[str, Any]:
    with Registry.open(world["ws"]) as reg:
        return reg.bundle(version).read_json("report.json")


def _ci(pair: list[float]) -> str:
    return f"{pair[0]:.1f}–{pair[1]:.1f}"


def test_release_page_shows_alerts_and_reviews_per_100_at_the_release_threshold(
    world: dict[str, Any],
) -> None:
    v2 = world["v2"]
    report = _report(world, v2)
    w = report["workload"]
    assert w["threshold"] == 0.35  # the release's, not the spec's 0.40
    client = console_client(world["ws"])
    sign_in(client, REVIEWER)
    page = html.unescape(client.get(f"/console/releases/{v2}").text)
    section = page[page.index("Workload at this release's threshold") :]
    section = section[: section.index("</section>")]
    assert "threshold 0.35" in section
    assert f"{w['alerts_per_100']:.1f}" in section
    assert f"95 % CI {_ci(w['alerts_per_100_ci'])}" in section
    assert "Clinician reviews per 100 patients" in section
    assert f"{w['reviews_per_100']:.1f}" in section
    assert f"95 % CI {_ci(w['reviews_per_100_ci'])}" in section
    assert report["escalation"]["statement"] in section


def test_registry_show_states_the_workload_and_the_policy(world: dict[str, Any]) -> None:
    v2 = world["v2"]
    w = _report(world, v2)["workload"]
    res = CliRunner().invoke(app, ["registry", "show", v2, "-w", str(world["ws"].root)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    assert (
        f"at threshold 0.35: {w['alerts_per_100']:.1f} (95 % CI "
        f"{w['alerts_per_100_ci'][0]:.1f}-{w['alerts_per_100_ci'][1]:.1f}) alerts and "
        f"{w['reviews_per_100']:.1f} (95 % CI {w['reviews_per_100_ci'][0]:.1f}-"
        f"{w['reviews_per_100_ci'][1]:.1f}) clinician reviews per 100 test stays" in out
    )
    assert "escalation: A case goes to clinician review when" in out
