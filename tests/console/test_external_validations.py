"""The release page lists the release's external validations (site, years, n, AUROC with its
CI beside development's) and opens each stored report, checked against its recorded hash."""

from __future__ import annotations

import html
from typing import Any

from console_world import NOW, REVIEWER, console_client, sign_in

from clinical_mlops.application.validation import validate_externally
from clinical_mlops.clock import FixedClock
from clinical_mlops.data.sources import synthetic_source
from clinical_mlops.data.synthetic import SyntheticConfig
from clinical_mlops.features.snapshot import build_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.registry.registry import Registry
from clinical_mlops.tasks import load_task


def test_release_page_lists_external_validations_and_opens_the_report(
    fresh_world: dict[str, Any],
) -> None:
    ws, v1 = fresh_world["ws"], fresh_world["v1"]
    clock = FixedClock(NOW)
    client = console_client(ws)
    sign_in(client, REVIEWER)
    before = html.unescape(client.get(f"/console/releases/{v1}").text)
    assert "No external validation recorded" in before

    west = synthetic_source(ws, SyntheticConfig(seed=23, scale=0.06, sites=("west",)))
    snapshot = build_snapshot(ws, load_task("icu_mortality_48h"), west, clock=clock)
    with Registry.open(ws, clock=clock) as reg, Governance(reg) as gov:
        done = validate_externally(gov, v1, on=snapshot.id, actor="demo.priya.nair")
        development = reg.bundle(v1).report().test

    page = html.unescape(client.get(f"/console/releases/{v1}").text)
    section = page[page.index("External validations") :]
    section = section[: section.index("</section>")]
    assert "west" in section
    assert f"{done.years[0]}–{done.years[1]}" in section
    assert f"{done.n} ({done.n_events} " in section
    assert done.auroc is not None and f"{done.auroc:.3f}" in section
    assert f"{development.auroc:.3f}" in section
    link = f"/console/releases/{v1}/validations/{done.id}"
    assert link in section

    report = client.get(link)
    assert report.status_code == 200
    assert "External validation against development" in report.text

    # a report changed after it was recorded is refused, not shown
    (done.path / "report.html").write_text("<p>edited</p>", encoding="utf-8")
    assert client.get(link).status_code != 200
