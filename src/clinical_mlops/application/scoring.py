"""Scoring use cases: the service's Predictor, a file of prediction requests, one FHIR Bundle.

The same guards everywhere (inputs checked against the task spec, intended use,
consent, rollout), one ledger entry per request, and no web framework: a batch job
needs only the library. See :mod:`clinical_mlops.serving.batch` for how a file is
checked whole first, scored in chunks and resumed after an interruption, and
:mod:`clinical_mlops.serving.fhir_input` for how a Bundle is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical_mlops.clock import Clock
from clinical_mlops.errors import InputInvalid
from clinical_mlops.features.online import features_for_one
from clinical_mlops.serving.batch import BatchSummary
from clinical_mlops.serving.batch import score_file as _score_file
from clinical_mlops.serving.fhir_input import BundleReading, read_bundle
from clinical_mlops.serving.predictor import PredictionRequest, PredictionResult, Predictor
from clinical_mlops.tasks.spec import TaskSpec
from clinical_mlops.workspace import Workspace

__all__ = [
    "DRIFT_KINDS",
    "BatchSummary",
    "FhirScoring",
    "drift_alert_source",
    "open_predictor",
    "score_fhir_bundle",
    "score_file",
]

#: the alert kinds an escalation policy's ``drift_alert`` condition reads: the inputs or
#: scores moved (``data``), or the relation to outcomes did (``concept``)
DRIFT_KINDS = ("data", "concept")


def drift_alert_source(workspace: Workspace) -> Callable[[str], bool]:
    """Return release -> whether a drift alert is open or acknowledged on it (monitoring's store).

    A drift alert is one of :data:`DRIFT_KINDS`; workflow and fairness alerts route
    cases through monitoring's own actions, not through this condition. The Predictor
    caches the answer for ``status_ttl`` seconds, like the release status.
    """
    from clinical_mlops.monitoring.alerts import AlertStore

    def open_drift(release: str) -> bool:
        with AlertStore.open(workspace) as store:
            return any(
                a.kind in DRIFT_KINDS
                for a in store.list(status=("open", "acknowledged"), release=release)
            )

    return open_drift


def open_predictor(
    workspace: Workspace,
    *,
    task: str | None = None,
    site: str = "*",
    release: str | None = None,
    clock: Clock | None = None,
    status_ttl: float = 2.0,
) -> Predictor:
    """Return the Predictor of ``task``'s live release, reading the release's drift alerts.

    The one way a service, a batch run or the demo opens a Predictor: its escalation
    policy's ``drift_alert`` condition sees monitoring's open drift alerts on the served
    release (see :func:`drift_alert_source`). Raises as :meth:`Predictor.open` does.
    """
    return Predictor.open(
        workspace,
        task=task,
        site=site,
        release=release,
        clock=clock,
        status_ttl=status_ttl,
        drift_alerts=drift_alert_source(workspace),
    )


@dataclass(frozen=True)
class FhirScoring:
    """What scoring a FHIR Bundle gave: the result, the reading and the task spec served."""

    result: PredictionResult
    reading: BundleReading
    spec: TaskSpec
    features: dict[str, Any]


def score_fhir_bundle(
    predictor: Predictor,
    bundle: Any,
    *,
    requester: str,
    purpose: str,
    sites: Sequence[str] | None,
    subject: str | None = None,
    encounter: str | None = None,
    setting: str | None = None,
    request_id: str | None = None,
    identifier_system: str | None = None,
    explain: bool = True,
) -> FhirScoring:
    """Return the governed prediction for the patient and encounter a FHIR Bundle describes.

    The Bundle is read as the task spec declares (:func:`read_bundle`), its features
    computed by the same definition as offline (:func:`features_for_one`), and the
    request scored by the Predictor with every guard: a patient with more inputs
    missing than the spec's ``max_missing_feature_fraction`` gets an audited
    ``insufficient_data`` refusal, not an imputed risk. The setting comes from the
    Encounter (an explicit ``setting`` must agree with it); the site is the Encounter's
    organisation when the requester's credential names it, else the credential's home
    site. Raises ``InputInvalid`` (nothing recorded) for a Bundle that breaks a rule.
    """
    spec = predictor.scorer(predictor.default).spec
    reading = read_bundle(
        bundle,
        spec,
        now=predictor.clock.now(),
        subject=subject,
        encounter=encounter,
        identifier_system=identifier_system,
    )
    if setting is not None and reading.setting is not None and setting != reading.setting:
        raise InputInvalid(
            [
                (
                    "setting",
                    f"{setting!r} contradicts the Bundle's Encounter, which is a "
                    f"{reading.setting!r} encounter",
                )
            ]
        )
    features = features_for_one(spec, reading.unit)
    site = reading.site if sites is None or reading.site in sites else None
    request = PredictionRequest(
        subject_id=reading.subject_id,
        purpose=purpose,
        setting=setting or reading.setting or "unknown",
        features=features,
        request_id=request_id,
        site=site,
        hours_since_admission=reading.hours_since_admission,
        encounter=reading.encounter_id,
        basis=tuple(reading.basis),
        ignored=reading.ignored,
    )
    result = predictor.predict_many(
        [request], requester=requester, explain=explain, where="", sites=sites
    )[0]
    return FhirScoring(result=result, reading=reading, spec=spec, features=features)


def score_file(
    workspace: Workspace,
    source: Path,
    output: Path,
    *,
    requester: str,
    explain: bool = True,
    task: str | None = None,
    site: str = "*",
    progress: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Return what scoring ``source`` (JSON Lines) into ``output`` did, in input order.

    A file with any bad line is refused whole, naming each line and field, with nothing
    scored. Running the same command again after a crash or a failure finishes the file
    without scoring any request twice. ``progress`` gets (rows done, rows in all).
    """
    return _score_file(
        workspace,
        source,
        output,
        requester=requester,
        explain=explain,
        task=task,
        site=site,
        progress=progress,
        drift_alerts=drift_alert_source(workspace),
    )
