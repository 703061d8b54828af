"""Trial use cases: start and end a candidate's silent or shadow trial, and its dossier.

A trial scores a candidate release beside the release live at a site, on the same
requests, and records each of its predictions (``trial_inference``) without showing it
to anyone at the bedside (``Governance.start_trial``). ``silent`` trials are the
governance team's evidence: their dossier summary is on the console's release page.
``shadow`` trials are an engineering comparison: their records are read only by
``clinical-mlops registry trial`` (which reads both modes, each labelled).
Starting or ending one needs a reason (``InputInvalid`` naming ``why``; nothing changes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinical_mlops.application.governance import Proof, prove
from clinical_mlops.errors import InputInvalid
from clinical_mlops.governance.board import Governance
from clinical_mlops.monitoring.trial import TrialRules, trial_dossier, write_trial_dossier

__all__ = ["end_trial", "release_trial_summary", "start_trial", "write_dossier"]

_REASON = "say why; the reason is recorded in the audit ledger (nothing was changed)"
#: what the governance team's views read: the trials visible to them in review
GOVERNANCE_MODES = ("silent",)


def _reason(why: str | None) -> str:
    text = why.strip() if isinstance(why, str) else ""
    if not text:
        raise InputInvalid([("why", _REASON)])
    return text


def _time(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputInvalid(
            [("as_of", f"expected an ISO-8601 time such as 2026-03-02T09:00:00Z, got {value!r}")]
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def start_trial(
    governance: Governance,
    version: str,
    *,
    site: str,
    mode: str,
    actor: str,
    why: str | None,
    identity: Proof,
    role: str | None = None,
) -> dict[str, Any]:
    """Return the trial of ``version`` started at ``site`` in ``mode`` (silent or shadow).

    ``identity`` proves who starts it (a session's identity, or the person's signature of
    exactly this act), verified before anything is recorded.
    """
    reason = _reason(why)
    verified = prove(
        governance,
        identity,
        "start_trial",
        person=actor,
        release=version,
        site=site,
        mode=mode,
        role=role,
        why=reason,
    )
    return governance.start_trial(
        version, site=site, mode=mode, actor=actor, why=reason, role=role, identity=verified
    )


def end_trial(
    governance: Governance,
    version: str,
    *,
    site: str,
    actor: str,
    why: str | None,
    identity: Proof,
    role: str | None = None,
) -> dict[str, Any]:
    """Return the trial of ``version`` at ``site`` ended now, by the person ``identity`` proves."""
    reason = _reason(why)
    verified = prove(
        governance, identity, "end_trial", person=actor, release=version, site=site, role=role,
        why=reason,
    )  # fmt: skip
    return governance.end_trial(
        version, site=site, actor=actor, why=reason, role=role, identity=verified
    )


def write_dossier(
    governance: Governance,
    version: str,
    *,
    as_of: datetime | str | None = None,
    site: str | None = None,
    out: Path | None = None,
    rules: TrialRules | None = None,
) -> dict[str, Any]:
    """Return the trial dossier of ``version`` (both modes), written as JSON and HTML to ``out``.

    ``as_of`` (a time, or ISO-8601 text; UTC when no offset is given) defaults to now on
    the registry's clock; text that is not a time is ``InputInvalid`` naming ``as_of``.
    The written files' paths are returned under ``"written"``.
    """
    registry = governance.registry
    when = _time(as_of) if as_of is not None else registry.clock.now()
    dossier = trial_dossier(
        registry, governance.ledger, version, as_of=when, site=site, rules=rules
    )
    if out is None:
        return dossier
    paths = write_trial_dossier(registry, governance.ledger, dossier, out)
    return dossier | {"written": {k: str(v) for k, v in paths.items()}}


def release_trial_summary(governance: Governance, version: str) -> dict[str, Any] | None:
    """Return the go/no-go summary of ``version``'s silent trials for review, or None if none.

    Per site: the verdict, its rules, and the candidate's and live release's key figures.
    Shadow trials are left out: they are an engineering comparison only.
    """
    registry = governance.registry
    trials = [
        t for t in registry.trials(version=version, running=False) if t["mode"] in GOVERNANCE_MODES
    ]
    if not trials:
        return None
    dossier = trial_dossier(
        registry,
        governance.ledger,
        version,
        as_of=registry.clock.now(),
        modes=GOVERNANCE_MODES,
        n_boot=500,
    )
    return {
        "trials": trials,
        "summary": dossier["summary"],
        "sites": [
            {
                "site": s["site"],
                "verdict": s["verdict"],
                "n_candidate": s["n_candidate"],
                "n_outcomes": s["candidate"]["n_outcomes"],
                "candidate_auroc": s["candidate"]["auroc"],
                "live_auroc": s["live"]["auroc"] if s["live"] else None,
                "candidate_reviews_per_100": s["candidate"]["reviews_per_100"],
                "live_reviews_per_100": s["live"]["reviews_per_100"] if s["live"] else None,
                "auroc_difference": s["auroc_difference"],
            }
            for s in dossier["sites"]
        ],
    }
