"""Exports to tools hospital ML teams already run: ODCS data contracts, seismometer tables.

* :func:`export_data_contract` — the input data contract of a registered release (its
  status, team and snapshot) or of a task spec, as an Open Data Contract Standard v3
  document (``clinical_mlops.registry.odcs``).
* :func:`export_seismometer` — one release's predictions and linked outcomes from the
  audit ledger, in the files Epic's open-source seismometer loads
  (``clinical_mlops.monitoring.seismometer``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from clinical_mlops.errors import MonitoringError, ReleaseNotFound, TaskSpecInvalid
from clinical_mlops.workspace import Workspace

__all__ = ["export_data_contract", "export_seismometer"]


def export_data_contract(workspace: Workspace, target: str) -> dict[str, Any]:
    """Return the ODCS v3 data contract of ``target``: a registered release, else a task.

    ``target`` is a release version (or bundle hash prefix) of the workspace's registry,
    a built-in task name or a task spec YAML file. A release's contract carries its
    registry status, its author and every person who decided on it (with their role)
    and the snapshot folder it was trained on; a task's is a draft of the spec alone.
    Anything else raises ``ReleaseNotFound`` naming what is known.
    """
    from clinical_mlops.application.services import Services
    from clinical_mlops.registry.odcs import odcs_contract
    from clinical_mlops.tasks import load_task

    with Services.open(workspace) as services:
        registry = services.registry
        try:
            release = registry.get(target)
        except ReleaseNotFound as missing:
            try:
                spec = load_task(target)
            except TaskSpecInvalid:
                raise ReleaseNotFound(
                    f"{missing} — nor is {target!r} a built-in task or a task spec file"
                ) from None
            return odcs_contract(spec)
        bundle = registry.bundle(release.version)
        spec = bundle.spec()
        team = [{"username": release.author, "role": "author"}]
        team += [
            {"username": a.person, "role": f"{a.role} approver"}
            for a in services.governance.approvals(release.version)
            if a.decision == "approve"
        ]
        snapshot_id = bundle.read_json("lineage.json").get("snapshot", {}).get("id")
        snapshot_dir = workspace.snapshots_dir / snapshot_id if snapshot_id else None
        return odcs_contract(
            spec, release=release, bundle=bundle, team=team, snapshot_dir=snapshot_dir
        )


def export_seismometer(
    workspace: Workspace,
    out: Path,
    *,
    release: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Return what was written: ``release``'s predictions and outcomes as seismometer reads them.

    ``release`` defaults to the task's served release. Predictions made in
    [``since``, ``until``) are exported, with the outcomes and overrides recorded by
    ``until``; a period without a prediction of the release raises ``MonitoringError``
    and writes nothing. Patients appear only as their audit-ledger pseudonyms.
    """
    from clinical_mlops.application.monitoring import served_release
    from clinical_mlops.ledger import Ledger
    from clinical_mlops.monitoring.records import read_ledger_records
    from clinical_mlops.monitoring.seismometer import seismometer_tables, write_seismometer_export
    from clinical_mlops.registry.registry import Registry

    version = release or served_release(workspace, task)[0]
    with Registry.open(workspace) as reg:
        rel = reg.get(version)
        bundle = reg.bundle(rel.version)
        spec = bundle.spec()
    opened: dict[int, Any] = {}
    with Ledger.open(workspace) as led:
        records = read_ledger_records(led, since=since, until=until, opened=opened)
    inferences = records["inferences"].get(rel.version)
    if inferences is None or len(inferences) == 0:
        period = f"from {since.isoformat() if since else 'the start'} to " + (
            until.isoformat() if until else "now"
        )
        raise MonitoringError(
            f"release {rel.version} made no prediction {period}: nothing to export "
            "(widen --since/--until, or name the release that served then)"
        )
    encounters = {
        seq: (view.payload or {}).get("encounter")
        for seq, view in opened.items()
        if view.entry.type == "inference"
    }
    tables = seismometer_tables(
        spec, inferences, records["outcomes"], records["overrides"], encounters=encounters
    )
    paths = write_seismometer_export(
        tables, out, spec=spec, release=rel.version, threshold=rel.threshold
    )
    return {
        "release": rel.version,
        "predictions": len(tables.predictions),
        "outcomes": int((tables.events["Type"] == tables.target).sum()),
        "overrides": int((tables.events["Type"] != tables.target).sum()),
        "unreadable": int(records["unreadable"]),
        "files": {k: str(v) for k, v in paths.items()},
    }
