"""Release bundles: build one from a trained model, bring one into the registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from clinical_mlops.governance.board import Governance
    from clinical_mlops.registry.bundle import Bundle
    from clinical_mlops.registry.registry import Release

__all__ = ["build_release_bundle", "register_bundle"]


def build_release_bundle(
    workspace: Workspace,
    *,
    model_version: str,
    author: str,
    threshold: float | None = None,
    escalation: Path | None = None,
) -> Bundle:
    """Return the signed release bundle built from a trained model (or its unique prefix).

    ``threshold`` defaults to the task spec's operating threshold; ``escalation`` is a
    YAML file holding an escalation section that replaces the task spec's policy for
    this release (refused with ``TaskSpecInvalid`` naming ``escalation.<field>``). The
    policy is resolved at the release's threshold and signed in its ``deployment.json``.
    The bundle is content-addressed: the same model, threshold and policy give the same one.
    """
    from clinical_mlops.registry.bundle import build_bundle
    from clinical_mlops.tasks.spec import load_escalation

    policy = None if escalation is None else load_escalation(escalation)
    return build_bundle(
        workspace,
        model_version=model_version,
        author=author,
        threshold=threshold,
        escalation=policy,
    )


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
