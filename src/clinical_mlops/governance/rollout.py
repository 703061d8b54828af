"""Rollout modes per site, and the decision whatever serves a model must enforce.

- ``shadow``: scored and logged, never shown to anyone (engineering comparison only);
- ``silent``: scored and logged, visible to the governance team in review, not at the bedside;
- ``pilot``: shown to clinicians at the named pilot sites only;
- ``full``: shown at every site (site ``*``), only for an ``approved`` release.

The live manifest comes from :meth:`Registry.deployment_manifest`; a site without
its own entry falls back to ``*``; a suspended or retired release is never scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ServingDecision", "serving_decision"]


@dataclass(frozen=True)
class ServingDecision:
    """What a server may do for one request at one site."""

    release: str | None
    mode: str | None
    score: bool
    log: bool
    show_to_clinician: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "mode": self.mode,
            "score": self.score,
            "log": self.log,
            "show_to_clinician": self.show_to_clinician,
            "reason": self.reason,
        }


def serving_decision(manifest: dict[str, Any], *, site: str) -> ServingDecision:
    """Return what may be done at ``site`` under the deployment ``manifest``."""
    sites = manifest.get("sites", {})
    entry = sites.get(site) or sites.get("*")
    if entry is None:
        return ServingDecision(None, None, False, False, False, f"no release deployed at {site}")
    release, mode, status = entry["release"], entry["mode"], entry["status"]
    if status not in ("approved_limited", "approved"):
        return ServingDecision(
            release, mode, False, False, False, f"release {release} is {status}; not served"
        )
    if mode == "full" and status != "approved":
        return ServingDecision(
            release, mode, False, False, False, "full mode needs an approved release"
        )
    show = mode in ("pilot", "full")
    return ServingDecision(
        release,
        mode,
        True,
        True,
        show,
        f"{mode} mode at {site}: " + ("shown to clinicians" if show else "scored and logged only"),
    )
