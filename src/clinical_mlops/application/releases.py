"""Release bundles: build one from a trained model, bring one into the registry, and show
a release's model card with its status as of now."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.registry.bundle import Bundle
    from clinical_mlops.registry.registry import Release

__all__ = ["build_release_bundle", "model_card", "register_bundle", "tag_tracked_run"]

log = logging.getLogger(__name__)


def build_release_bundle(
    workspace: Workspace,
    *,
    model_version: str,
    author: str,
    threshold: float | None = None,
    escalation: Path | None = None,
) -> Bundle:
    """Return the signed release bundle built from a trained model (or its unique prefix).

    ``threshold`` defaults to the task spec's operating threshold, ``escalation`` (a
    YAML file holding an escalation section, see :func:`~clinical_mlops.tasks.spec.
    load_escalation`; refused with ``TaskSpecInvalid`` naming ``escalation.<field>``) to
    the task spec's escalation policy. The report and model card in the bundle are computed at the release's
    threshold and policy. The bundle is content-addressed: building the same model at
    the same threshold and policy gives the same one.
    """
    from clinical_mlops.registry.bundle import build_bundle
    from clinical_mlops.tasks.spec import load_escalation

    bundle = build_bundle(
        workspace,
        model_version=model_version,
        author=author,
        threshold=threshold,
        escalation=None if escalation is None else load_escalation(escalation),
    )
    tag_tracked_run(workspace, bundle)
    return bundle


def tag_tracked_run(workspace: Workspace, bundle: Bundle, *, release: str | None = None) -> bool:
    """Return whether the MLflow run the bundle's model was trained in now names the bundle.

    When the model was tracked (``release.json`` names an ``mlflow_run_id``), that run is
    tagged with the bundle's SHA-256 (and ``release``, the registered version, when given)
    and gets the bundle's ``MANIFEST.json`` under ``release/``. The store is the one the
    training run used, as lineage names it (``MLFLOW_TRACKING_URI`` when lineage masked a
    password out of it). Best effort: the signed bundle is the record, so a store that
    cannot be reached is a warning on stderr, never a refused release.
    """
    from clinical_mlops.errors import TrackingUnavailable
    from clinical_mlops.modeling.trained import model_folder
    from clinical_mlops.registry import tracking

    info = bundle.release
    run_id = info.get("mlflow_run_id")
    if not run_id:
        return False
    lineage = json.loads(
        (model_folder(workspace, info["model_version"]) / "lineage.json").read_text("utf-8")
    )
    uri = lineage.get("tracking", {}).get("tracking_uri")
    if uri and "***" in uri:  # a password was masked out of lineage: the environment has it
        uri = tracking.resolve_tracking_uri(workspace)
    if not uri:
        return False
    tags = {
        "clinical_mlops.bundle_sha256": bundle.sha256,
        "clinical_mlops.model_version": str(info["model_version"]),
    }
    if release:
        tags["clinical_mlops.release"] = release
    try:
        tracking.tag_release(uri, run_id, tags=tags, manifest=bundle.path / "MANIFEST.json")
    except TrackingUnavailable as exc:
        log.warning("bundle %s not linked to MLflow run %s: %s", bundle.sha256[:16], run_id, exc)
        return False
    return True


def register_bundle(
    governance: Governance, source: Path, *, actor: str, why: str, role: str | None = None
) -> Release:
    """Return the draft release registered from a bundle folder or a ``.tar.gz`` export.

    An export is unpacked and verified into the workspace first; a folder is verified
    where it is. Registering needs the engineering role, recorded in the ledger.
    """
    from clinical_mlops.application.governance import register
    from clinical_mlops.registry.bundle import import_bundle, load_bundle

    workspace = governance.registry.workspace
    bundle = (
        import_bundle(workspace, source) if source.is_file() else load_bundle(workspace, source)
    )
    return register(governance, bundle, actor=actor, why=why, role=role)


def model_card(governance: Governance, version: str, *, fmt: str = "md") -> str:
    """Return the model card of ``version`` (Markdown or HTML) with its status as of now.

    The card is the one signed into the release bundle (verified on the way); the
    "Status as of" section above it is read from the registry at rendering time: the
    release's status, every recorded decision (who, in which role, when, why) and each
    risk acknowledged at gate 3 (who accepted it, in which role, when, why), dated with
    the governance clock. A page or file made from it is only as current as that date.
    """
    from clinical_mlops.clock import utc_iso
    from clinical_mlops.evaluation.model_card import render_card

    registry = governance.registry
    rel = registry.get(version)
    card = registry.bundle(rel.version).read_json("model_card.json")
    as_of = {
        "rendered_at": utc_iso(governance.clock.now()),
        "release": rel.version,
        "status": rel.status,
        "approvals": [a.to_json() for a in governance.approvals(rel.version)],
        "acknowledged_risks": [a.to_json() for a in governance.risk_acknowledgements(rel.version)],
    }
    return render_card(card, as_of=as_of, fmt=fmt)
