"""Service health: whether a prediction could be answered, and recorded, right now.

A prediction needs five things: the audit ledger to take its record (fail closed: no
answer without it), the identity vault (pseudonyms, data keys, consent), the key provider
that signs the record (a Transit server must answer and accept the service's token), the
metadata database (which release is live, its status) and a verified release to score with.
:func:`check_health` probes each: the two evidence stores each take a write transaction
and roll it back (nothing is written), so a read-only, full-lock, removed or replaced
store shows here before a request fails on it; the metadata is read; the release is the
one the rollout names for the service's site, loaded and verified.

Each probe also drops connections that failed, so a store that becomes writable again
is used again without a restart, and the probe shows when. The reasons name the
condition only ("read-only", "disk full", ...): never a path, a URL or patient data,
so the result can be shown without credentials (``GET /readyz``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.errors import ClinicalMlopsError, KeyProviderUnavailable, PrivacyError

if TYPE_CHECKING:
    from clinical_mlops.serving.predictor import Predictor

__all__ = ["COMPONENTS", "Health", "check_health"]

#: what a prediction needs, in the order they are checked
COMPONENTS = ("ledger", "identity", "keys", "metadata", "release")
OK = "ok"


@dataclass(frozen=True)
class Health:
    """The state of each component: ``"ok"`` or why it is not ready."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        """True when every component is ready: a prediction can be answered and recorded."""
        return all(state == OK for state in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not_ready", "checks": dict(self.checks)}


def check_health(predictor: Predictor) -> Health:
    """Return the state of the ledger, the identity vault, the keys, the metadata and the release.

    Takes at most a few seconds (a store busy with other writers for longer counts as
    working: its writers queue). Never writes anything.
    """
    checks: dict[str, str] = {}
    checks["ledger"] = predictor.ledger.probe() or OK
    checks["identity"] = predictor.vault.probe() or OK
    checks["keys"] = _probe_keys(predictor)
    try:
        predictor.refresh()
        checks["metadata"] = OK
    except (sa.exc.DBAPIError, OSError, ClinicalMlopsError):
        checks["metadata"] = "cannot be read"
    if checks["metadata"] != OK:
        checks["release"] = "unknown while the metadata cannot be read"
        return Health(checks)
    try:
        _, release = predictor.decision(predictor.site)
        if release is None:
            checks["release"] = "no release is served at this site"
        else:
            predictor.scorer(release)  # loaded and verified once, then kept
            checks["release"] = OK
    except (sa.exc.DBAPIError, OSError, ClinicalMlopsError):
        checks["release"] = "the release named by the rollout cannot be loaded"
    return Health(checks)


def _probe_keys(predictor: Predictor) -> str:
    """Return OK when the signing keys can be read now (a Transit server asked), else why not."""
    # Reading the public keys writes nothing (a local keyring is not created by it) and,
    # with Transit, goes to the server with the service's token.
    try:
        predictor.ledger.provider.public_keys()
    except KeyProviderUnavailable:
        return "the key server cannot be reached or refused the service's token"
    except (PrivacyError, OSError):
        return "the keys cannot be read"
    return OK
