"""The Predictor: one governed prediction per request, each with its audit record.

For every request, in this order:

1. inputs checked against the task spec — types, units, finiteness, valid ranges,
   undeclared fields refused (R-P1); the purpose must be one the spec allows;
2. the subject pseudonymised through the identity vault (an unknown subject is
   refused: no consent can exist for it);
3. the intended-use guard (R-P5): a patient younger than the cohort's minimum age
   or a setting other than the spec's is refused with its reason;
4. consent (R-P4): the subject's recorded consent must cover the stated purpose
   now; a refusal is a ``consent_refused`` ledger event; then data sufficiency: more
   inputs missing than the spec's ``max_missing_feature_fraction`` (the training
   cohort's rule) is refused as ``insufficient_data``, never imputed;
5. the live rollout decision for the site (``governance.rollout``), the site being the
   requester's credential's (:meth:`Predictor.site_for`): ``pilot`` and ``full``
   releases answer; each trial at the site (a candidate in ``silent`` or ``shadow``
   mode, beside the live release) is scored on the same requests and recorded as a
   ``trial_inference`` entry paired with the live request, never shown, and never
   changing or failing the live answer; where no release is live, the request gets
   nothing clinical and the candidate's ``inference`` record; a
   suspended release returns the clinical baseline score, marked as a fallback,
   never an error; a site without a release is refused;
6. scoring on the arrays path (``TrainedModel.apply_matrix``): calibrated
   probability, conformal set, flags, exact contributions in clinical words;
7. escalation under the release's declared policy (the task spec's ``escalation``
   section, resolved for the release and signed in its ``deployment.json``; see
   :mod:`clinical_mlops.modeling.escalation`): a case meeting a review condition within
   the review budget is routed to human review with an ``escalation`` ledger event
   naming the reasons; one beyond the budget is flagged ``review_deferred`` and not
   queued. The ``drift_alert`` condition reads whether a drift alert is open on the
   served release through the ``drift_alerts`` callable the application layer gives
   (re-read at most every ``status_ttl`` seconds);
8. exactly one ``inference`` ledger entry per scored request carrying every R-A1
   field, written durably before the answer is returned; refusals and fallbacks
   have their own entry types. A batch is written in one transaction, so a
   failure leaves no partial record. A request id is served once: the ledger's
   store holds it as a unique key written with the entry (``ledger.claims``), so
   a batch repeating an id already served — by this process or any other sharing
   the ledger — is refused whole with ``DuplicateRequest`` and records nothing.

Only a release whose bundle verifies (hashes, Ed25519 signature, workspace) is
loaded; the release status and rollout are re-read at most every
``status_ttl`` seconds, so a suspension takes effect within that time.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinical_mlops.clock import Clock, SystemClock
from clinical_mlops.errors import (
    AlreadyRecorded,
    BundleSignatureInvalid,
    DuplicateRequest,
    InputInvalid,
    PredictionNotFound,
    ReleaseNotServable,
    StoreUnavailable,
    SubjectErased,
)
from clinical_mlops.evaluation.baseline import ClinicalScore, score_for
from clinical_mlops.evaluation.phrases import Phraser
from clinical_mlops.governance.rollout import ServingDecision, serving_decision
from clinical_mlops.hashing import FinitePayload, is_text
from clinical_mlops.ledger import EntryView, Ledger, NewEntry
from clinical_mlops.ledger.claims import new_request_ids
from clinical_mlops.modeling.escalation import ResolvedEscalation, input_flags
from clinical_mlops.modeling.explain import EXPLANATION_FORMAT
from clinical_mlops.modeling.model import Explainer
from clinical_mlops.modeling.trained import TrainedModel
from clinical_mlops.privacy.consent import subjects_with_consents
from clinical_mlops.registry.bundle import Bundle, load_bundle
from clinical_mlops.registry.registry import LIVE, Registry, Release
from clinical_mlops.registry.task_choice import registered_task
from clinical_mlops.serving.inputs import CheckedInputs, InputSchema
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.vocabulary import REVIEW_REASONS, Flag, RefusalCode
from clinical_mlops.workspace import Workspace

_log = logging.getLogger(__name__)

__all__ = [
    "MAX_BATCH",
    "PREDICTION_FORMAT",
    "RESULT_ENTRY_TYPES",
    "PredictionRequest",
    "PredictionResult",
    "Predictor",
    "ReleaseScorer",
]

PREDICTION_FORMAT = "clinical-mlops/prediction/v1"
MAX_BATCH = 1000
#: the statuses in which a trial candidate is scored
TRIAL_STATUSES = LIVE
#: the ledger entry types that record a request's result, one per request
RESULT_ENTRY_TYPES = ("inference", "fallback_served", "inference_refused", "consent_refused")
_SET_WORDS = {(True, False): ["no"], (False, True): ["yes"], (True, True): ["no", "yes"]}
_REFUSAL_STATUS: dict[str, int] = {
    RefusalCode.SITE_NOT_PERMITTED: 403,
    RefusalCode.CONSENT_NOT_GRANTED: 403,
    RefusalCode.UNKNOWN_SUBJECT: 404,
    RefusalCode.OUTSIDE_INTENDED_USE: 422,
    RefusalCode.NOT_DEPLOYED: 503,
    RefusalCode.INSUFFICIENT_DATA: 422,
}


@dataclass(frozen=True)
class PredictionRequest:
    """One request: who (an identifier, pseudonymised here), why, where, and the inputs.

    ``encounter`` (an EHR encounter id, pseudonymised here like the subject), ``basis``
    (references of the EHR resources the inputs were read from) and ``ignored`` (how many
    resources sent reached no input) are recorded with the prediction when given.
    """

    subject_id: str
    purpose: str
    setting: str
    features: Mapping[str, Any]
    request_id: str | None = None
    site: str | None = None
    hours_since_admission: float | None = None
    #: the EHR's Encounter id; recorded pseudonymised, it groups review cases per encounter
    encounter: str | None = None
    basis: tuple[str, ...] = ()
    ignored: int = 0


@dataclass(frozen=True)
class PredictionResult:
    """What one request got; ``to_json`` is the shape the API, the ledger and FHIR share."""

    status: Literal["scored", "shadow", "fallback", "refused"]
    request_id: str
    audit_seq: int | None = None
    release: str | None = None
    model_version: str | None = None
    mode: str | None = None
    probability: float | None = None
    raw_score: float | None = None
    threshold: float | None = None
    above_threshold: bool | None = None
    risk: str | None = None
    conformal_set: list[str] | None = None
    flags: list[str] = field(default_factory=list)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    completeness: float | None = None
    escalated: bool = False
    escalation: list[str] = field(default_factory=list)
    fallback: dict[str, Any] | None = None
    refusal: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    coverage: float | None = None
    # The audit record's entry hash and the served bundle's SHA-256 (FHIR Provenance).
    entry_hash: str | None = None
    bundle_sha256: str | None = None

    @property
    def http_status(self) -> int:
        """Return the HTTP status a single request with this result answers with."""
        return _REFUSAL_STATUS[self.refusal["code"]] if self.refusal else 200

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": PREDICTION_FORMAT,
            "status": self.status,
            "request_id": self.request_id,
            "audit_seq": self.audit_seq,
            "release": self.release,
            "model_version": self.model_version,
            "mode": self.mode,
            "flags": self.flags,
        }
        if self.status == "scored":
            out |= {
                "probability": self.probability,
                "risk": self.risk,
                "threshold": self.threshold,
                "above_threshold": self.above_threshold,
                "conformal_set": self.conformal_set,
                "coverage": self.coverage,
                "contributions": self.contributions,
                "completeness": self.completeness,
                "escalated": self.escalated,
                "escalation": self.escalation,
            }
        elif self.status == "fallback":
            out |= {"fallback": self.fallback, "completeness": self.completeness}
        elif self.status == "refused":
            out["refusal"] = self.refusal
        return out


#: batch size from which Python's cyclic garbage collector waits until the batch is done
PAUSE_COLLECTOR_FROM = 64
_collector_lock = threading.Lock()
_collector_pausers = 0
_collector_was_on = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is scored; it resumes afterwards.

    A batch makes about a hundred objects per row (payloads, entries, results) that live
    until its transaction commits and form no reference cycles; the collector would only
    walk them over and over (measured: 15-20 % of a 1000-row batch's time). Memory is
    still freed by reference counting. Batches running at once on several threads share
    one pause: the collector resumes when the last of them is done, and only if it was
    running before.
    """
    global _collector_pausers, _collector_was_on
    with _collector_lock:
        if _collector_pausers == 0:
            _collector_was_on = gc.isenabled()
            gc.disable()
        _collector_pausers += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pausers -= 1
            if _collector_pausers == 0 and _collector_was_on:
                gc.enable()


def _plain_text(value: object) -> bool:
    """Return True for ASCII text, which ``is_text`` always accepts (a short way for it)."""
    return type(value) is str and value.isascii()


def risk_category(p: float, threshold: float) -> str:
    """Return the FHIR risk-probability code for ``p``: high at or above the operating threshold.

    ``moderate`` from half the threshold, ``low`` from 5 %, else ``negligible``;
    ``certain`` is never used — a model estimate is not a certainty.
    """
    if p >= threshold:
        return "high"
    if p >= threshold / 2:
        return "moderate"
    return "low" if p >= 0.05 else "negligible"


class ReleaseScorer:
    """One verified release, prepared for scoring: model, input schema, threshold, words."""

    def __init__(self, bundle: Bundle, release: str):
        self.bundle = bundle
        self.release = release
        self.model: TrainedModel = bundle.model()
        self.spec: TaskSpec = _spec_of(bundle)
        self.schema = InputSchema(self.spec, self.model.preprocessor, bundle.profile())
        self.threshold = bundle.threshold
        if not math.isfinite(self.threshold):
            raise ReleaseNotServable(f"release {release}: its threshold is not a finite number")
        self.policy: ResolvedEscalation = _policy_of(bundle, release)
        rel = bundle.release
        self.model_version = str(rel["model_version"])
        self.dataset_sha256 = str(rel["snapshot_id"])
        self.coverage = round(1.0 - self.model.conformal.alpha, 6)
        self.max_missing = self.spec.cohort.max_missing_feature_fraction
        self.medians = self.schema.imputed()
        self.phraser = Phraser(self.spec, self.model.preprocessor.features, self.medians)
        if hasattr(self.model.scorer, "booster"):
            # One thread per call: a single row gains nothing from a pool, and the service
            # runs requests in parallel itself.
            self.model.scorer.booster.set_param({"nthread": 1})
        # Compile the TreeSHAP tables now (a fraction of a second), not on the first request.
        self.explainer = self.model.scorer.explainer

    @property
    def watches_drift(self) -> bool:
        """True when the release's policy routes cases while a drift alert is open."""
        return Flag.DRIFT_ALERT in self.policy.review_on

    def score(
        self,
        checked: Sequence[CheckedInputs],
        hours: Sequence[float | None],
        *,
        explain: bool,
        method: Explainer | None = None,
        drift_alert: bool = False,
    ) -> list[dict[str, Any]]:
        """Return the core of each prediction: scores, set, flags, routing, contributions, words.

        The same function serves and replays, so a replay recomputes exactly what was served
        (``method``: how the record's contributions were computed, see ``TreeModel``;
        ``drift_alert``: whether a drift alert was open on the release, as recorded).
        ``escalation`` holds the reason words of the review conditions a case meets, in
        the policy's order, when it is queued; empty otherwise.
        """
        X = self.schema.encode([c.values for c in checked])
        pred = self.model.apply_matrix(X, explain=explain, method=method)
        arrays = [pred.margin, pred.p_raw, pred.p_cal]
        if pred.contributions is not None:
            arrays.append(pred.contributions)
        if not all(np.isfinite(a).all() for a in arrays):
            raise ReleaseNotServable(
                f"release {self.release} produced a non-finite score or contribution for these "
                "inputs; nothing was recorded or returned. Suspend the release and report it"
            )
        names = list(self.model.preprocessor.features)
        keys = [*names, "bias"]
        early = self.spec.prediction_time_hours
        flag_arrays = input_flags(
            pred.p_cal,
            pred.sets,
            missing_count=np.array([len(c.missing) for c in checked], dtype=np.int64),
            n_features=len(names),
            max_missing=self.max_missing,
            out_of_range=np.array([bool(c.out_of_profile) for c in checked], dtype=bool),
            too_early=np.array([h is not None and h < early for h in hours], dtype=bool),
        )
        routing = self.policy.route(pred.p_cal, flag_arrays, drift_alert=drift_alert)
        flag_rows = np.column_stack(list(flag_arrays.values())).tolist()
        flag_names = [str(f) for f in flag_arrays]
        margins, p_raws, p_cals = pred.margin.tolist(), pred.p_raw.tolist(), pred.p_cal.tolist()
        sets = pred.sets.tolist()
        queued, deferred = routing.queued.tolist(), routing.deferred.tolist()
        rows, tops = None, None
        if pred.contributions is not None:
            rows = pred.contributions.tolist()
            tops = self.phraser.top([c.values for c in checked], pred.contributions[:, :-1])
        out = []
        for i, c in enumerate(checked):
            conformal_set = _SET_WORDS.get((bool(sets[i][0]), bool(sets[i][1])), [])
            flags = [f for f, on in zip(flag_names, flag_rows[i], strict=True) if on]
            reasons = routing.reasons(i)
            for live in (Flag.NEAR_THRESHOLD, Flag.DRIFT_ALERT):
                if live in reasons:
                    flags.append(str(live))
            if deferred[i]:
                flags.append(str(Flag.REVIEW_DEFERRED))
            p = p_cals[i]
            core: dict[str, Any] = {
                "raw_score": margins[i],
                "p_raw": p_raws[i],
                "probability": p,
                "conformal_set": conformal_set,
                "flags": flags,
                "above_threshold": p >= self.threshold,
                "risk": risk_category(p, self.threshold),
                "completeness": round(c.completeness, 6),
                "escalation": [REVIEW_REASONS[r] for r in reasons] if queued[i] else [],
            }
            if rows is not None and tops is not None:
                contrib = dict(zip(keys, rows[i], strict=True))
                core["explanation"] = {
                    "format": EXPLANATION_FORMAT,
                    "method": pred.explainer,
                    "contributions": contrib,
                }
                core["top"] = tops[i]
            else:
                core["explanation"] = {"format": EXPLANATION_FORMAT, "contributions": None}
                core["top"] = []
            out.append(core)
        return out

    @property
    def bedside_baseline(self) -> ClinicalScore | None:
        """The baseline score a request's inputs can give; None if the task has no such score.

        A task that declares ``clinical_baseline: none``, or reads its score from a table
        column, has nothing to compute at the bedside: a suspended release of it is refused,
        never answered with a number of another kind.
        """
        score = score_for(self.spec)
        return None if score is None or score.column is not None else score

    def fallback(self, checked: CheckedInputs) -> dict[str, Any]:
        """Return the clinical baseline score of one checked request, marked as a fallback."""
        score = self.bedside_baseline
        if score is None:
            raise ReleaseNotServable(
                f"release {self.release} is suspended and task {self.spec.name!r} has no "
                "clinical baseline score computable from its inputs"
            )
        frame = pd.DataFrame([{k: (np.nan if v is None else v) for k, v in checked.values.items()}])
        return self.baseline(int(score.score(frame)[0]))

    def baseline(self, points: int) -> dict[str, Any]:
        """Return the fallback answer for a clinical baseline score of ``points``."""
        score = self.bedside_baseline
        if score is None:
            raise ReleaseNotServable(
                f"task {self.spec.name!r} has no clinical baseline score computable from its inputs"
            )
        return {
            "name": score.name,
            "score": points,
            "max_points": score.max_points,
            "note": (
                f"The model is suspended: this is the {score.name}, the task's clinical "
                "baseline score, not a model prediction. It ranks risk; it is not a probability."
            ),
            "source": score.source,
        }


def _policy_of(bundle: Bundle, release: str) -> ResolvedEscalation:
    """Return the escalation policy signed in the release's ``deployment.json``.

    A bundle built before escalation policies were declared per release names none: it
    is refused (rebuild the release from its model, which resolves the task's policy),
    never served under a policy nobody approved.
    """
    found = bundle.deployment.get("escalation")
    if not isinstance(found, dict):
        raise ReleaseNotServable(
            f"release {release}: its bundle declares no escalation policy (deployment.json has "
            "no 'escalation'); build a new release of the model with `clinical-mlops registry "
            "bundle`, which records the task's policy, and take it through the gates"
        )
    try:
        return ResolvedEscalation.from_json(found)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseNotServable(
            f"release {release}: its bundle's escalation policy cannot be read ({exc}); "
            "build a new release"
        ) from None


def _spec_of(bundle: Bundle) -> TaskSpec:
    """Return the installed task spec, if its input contract is the one signed in the bundle.

    The bundle's ``feature_schema.json`` holds the features (kinds, units, ranges,
    categories, approval status) and cohort the release was validated and approved
    with. Serving checks requests against the installed spec only when those agree,
    so a spec edit that changes what a release accepts cannot slip in silently.
    """
    spec = bundle.spec()
    signed = bundle.read_json("feature_schema.json")
    keys = ("name", "kind", "unit", "valid_range", "categories", "status")
    installed = [
        {
            "name": f.name,
            "kind": f.kind,
            "unit": f.shown_unit,
            "valid_range": list(f.valid_range) if f.valid_range else None,
            "categories": list(f.categories) if f.categories else None,
            "status": f.status,
        }
        for f in spec.features
    ]
    approved = [{k: f.get(k) for k in keys} for f in signed["features"]]
    if installed != approved or spec.cohort.model_dump(mode="json") != signed["cohort"]:
        raise ReleaseNotServable(
            f"release bundle {bundle.path.name}: the installed task spec of {bundle.task} "
            "declares other features or another cohort than the release was approved with; "
            "serve it with the package version it was built with, or build, gate and approve "
            "a new release"
        )
    return spec


class Predictor:
    """Serves one task's live release with every guard; see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        task: str | None,
        site: str = "*",
        release: str | None = None,
        clock: Clock | None = None,
        status_ttl: float = 2.0,
        drift_alerts: Callable[[str], bool] | None = None,
    ):
        self.workspace = workspace
        self.task = task or ""  # or the workspace's one task, found once the registry is open
        self.site = site
        self.clock: Clock = clock or SystemClock()
        self.status_ttl = status_ttl
        self.registry = Registry.open(workspace, clock=self.clock)
        self._pinned = release
        self._scorers: dict[str, ReleaseScorer] = {}
        self._lock = threading.Lock()
        self._manifest: dict[str, Any] = {}
        self._manifest_at = -math.inf
        self._statuses: dict[str, str] = {}
        self._trials: dict[str, list[tuple[str, str]]] = {}
        self._drift_alerts = drift_alerts
        self._drift: dict[str, tuple[float, bool]] = {}
        try:
            self.task = registered_task(self.registry, task, release=release)
            self.default = self._initial_release()
            # Never creates a ledger or an identity vault: a service whose stores are
            # missing refuses to start (a ledger lost under a workspace is named as such).
            self.ledger = Ledger.open(workspace, clock=self.clock, create=False)
        except BaseException:
            self.registry.close()
            raise
        try:
            # A ledger from before request ids were unique is indexed now, not on a request;
            # one that cannot be written yet is indexed by the first write that needs it
            # (until then the service fails closed, as for any unwritable store).
            try:
                self.ledger.ensure_claims()
            except StoreUnavailable as exc:
                _log.warning("unique keys not indexed at start: %s", exc)
            self.vault = self.ledger.vault
            self.scorer(self.default)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        workspace: Workspace,
        *,
        task: str | None = None,
        site: str = "*",
        release: str | None = None,
        clock: Clock | None = None,
        status_ttl: float = 2.0,
        drift_alerts: Callable[[str], bool] | None = None,
    ) -> Predictor:
        """Return a predictor for ``task``'s active release (or ``release``), verified on load.

        Without ``task``, the task of ``release``, or the one task the workspace has
        releases of (several tasks: ``ReleaseNotServable``, name one). ``drift_alerts``
        answers whether a drift alert is open (or acknowledged) on a release, for policies
        that review on ``drift_alert`` (monitoring's, supplied by the application layer:
        ``application.scoring.open_predictor``); without it no drift alert is ever seen.

        Raises ``ReleaseNotServable`` when there is no release in a servable status, and
        ``BundleSignatureInvalid`` when its bundle fails verification — a service must
        refuse to start on either.
        """
        return cls(
            workspace,
            task=task,
            site=site,
            release=release,
            clock=clock,
            status_ttl=status_ttl,
            drift_alerts=drift_alerts,
        )

    def close(self) -> None:
        self.ledger.close()
        self.registry.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- releases and rollout ------------------------------------------------------------------
    def _initial_release(self) -> str:
        if self._pinned:
            rel = self.registry.get(self._pinned)
        else:
            found = self.registry.active(self.task)
            if found is None:
                # A task's first release may run silent before any release is approved: its
                # trial's release checks the inputs, and a site without a live release
                # answers with nothing clinical.
                trial = next(
                    (
                        tr
                        for tr in self.registry.trials(task=self.task)
                        if self.registry.get(tr["release"]).status in TRIAL_STATUSES
                    ),
                    None,
                )
                found = self.registry.get(trial["release"]) if trial else None
            if found is None:
                raise ReleaseNotServable(
                    f"task {self.task} has no active approved release in workspace "
                    f"{self.workspace.root}; approve one with `clinical-mlops registry promote`"
                )
            rel = found
        if rel.status not in ("approved_limited", "approved", "suspended"):
            raise ReleaseNotServable(
                f"release {rel.version} is {rel.status}; only approved_limited, approved or "
                "suspended (served as a fallback) releases can be loaded"
            )
        return rel.version

    def scorer(self, release: str) -> ReleaseScorer:
        """Return the prepared scorer of ``release``, verifying its bundle on first use."""
        with self._lock:
            found = self._scorers.get(release)
        if found is not None:
            return found
        rel: Release = self.registry.get(release)
        bundle = load_bundle(self.workspace, rel.path, clock=self.clock)
        if bundle.sha256 != rel.bundle_sha256:
            raise BundleSignatureInvalid(
                f"release {release}: the bundle on disk is not the one registered "
                f"({bundle.sha256[:12]} != {rel.bundle_sha256[:12]}); refusing to serve it"
            )
        made = ReleaseScorer(bundle, release)
        with self._lock:
            self._scorers[release] = made
        return made

    def refresh(self) -> None:
        """Re-read the live deployment manifest and release statuses now (drift alerts on next use)."""
        manifest = self.registry.deployment_manifest(self.task)
        statuses = {r.version: r.status for r in self.registry.list(task=self.task)}
        trials: dict[str, list[tuple[str, str]]] = {}
        for tr in manifest.get("trials", []):
            if statuses.get(tr["release"]) in TRIAL_STATUSES:
                trials.setdefault(tr["site"], []).append((tr["release"], tr["mode"]))
        with self._lock:
            self._manifest, self._statuses, self._trials = manifest, statuses, trials
            self._manifest_at = time.monotonic()
            self._drift.clear()

    def trials_at(self, site: str) -> list[tuple[str, str]]:
        """Return the (release, mode) of each trial running at ``site``, as last read.

        A pinned predictor serves its one release and runs no trial.
        """
        if self._pinned:
            return []
        if time.monotonic() - self._manifest_at > self.status_ttl:
            self.refresh()
        return list(self._trials.get(site, ()))

    def decision(self, site: str) -> tuple[ServingDecision, str | None]:
        """Return the rollout decision at ``site`` and the release it names (or the pinned one)."""
        if time.monotonic() - self._manifest_at > self.status_ttl:
            self.refresh()
        if self._pinned:
            status = self._statuses.get(self._pinned, "unknown")
            manifest = {"sites": {"*": {"release": self._pinned, "mode": "full", "status": status}}}
            if status == "approved_limited":
                manifest["sites"]["*"]["mode"] = "silent"
            return serving_decision(manifest, site="*"), self._pinned
        decision = serving_decision(self._manifest, site=site)
        return decision, decision.release

    def status_of(self, release: str) -> str:
        """Return the registry status of ``release`` as last read."""
        return self._statuses.get(release, "unknown")

    def drift_alert_open(self, release: str) -> bool:
        """Return whether a drift alert is open on ``release``, read at most every ``status_ttl`` s.

        Read only for a release whose policy reviews on ``drift_alert``; a predictor given
        no ``drift_alerts`` source sees none.
        """
        if self._drift_alerts is None or not self.scorer(release).watches_drift:
            return False
        with self._lock:
            seen = self._drift.get(release)
        if seen is not None and time.monotonic() - seen[0] <= self.status_ttl:
            return seen[1]
        found = bool(self._drift_alerts(release))
        with self._lock:
            self._drift[release] = (time.monotonic(), found)
        return found

    def models(self) -> list[dict[str, Any]]:
        """Return the task's releases with status and where they run (for ``GET /v1/models``)."""
        self.refresh()
        sites = self._manifest.get("sites", {})
        out = []
        for rel in self.registry.list(task=self.task):
            out.append(
                rel.to_json()
                | {
                    "sites": {
                        s: e["mode"] for s, e in sites.items() if e["release"] == rel.version
                    },
                    "trials": {
                        tr["site"]: tr["mode"]
                        for tr in self._manifest.get("trials", [])
                        if tr["release"] == rel.version
                    },
                    "loaded": rel.version in self._scorers,
                }
            )
        for entry in out:
            entry.pop("path", None)
        return out

    def recorded_result(self, view: EntryView) -> PredictionResult:
        """Return the result a request was given, rebuilt from the ledger record it got.

        ``view`` is the request's ``inference``, ``fallback_served``, ``inference_refused``
        or ``consent_refused`` entry. The result's ``to_json`` is the object the request
        was answered with, so a batch run that resumes writes it without scoring the
        request again (and without a second record). Raises ``PredictionNotFound`` for
        another entry type, or a record erased or purged.
        """
        seq, kind, p = view.entry.seq, view.entry.type, view.payload
        if kind not in RESULT_ENTRY_TYPES:
            raise PredictionNotFound(
                f"ledger entry {seq} is a {kind} entry, not a request's result"
            )
        if view.status != "ok" or p is None:
            raise PredictionNotFound(
                f"ledger entry {seq} is {view.status}: the result it recorded cannot be read"
            )
        rid = str(p["request_id"])
        if kind in ("inference_refused", "consent_refused"):
            code = str(p.get("code", RefusalCode.CONSENT_NOT_GRANTED))
            refusal = {
                "code": code,
                "message": p["message"],
                "http_status": _REFUSAL_STATUS[code],
                "audit_seq": seq,
            }
            return PredictionResult(
                status="refused", request_id=rid, audit_seq=seq, refusal=refusal
            )
        inputs = dict(p["inputs"])
        present = 1.0 - sum(v is None for v in inputs.values()) / max(len(inputs), 1)
        common: dict[str, Any] = {
            "request_id": rid,
            "audit_seq": seq,
            "release": p["release"],
            "model_version": p["model_version"],
        }
        if kind == "fallback_served":
            return PredictionResult(
                status="fallback",
                mode="suspended",
                flags=["suspended"],
                fallback=self.scorer(p["release"]).baseline(int(p["baseline_score"])),
                completeness=round(present, 6),
                **common,
            )
        if not p["shown_to_clinician"]:
            return PredictionResult(status="shadow", mode=p["mode"], **common)
        probability, threshold = p["probability"], p["threshold"]
        return PredictionResult(
            status="scored",
            mode=p["mode"],
            probability=probability,
            raw_score=p["raw_score"],
            threshold=threshold,
            above_threshold=probability >= threshold,
            risk=risk_category(probability, threshold),
            conformal_set=p["conformal_set"],
            flags=p["flags"],
            contributions=p["explanation_shown"],
            completeness=p["completeness"],
            escalated=bool(p["escalation"]),
            escalation=p["escalation"],
            inputs=inputs,
            coverage=p["coverage"],
            **common,
        )

    # -- predicting --------------------------------------------------------------------------------
    def site_for(
        self, requested: str | None, sites: Sequence[str] | None
    ) -> tuple[str, str | None]:
        """Return the site a request is scored at and, when it is refused, why.

        ``sites`` are the sites the requester's credential names, its home site first
        (``()``: the credential names none, so the service's own site); None is a local
        caller with the workspace in hand (the CLI), who may name any site. A request
        naming no site is scored at the credential's home site. A request naming ``*``
        or a site its credential does not name is refused: the site decides whether a
        clinician sees the prediction, so it is never the caller's to choose.
        """
        if sites is None:
            return requested or self.site, None
        allowed = tuple(sites) or (self.site,)
        if requested is None:
            return allowed[0], None
        if requested == "*":
            return allowed[0], (
                "site '*' is the rollout's wildcard, not a site; leave 'site' out: the site "
                "comes from your credential"
            )
        if requested not in allowed:
            return allowed[0], (
                f"site {requested!r} is not one your credential names "
                f"({', '.join(map(repr, allowed))}); leave 'site' out: the site comes from "
                "your credential"
            )
        return requested, None

    def predict(
        self,
        request: PredictionRequest,
        *,
        requester: str,
        explain: bool = True,
        sites: Sequence[str] | None = None,
    ) -> PredictionResult:
        """Return the result of one request (see :meth:`predict_many`)."""
        return self.predict_many(
            [request], requester=requester, explain=explain, where="", sites=sites
        )[0]

    def predict_many(
        self,
        requests: Sequence[PredictionRequest],
        *,
        requester: str,
        explain: bool = True,
        where: str = "items",
        sites: Sequence[str] | None = None,
    ) -> list[PredictionResult]:
        """Return one result per request, after writing their ledger entries in one transaction.

        Raises ``InputInvalid`` (nothing written) when any request's inputs fail the
        spec, ``DuplicateRequest`` (nothing written) when a request id was already
        served: the ledger refuses the batch's transaction, however many writers race
        with the same id, so exactly one of them is served. Refusals
        (a site the requester's credential does not name, unknown subject, outside
        intended use, no consent, no release at the site) are results with
        ``status == "refused"`` and their own ledger entries; a patient erased (by any
        process) is an unknown subject. ``sites`` are the sites the requester's credential
        names (see :meth:`site_for`).
        """
        if len(requests) < PAUSE_COLLECTOR_FROM:
            return self._predict_erasure_safe(requests, requester, explain, where, sites)
        with collector_paused():
            return self._predict_erasure_safe(requests, requester, explain, where, sites)

    def _predict_erasure_safe(
        self,
        requests: Sequence[PredictionRequest],
        requester: str,
        explain: bool,
        where: str,
        sites: Sequence[str] | None,
    ) -> list[PredictionResult]:
        try:
            return self._predict_many(
                requests, requester=requester, explain=explain, where=where, sites=sites
            )
        except SubjectErased:
            # A patient was erased between looking the batch's patients up and sealing their
            # records, so nothing was written; looked up again, they are unknown and refused.
            return self._predict_many(
                requests, requester=requester, explain=explain, where=where, sites=sites
            )

    def _predict_many(
        self,
        requests: Sequence[PredictionRequest],
        *,
        requester: str,
        explain: bool,
        where: str,
        sites: Sequence[str] | None,
    ) -> list[PredictionResult]:
        if len(requests) > MAX_BATCH:
            raise InputInvalid([(where or "items", f"{len(requests)} requests exceed {MAX_BATCH}")])
        if not requests:
            raise InputInvalid([(where or "items", "at least one request is needed")])
        fresh = iter(new_request_ids(sum(not r.request_id for r in requests)))
        ids = [r.request_id or next(fresh) for r in requests]
        checked = self._check(requests, ids, where=where)
        now = self.clock.now()
        entries: list[NewEntry] = []
        # (request index, the result's fields, its entry's index): results are made once the
        # entries are durable and have their seqs
        pending: list[tuple[int, dict[str, Any], int]] = []
        to_score: dict[str, list[int]] = {}
        decisions: dict[int, tuple[ServingDecision, str]] = {}
        subjects: dict[int, str] = {}
        at_site: dict[str, tuple[ServingDecision, str | None, bool]] = {}

        def refuse(i: int, code: RefusalCode, message: str, subject: str | None) -> None:
            r = requests[i]
            if code == RefusalCode.CONSENT_NOT_GRANTED and subject is not None:
                entry = NewEntry(
                    type="consent_refused",
                    actor=requester,
                    subject=subject,
                    payload=FinitePayload(
                        purpose=r.purpose, requester=requester, request_id=ids[i], message=message
                    ),
                )
            else:
                entry = NewEntry(
                    type="inference_refused",
                    actor=requester,
                    subject=subject,
                    payload=FinitePayload(
                        code=str(code),
                        message=message,
                        requester=requester,
                        purpose=r.purpose,
                        request_id=ids[i],
                        setting=r.setting,
                        **context_of.get(i, {}),
                    ),
                )
            entries.append(entry)
            refusal = {"code": str(code), "message": message, "http_status": _REFUSAL_STATUS[code]}
            pending.append((i, {"status": "refused", "refusal": refusal}, len(entries) - 1))

        # one round trip for the whole batch: each subject's pseudonym and consent records
        known = subjects_with_consents(self.vault, identifiers=[r.subject_id for r in requests])
        spec = self.scorer(self.default).spec
        min_age, setting = spec.cohort.min_age, spec.cohort.setting
        n_inputs = len(self.scorer(self.default).model.preprocessor.features)
        max_missing = spec.cohort.max_missing_feature_fraction
        site_of: dict[int, str] = {}
        # what an EHR request adds to its record: the encounter (pseudonymised), the
        # resources its inputs were read from and how many it sent that reached none
        context_of: dict[int, dict[str, Any]] = {}
        for i, r in enumerate(requests):
            subject, consent = known.get(r.subject_id, (None, []))
            if subject is not None and (r.encounter is not None or r.basis or r.ignored):
                context_of[i] = {
                    "encounter": (
                        self.vault.encounter_pseudonym(subject, r.encounter)
                        if r.encounter is not None
                        else None
                    ),
                    "basis": list(r.basis),
                    "ignored": r.ignored,
                }
            site_of[i], wrong_site = self.site_for(r.site, sites)
            if wrong_site:
                refuse(i, RefusalCode.SITE_NOT_PERMITTED, wrong_site, subject)
                continue
            if subject is None:
                refuse(
                    i,
                    RefusalCode.UNKNOWN_SUBJECT,
                    "the subject is not known to the identity vault, so no consent can cover "
                    "this request; register the patient and record consent first",
                    None,
                )
                continue
            subjects[i] = subject
            age = checked[i].values.get("age")
            if r.setting != setting:
                refuse(
                    i,
                    RefusalCode.OUTSIDE_INTENDED_USE,
                    f"setting {r.setting!r} is outside the intended use (validated for "
                    f"{setting!r} only); the model must not be used here",
                    subject,
                )
                continue
            if age is None or age < min_age:
                refuse(
                    i,
                    RefusalCode.OUTSIDE_INTENDED_USE,
                    f"age {age} is under {min_age:g}: the model was validated for patients aged "
                    f"{min_age:g} or older only and must not be used for this patient",
                    subject,
                )
                continue
            if not any(c.covers(r.purpose, now) for c in consent):
                refuse(
                    i,
                    RefusalCode.CONSENT_NOT_GRANTED,
                    f"the patient's recorded consent does not cover purpose {r.purpose!r}; "
                    "the request is refused and the refusal logged",
                    subject,
                )
                continue
            missing = checked[i].missing
            if len(missing) / max(n_inputs, 1) > max_missing:
                refuse(
                    i,
                    RefusalCode.INSUFFICIENT_DATA,
                    f"insufficient data: {len(missing)} of {n_inputs} inputs are missing "
                    f"({', '.join(missing)}); the model was validated on stays missing at most "
                    f"{max_missing:.0%} of them (cohort.max_missing_feature_fraction) and "
                    "imputes no more: no risk is given",
                    subject,
                )
                continue
            site = site_of[i]
            if site not in at_site:
                decision, release = self.decision(site)
                suspended = release is not None and self.status_of(release) == "suspended"
                at_site[site] = (decision, release, suspended)
            decision, release, suspended = at_site[site]
            if release is not None and suspended:
                if self.scorer(release).bedside_baseline is None:
                    refuse(
                        i,
                        RefusalCode.NOT_DEPLOYED,
                        f"release {release} is suspended and its task has no clinical baseline "
                        "score computable from the request's inputs to serve in its place",
                        subject,
                    )
                    continue
                decisions[i] = (decision, release)
                continue
            if release is None and decision.release is None and (alone := self.trials_at(site)):
                # No live release here, a trial: the request is answered with nothing
                # clinical and its record is the (first) candidate's, as in silent mode.
                release, mode = alone[0]
                decision = ServingDecision(
                    release,
                    mode,
                    True,
                    True,
                    False,
                    f"{mode} trial of {release} at {site}, no live release: scored and logged only",
                )
            if not decision.score or release is None:
                refuse(
                    i,
                    RefusalCode.NOT_DEPLOYED,
                    f"no release is served here: {decision.reason}",
                    subject,
                )
                continue
            decisions[i] = (decision, release)
            to_score.setdefault(release, []).append(i)

        cores: dict[int, dict[str, Any]] = {}
        drift_of: dict[str, bool] = {}
        for release, idx in to_score.items():
            sc = self.scorer(release)
            drift_of[release] = self.drift_alert_open(release)
            scored = sc.score(
                [checked[i] for i in idx],
                [requests[i].hours_since_admission for i in idx],
                explain=explain,
                drift_alert=drift_of[release],
            )
            cores.update(zip(idx, scored, strict=True))

        trial_cores = self._score_trials(decisions, site_of, requests, checked)

        scorers = {rel: self.scorer(rel) for rel in {rel for _, rel in decisions.values()}}
        for i, (decision, release) in decisions.items():
            sc = scorers[release]
            r = requests[i]
            context = {
                "setting": r.setting,
                "site": site_of[i],
                "hours_since_admission": r.hours_since_admission,
            }
            if i not in cores:  # suspended: the safe fallback
                fb = sc.fallback(checked[i])
                entries.append(
                    NewEntry(
                        type="fallback_served",
                        actor=requester,
                        subject=subjects[i],
                        payload=FinitePayload(
                            model_version=sc.model_version,
                            release=release,
                            baseline=fb["name"],
                            baseline_score=fb["score"],
                            inputs=checked[i].values,
                            context=context,
                            requester=requester,
                            purpose=r.purpose,
                            request_id=ids[i],
                            **context_of.get(i, {}),
                        ),
                    )
                )
                fields: dict[str, Any] = {
                    "status": "fallback",
                    "release": release,
                    "model_version": sc.model_version,
                    "mode": "suspended",
                    "flags": ["suspended"],
                    "fallback": fb,
                    "completeness": round(checked[i].completeness, 6),
                }
                pending.append((i, fields, len(entries) - 1))
                entries += self._trial_entries(
                    trial_cores.get(i, ()),
                    i,
                    ids,
                    requests,
                    subjects,
                    context,
                    release,
                    requester,
                    context_of,
                )
                continue
            core = cores[i]
            shown = decision.show_to_clinician
            # recorded when the policy reads it, so a replay routes the case as it was routed
            watched = {"drift_alert": drift_of[release]} if sc.watches_drift else {}
            # Every number here is finite: inputs are checked, model outputs by ``score``.
            payload = FinitePayload(
                format=PREDICTION_FORMAT,
                model_version=sc.model_version,
                release=release,
                bundle_sha256=sc.bundle.sha256,
                dataset_sha256=sc.dataset_sha256,
                mode=decision.mode,
                shown_to_clinician=shown,
                inputs=checked[i].values,
                context=context,
                raw_score=core["raw_score"],
                p_raw=core["p_raw"],
                probability=core["probability"],
                threshold=sc.threshold,
                conformal_set=core["conformal_set"],
                coverage=sc.coverage,
                flags=core["flags"],
                completeness=core["completeness"],
                explanation=core["explanation"],
                explanation_shown=core["top"] if shown else [],
                escalation=core["escalation"],
                requester=requester,
                purpose=r.purpose,
                request_id=ids[i],
                **watched,
                **context_of.get(i, {}),
            )
            entries.append(
                NewEntry(type="inference", actor=requester, subject=subjects[i], payload=payload)
            )
            at = len(entries) - 1
            if core["escalation"]:
                entries.append(
                    NewEntry(
                        type="escalation",
                        actor=requester,
                        subject=subjects[i],
                        payload=FinitePayload(
                            reason="; ".join(core["escalation"]),
                            model_version=sc.model_version,
                            release=release,
                            request_id=ids[i],
                            scope="case",
                            route="human_review",
                        ),
                    )
                )
            # after the live record and its escalation, which readers expect side by side
            entries += self._trial_entries(
                trial_cores.get(i, ()),
                i,
                ids,
                requests,
                subjects,
                context,
                release,
                requester,
                context_of,
            )
            fields = {
                "status": "shadow",
                "release": release,
                "model_version": sc.model_version,
                "mode": decision.mode,
                "bundle_sha256": sc.bundle.sha256,
            }
            if shown:
                fields |= {
                    "status": "scored",
                    "probability": core["probability"],
                    "raw_score": core["raw_score"],
                    "threshold": sc.threshold,
                    "above_threshold": core["above_threshold"],
                    "risk": core["risk"],
                    "conformal_set": core["conformal_set"],
                    "flags": core["flags"],
                    "contributions": core["top"],
                    "completeness": core["completeness"],
                    "escalated": bool(core["escalation"]),
                    "escalation": core["escalation"],
                    "inputs": checked[i].values,
                    "coverage": sc.coverage,
                }
            pending.append((i, fields, at))

        try:
            receipts = self.ledger.append_batch(entries)
        except AlreadyRecorded as exc:
            if exc.scope != "request":
                raise
            raise DuplicateRequest(
                f"request id {exc.key!r} was already served (audit seq {exc.seq}); nothing "
                "of this request was recorded. Send a new request id for a new prediction"
            ) from None
        final: list[PredictionResult] = [None] * len(requests)  # type: ignore[list-item]
        for i, fields, slot in pending:
            seq = receipts[slot].seq
            if "refusal" in fields:
                fields["refusal"] |= {"audit_seq": seq}
            final[i] = PredictionResult(
                request_id=ids[i], audit_seq=seq, entry_hash=receipts[slot].leaf_hash, **fields
            )
        return final

    def _score_trials(
        self,
        decisions: Mapping[int, tuple[ServingDecision, str]],
        site_of: Mapping[int, str],
        requests: Sequence[PredictionRequest],
        checked: Sequence[CheckedInputs],
    ) -> dict[int, list[tuple[str, str, dict[str, Any]]]]:
        """Return, per served request, each trial candidate's core at its site (or its failure).

        A candidate is scored on the request's inputs checked against its own contract,
        under its own signed escalation policy (what it would have queued), without
        explanations. Whatever goes wrong with a candidate — its bundle, its inputs, its
        scores — is its failure, recorded in its own record: the live answer never
        depends on it.
        """
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_, served) in decisions.items():
            for cand, mode in self.trials_at(site_of[i]):
                if cand != served:
                    groups.setdefault((cand, mode), []).append(i)
        out: dict[int, list[tuple[str, str, dict[str, Any]]]] = {}
        for (cand, mode), idx in groups.items():
            try:
                sc = self.scorer(cand)
                own: list[CheckedInputs | None] = []
                failed: dict[int, str] = {}
                for i in idx:
                    try:
                        own.append(sc.schema.check(requests[i].features))
                    except InputInvalid as exc:
                        own.append(None)
                        failed[i] = f"inputs outside the candidate's contract: {exc}"
                ok = [i for i, c in zip(idx, own, strict=True) if c is not None]
                drift = self.drift_alert_open(cand)
                scored = sc.score(
                    [c for c in own if c is not None],
                    [requests[i].hours_since_admission for i in ok],
                    explain=False,
                    drift_alert=drift,
                )
                values = [c.values for c in own if c is not None]
                for i, core, vals in zip(ok, scored, values, strict=True):
                    core["drift_alert"] = drift
                    core["inputs"] = vals
                    out.setdefault(i, []).append((cand, mode, core))
                for i, why in failed.items():
                    out.setdefault(i, []).append((cand, mode, {"failed": why}))
            except Exception as exc:  # a candidate never fails the live answer
                _log.warning("trial candidate %s could not be scored: %s", cand, type(exc).__name__)
                why = f"{type(exc).__name__}: {exc}"
                for i in idx:
                    out.setdefault(i, []).append((cand, mode, {"failed": why}))
        return out

    def _trial_entries(
        self,
        trials: Sequence[tuple[str, str, dict[str, Any]]],
        i: int,
        ids: Sequence[str],
        requests: Sequence[PredictionRequest],
        subjects: Mapping[int, str],
        context: dict[str, Any],
        served: str,
        requester: str,
        context_of: Mapping[int, dict[str, Any]],
    ) -> list[NewEntry]:
        """Return one ``trial_inference`` entry per candidate scored beside request ``i``.

        Each names the request it was paired with (``paired_request_id``, whose own
        record carries the outcome) and is never shown to a clinician.
        """
        out = []
        for cand, mode, core in trials:
            common: dict[str, Any] = {
                "release": cand,
                "mode": mode,
                "shown_to_clinician": False,
                "paired_request_id": ids[i],
                "paired_release": served,
                "context": context,
                "requester": requester,
                "purpose": requests[i].purpose,
                **context_of.get(i, {}),
            }
            if "failed" in core:
                payload = FinitePayload(**common, failed=core["failed"])
            else:
                sc = self.scorer(cand)
                watched = {"drift_alert": core["drift_alert"]} if sc.watches_drift else {}
                payload = FinitePayload(
                    **common,
                    format=PREDICTION_FORMAT,
                    model_version=sc.model_version,
                    bundle_sha256=sc.bundle.sha256,
                    dataset_sha256=sc.dataset_sha256,
                    inputs=core["inputs"],
                    raw_score=core["raw_score"],
                    p_raw=core["p_raw"],
                    probability=core["probability"],
                    threshold=sc.threshold,
                    conformal_set=core["conformal_set"],
                    coverage=sc.coverage,
                    flags=core["flags"],
                    completeness=core["completeness"],
                    escalation=core["escalation"],
                    **watched,
                )
            out.append(
                NewEntry(
                    type="trial_inference", actor=requester, subject=subjects[i], payload=payload
                )
            )
        return out

    @staticmethod
    def _field_problems(
        r: PredictionRequest, request_id: str, seen: set[str], allowed: Sequence[str], at: str
    ) -> list[tuple[str, str]]:
        """Return what is wrong with a request's own fields (not its inputs)."""
        problems: list[tuple[str, str]] = []
        if request_id in seen:
            problems.append((f"{at}request_id", f"{request_id!r} appears twice in this batch"))
        if not isinstance(r.subject_id, str) or not r.subject_id.strip():
            problems.append((f"{at}subject_id", "a non-empty patient identifier is required"))
        if r.encounter is not None and (
            not isinstance(r.encounter, str) or not r.encounter.strip()
        ):
            problems.append((f"{at}encounter", "expected a non-empty encounter id, or none"))
        for name in ("subject_id", "purpose", "setting", "request_id", "site", "encounter"):
            if getattr(r, name) is not None and not is_text(getattr(r, name)):
                problems.append((f"{at}{name}", "expected text (no lone surrogates)"))
        if r.purpose not in allowed:
            problems.append(
                (
                    f"{at}purpose",
                    f"unknown purpose {r.purpose!r}; this task allows {', '.join(allowed)}",
                )
            )
        h = r.hours_since_admission
        if h is not None and (not isinstance(h, int | float) or not math.isfinite(h) or h < 0):
            problems.append((f"{at}hours_since_admission", "expected a finite number >= 0"))
        return problems

    def check_requests(self, requests: Sequence[PredictionRequest], *, where: str) -> None:
        """Check requests as :meth:`predict_many` would, without scoring or writing anything.

        Raises ``InputInvalid`` naming every problem (``<where>[i].<field>``), including
        each request id already served (with its audit seq); a request without an id
        cannot be a duplicate. A check, not a reservation: an id served between this
        check and the scoring is still refused then, by the ledger.
        """
        fresh = iter(new_request_ids(sum(not r.request_id for r in requests)))
        ids = [r.request_id or next(fresh) for r in requests]
        self._check(requests, ids, where=where)
        given = [r.request_id for r in requests if r.request_id]
        held = self.ledger.holders([("request", rid) for rid in given])
        problems = [
            (
                f"{where}[{i}].request_id" if where else "request_id",
                f"{r.request_id!r} was already served (audit seq {held[('request', r.request_id)]})",
            )
            for i, r in enumerate(requests)
            if r.request_id and ("request", r.request_id) in held
        ]
        if problems:
            raise InputInvalid(problems)

    def _check(
        self, requests: Sequence[PredictionRequest], ids: list[str], *, where: str
    ) -> list[CheckedInputs]:
        schema = self.scorer(self.default).schema
        allowed = self.scorer(self.default).spec.consent.purposes_allowed
        problems: list[tuple[str, str]] = []
        checked: list[CheckedInputs] = []
        seen: set[str] = set()
        for i, r in enumerate(requests):
            at = f"{where}[{i}]." if where else ""
            h = r.hours_since_admission
            # The common case first: every field plain text or absent, the hours fine. Anything
            # else takes the checks below, which name each problem.
            plain = (
                ids[i] not in seen
                and _plain_text(r.subject_id)
                and r.subject_id.strip()
                and _plain_text(r.purpose)
                and r.purpose in allowed
                and _plain_text(r.setting)
                and (r.request_id is None or _plain_text(r.request_id))
                and (r.site is None or _plain_text(r.site))
                and (h is None or (type(h) is float and 0.0 <= h < math.inf))
            )
            if not plain:
                problems += self._field_problems(r, ids[i], seen, allowed, at)
            seen.add(ids[i])
            try:
                checked.append(schema.check(r.features, where=f"{at}features"))
            except InputInvalid as exc:
                problems += exc.problems
        if problems:
            raise InputInvalid(problems)
        return checked
