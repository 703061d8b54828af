"""Replay one past prediction from stored artifacts alone (R-A2).

An ``inference`` ledger entry names the release bundle it was served by (its
SHA-256) and carries the checked inputs in declared units. Replay opens the
entry (decrypting its payload with the subject's data key), loads *that* bundle
from the workspace's bundle folder — verified as it was at the time of the
inference: hashes, Ed25519 signature, validity then — and recomputes the
prediction through the very function that served it — scores, set, flags and the
routing under the release's signed escalation policy (with the drift-alert state the
record carries). The result lists every
compared field and, when something differs, exactly what and why; a payload
that can no longer be read (the patient was erased, or retention purged it) is
reported as such, not as a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import BundleSignatureInvalid, EntryNotFound, PredictionNotFound
from clinical_mlops.evaluation.phrases import without_reference
from clinical_mlops.ledger import Ledger
from clinical_mlops.modeling.model import Explainer
from clinical_mlops.registry.bundle import bundles_dir, load_bundle
from clinical_mlops.serving.predictor import ReleaseScorer
from clinical_mlops.workspace import Workspace

__all__ = ["COMPARED", "ReplayResult", "replay_entry", "replay_inference"]

#: payload field -> recomputed field it is compared with
COMPARED: dict[str, str] = {
    "raw_score": "raw_score",
    "p_raw": "p_raw",
    "probability": "probability",
    "conformal_set": "conformal_set",
    "flags": "flags",
    "completeness": "completeness",
    "escalation": "escalation",
    "explanation": "explanation",
}


@dataclass(frozen=True)
class ReplayResult:
    """The outcome of replaying one inference record."""

    seq: int
    status: str  # identical | different | erased | purged
    release: str | None = None
    model_version: str | None = None
    bundle_sha256: str | None = None
    compared: list[str] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    @property
    def identical(self) -> bool:
        return self.status == "identical"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "status": self.status,
            "identical": self.identical,
            "release": self.release,
            "model_version": self.model_version,
            "bundle_sha256": self.bundle_sha256,
            "compared": self.compared,
            "differences": self.differences,
            "reason": self.reason,
        }


class _Scorers:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.cache: dict[str, ReleaseScorer] = {}

    def get(self, *, task: str, sha: str, release: str, when: str) -> ReleaseScorer:
        if sha not in self.cache:
            path = bundles_dir(self.workspace) / f"{task}-{sha[:12]}"
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            bundle = load_bundle(self.workspace, path, clock=FixedClock(moment))
            if bundle.sha256 != sha:
                raise BundleSignatureInvalid(
                    f"bundle {path.name} has SHA-256 {bundle.sha256[:12]}, not the "
                    f"{sha[:12]} the inference record names"
                )
            self.cache[sha] = ReleaseScorer(bundle, release)
        return self.cache[sha]


def replay_entry(ledger: Ledger, seq: int, *, scorers: _Scorers) -> ReplayResult:
    """Return the replay of inference entry ``seq`` of an open ledger."""
    try:
        view = ledger.read(seq)
    except EntryNotFound as exc:
        raise PredictionNotFound(str(exc)) from None
    if view.entry.type != "inference":
        raise PredictionNotFound(
            f"ledger entry {seq} is a {view.entry.type!r} entry, not an inference record; "
            "list inference records with `clinical-mlops audit show`"
        )
    if view.status != "ok" or view.payload is None:
        why = (
            "the patient was erased: their data keys are destroyed, so the inputs can no "
            "longer be decrypted by anyone (R-A4); the entry itself still verifies"
            if view.status == "erased"
            else "the payload was purged under the retention policy (R-A5)"
        )
        return ReplayResult(seq=seq, status=view.status, reason=why)
    p = view.payload
    task = str(p["model_version"]).rsplit("-", 1)[0]
    scorer = scorers.get(
        task=task, sha=p["bundle_sha256"], release=p["release"], when=view.entry.time
    )
    checked = scorer.schema.check(p["inputs"])
    stored_explanation = p.get("explanation") or {}
    explain = stored_explanation.get("contributions") is not None
    hours = (p.get("context") or {}).get("hours_since_admission")
    # Contributions are recomputed the way the record's were: records from before the method
    # was recorded were explained by XGBoost's pred_contribs (tree models) or linearly.
    method = stored_explanation.get("method") or _legacy_explainer(scorer)
    core = scorer.score(
        [checked],
        [hours],
        explain=explain,
        method=method if explain else None,
        # the routing depends on whether a drift alert was open then, as the record says
        drift_alert=bool(p.get("drift_alert", False)),
    )[0]
    if explain and "method" not in stored_explanation:
        core["explanation"] = {k: v for k, v in core["explanation"].items() if k != "method"}
    differences = []
    compared = []
    for stored_name, new_name in COMPARED.items():
        if stored_name not in p:
            continue
        compared.append(stored_name)
        if p[stored_name] != core[new_name]:
            differences.append(
                {"field": stored_name, "stored": p[stored_name], "recomputed": core[new_name]}
            )
    if p.get("explanation_shown"):
        compared.append("explanation_shown")
        shown = core["top"]
        if not any("reference" in item for item in p["explanation_shown"]):
            # written before contributions carried their reference: compared as listed then
            shown = without_reference(shown)
        if p["explanation_shown"] != shown:
            differences.append(
                {
                    "field": "explanation_shown",
                    "stored": p["explanation_shown"],
                    "recomputed": shown,
                }
            )
    return ReplayResult(
        seq=seq,
        status="different" if differences else "identical",
        release=p["release"],
        model_version=p["model_version"],
        bundle_sha256=p["bundle_sha256"],
        compared=compared,
        differences=differences,
        reason=(
            "recomputed from the stored inputs with the bundle the record names"
            if not differences
            else "the recomputation from the named bundle differs from the record; the record "
            "or the bundle does not reflect what was served — open an incident"
        ),
    )


def _legacy_explainer(scorer: ReleaseScorer) -> Explainer:
    return "linear" if scorer.model.scorer.explainer == "linear" else "xgboost-pred-contribs"


def replay_inference(workspace: Workspace, seq: int) -> ReplayResult:
    """Return the replay of the inference record ``seq`` of the workspace's ledger."""
    return replay_many(workspace, [seq])[0]


def replay_many(workspace: Workspace, seqs: list[int]) -> list[ReplayResult]:
    """Return the replays of several inference records (bundles loaded once each)."""
    scorers = _Scorers(workspace)
    with Ledger.open(workspace, create=False) as ledger:
        return [replay_entry(ledger, s, scorers=scorers) for s in seqs]
