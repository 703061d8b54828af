"""Every error the library raises, in one tree.

::

    ClinicalMlopsError
    ├── ValueInvalid               a value outside what its field or option allows (also a ValueError)
    ├── DocumentInvalid                a JSON document (report.json, reference_profile.json) that does not match its model (names the file and field)
    ├── SpecError
    │   └── TaskSpecInvalid            a task spec that does not validate (names the field)
    │       └── TaskSpecIncomplete     a drafted spec with fields still marked TODO for a person
    ├── DataError
    │   ├── SourceInvalid              raw tables missing, empty or malformed
    │   │   └── TableInvalid           a feature table that does not match its spec's declared columns
    │   ├── ContractViolation          hard data-contract failures before training
    │   ├── LeakageDetected            a post-prediction-time event reached a feature
    │   ├── UndeclaredFeature          a feature not declared and approved in the spec (R-P1)
    │   └── EngineUnavailable          the feature engine asked for (Spark) is not installed or cannot start
    ├── WorkspaceError
    │   ├── SnapshotNotFound           no snapshot with that id in the workspace
    │   ├── ModelNotFound              no trained model with that version in the workspace
    │   └── StoreUnavailable           a store's database cannot be reached or written now (down, read-only, full)
    │
    │   -- evidence plane (ledger, keys, identity) --
    ├── LedgerError
    │   ├── LedgerNotFound             no ledger database where one was expected
    │   ├── LedgerCorrupted            the database file is unreadable or not a ledger
    │   ├── EntryNotFound              no entry with that seq
    │   ├── AlreadyRecorded            an entry whose unique key (request id, decision, outcome) an earlier entry holds
    │   ├── ClockBehindLedger          the clock reads earlier than the newest entry; appends are refused
    │   ├── UnknownEntryType           an entry type (or schema version) that is not declared
    │   ├── EntryPayloadInvalid        a payload that does not match its entry schema
    │   ├── SubjectNotPseudonymised    something that is not a pseudonym passed as subject
    │   ├── BundleInvalid              a malformed auditor export bundle (names the field)
    │   └── WitnessRefused             a witness refused a checkpoint (status and why)
    └── PrivacyError
        ├── KeyNotFound                a key id the provider (or identity store) does not hold
        ├── WrongKey                   a key that exists but does not open the data
        ├── KeyFileInsecure            a key file readable by group or others
        ├── KeyProviderUnavailable     the key provider (e.g. Transit) cannot be reached or used
        ├── SubjectNotFound            no pseudonym for that subject in the identity vault
        │   └── SubjectErased          the subject was erased: nothing is opened or sealed for it (also a KeyNotFound)
        └── ConsentNotGranted          recorded consent does not cover the stated purpose

    -- evaluation --
    ├── EvaluationError                test-set evidence that cannot be evaluated (misaligned, not binary)

    -- registry and governance --
    ├── RegistryError
    │   ├── BundleSignatureInvalid     a release bundle whose files, manifest or signature do not verify
    │   ├── BundleExpired              a release bundle whose signature validity has ended
    │   ├── BundleForeign              a release bundle signed for another workspace
    │   ├── ReleaseNotFound            no registered release with that version
    │   ├── EvidenceNotFound           no evidence set of a release, or no such file in its newest set
    │   ├── EvidenceInvalid            an evidence set whose files, manifest or signature do not verify
    │   └── TrackingUnavailable        MLflow tracking asked for but not installed or unreachable
    └── GovernanceError                a refused governance action (always also a ledger event)
        ├── TransitionNotAllowed       a status change the lifecycle does not allow
        ├── TrialAlreadyRunning        a second running trial of one release at one site
        ├── RoleRequired               the acting person does not hold a role the action needs
        ├── ApprovalRefused            self-approval, one person in two roles, a duplicate approval
        ├── AcknowledgementRefused     a risk the release does not carry, or one already acknowledged
        ├── GateFailed                 a release gate failed; names the criterion and the values
        ├── IncidentStepRefused        an incident step out of order or missing its prerequisites
        ├── ReleaseChanged             a decision on a release whose state changed since it was shown
        └── IdentityRefused            an act without proof of who made it, or whose proof does not hold

    -- serving --
    └── ServingError
        ├── InputInvalid               a request whose inputs fail the spec (names each field)
        ├── OutsideIntendedUse         a patient or setting outside the validated population (R-P5)
        ├── DuplicateRequest           a request id already served
        ├── ReleaseNotServable         no verified release in a servable status for the task or site
        ├── PredictionNotFound         no inference record with that id (override, outcome, replay)
        ├── OverrideInvalid            an override with an undeclared action or reason code
        ├── CaseAlreadyDecided         an escalated case already accepted or overridden (nothing recorded twice)
        ├── OutcomeAlreadyRecorded     a prediction that already has its outcome (a change is an explicit correction)
        ├── FhirDataUnavailable        the EHR's FHIR server could not give a CDS Hooks call its data (HTTP 412)
        ├── NotAuthenticated           no credentials, or credentials that do not verify (HTTP 401)
        ├── NotAuthorised              valid credentials without a role the route needs (HTTP 403)
        └── ServiceConfigInvalid       no token key, or a malformed API-key file, at service start

    -- monitoring --
    └── MonitoringError
        ├── ReferenceProfileMissing    a release bundle without a monitoring reference profile
        ├── AlertNotFound              no monitoring alert with that id
        └── AlertTransitionInvalid     acknowledging or resolving an alert in a status that forbids it

    -- console --
    └── ConsoleError
        ├── ConsoleUserInvalid         a console user name, role or password that is not acceptable
        ├── SessionExpired             a console session expired, signed out, or older than a password change
        ├── SignInThrottled            too many failed sign-ins from an address, or for a name from it
        └── FormTokenInvalid           a form post without a valid one-time token (forged or replayed)

Every message says what is wrong, where (table, column, rows or spec field) and,
where it helps, what to do next.
"""

from __future__ import annotations

__all__ = [
    "AcknowledgementRefused",
    # registry and governance
    "AlertNotFound",
    "AlertTransitionInvalid",
    "AlreadyRecorded",
    "ApprovalRefused",
    "BundleExpired",
    "BundleForeign",
    # evidence plane
    "BundleInvalid",
    "BundleSignatureInvalid",
    "CaseAlreadyDecided",
    "ClinicalMlopsError",
    "ClockBehindLedger",
    "ConsentNotGranted",
    "ConsoleError",
    "ConsoleUserInvalid",
    "ContractViolation",
    "DataError",
    "DocumentInvalid",
    # serving
    "DuplicateRequest",
    "EngineUnavailable",
    "EntryNotFound",
    "EntryPayloadInvalid",
    # evaluation
    "EvaluationError",
    "EvidenceInvalid",
    "EvidenceNotFound",
    "FhirDataUnavailable",
    "FormTokenInvalid",
    "GateFailed",
    "GovernanceError",
    "IncidentStepRefused",
    "InputInvalid",
    "KeyFileInsecure",
    "KeyNotFound",
    "KeyProviderUnavailable",
    "LeakageDetected",
    "LedgerCorrupted",
    "LedgerError",
    "LedgerNotFound",
    "ModelNotFound",
    "MonitoringError",
    "NotAuthenticated",
    "NotAuthorised",
    "OutcomeAlreadyRecorded",
    "OutsideIntendedUse",
    "OverrideInvalid",
    "PredictionNotFound",
    "PrivacyError",
    "ReferenceProfileMissing",
    "RegistryError",
    "ReleaseChanged",
    "ReleaseNotFound",
    "ReleaseNotServable",
    "RoleRequired",
    "ServiceConfigInvalid",
    "ServingError",
    "SessionExpired",
    "SignInThrottled",
    "SnapshotNotFound",
    "SourceInvalid",
    "SpecError",
    "StoreUnavailable",
    "SubjectErased",
    "SubjectNotFound",
    "SubjectNotPseudonymised",
    "TableInvalid",
    "TaskSpecIncomplete",
    "TaskSpecInvalid",
    "TrackingUnavailable",
    "TransitionNotAllowed",
    "TrialAlreadyRunning",
    "UndeclaredFeature",
    "UnknownEntryType",
    "ValueInvalid",
    "WitnessRefused",
    "WorkspaceError",
    "WrongKey",
]


class ClinicalMlopsError(Exception):
    """Base of every error raised by clinical-mlops."""


class ValueInvalid(ClinicalMlopsError, ValueError):
    """A value outside what its field or option allows; the message names both.

    Also a ``ValueError``, so code that validates plain values keeps catching it.
    """


class DocumentInvalid(ClinicalMlopsError):
    """A stored JSON document that does not match its model; ``problems`` lists (field, message).

    Raised where the document is loaded (a validation report, a reference profile), so a
    renamed or missing key is reported with the file and the field, before any gate,
    monitor or service reads it.
    """

    def __init__(self, source: str, document: str, problems: list[tuple[str, str]]):
        self.source = source
        self.document = document
        self.problems = problems
        lines = [f"{source} is not a valid {document}:"]
        lines += [f"  {field}: {message}" for field, message in problems]
        super().__init__("\n".join(lines))


class SpecError(ClinicalMlopsError):
    """A task specification problem."""


class TaskSpecInvalid(SpecError):
    """The task spec does not validate; ``problems`` lists (field path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"task spec {source} is invalid:"]
        lines += [f"  {path}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


class TaskSpecIncomplete(TaskSpecInvalid):
    """A drafted spec (``tasks init``) with fields still marked TODO; a person must complete them."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        super().__init__(source, problems)
        lines = [f"task spec {source} is a draft: {len(problems)} field(s) left for a person:"]
        lines += [f"  {path}: {message}" for path, message in problems]
        self.args = ("\n".join(lines),)


class DataError(ClinicalMlopsError):
    """A problem with the input data."""


class SourceInvalid(DataError):
    """A raw source is missing tables or columns, empty, or unreadable."""


class TableInvalid(SourceInvalid):
    """A bring-your-own table whose columns, types or values do not match its task spec."""


class ContractViolation(DataError):
    """Hard data-contract violations; ``report`` holds the full contract report."""

    def __init__(self, message: str, report: object | None = None):
        self.report = report
        super().__init__(message)


class LeakageDetected(ContractViolation):
    """Information from after the prediction time reached a feature or the label."""


class UndeclaredFeature(DataError):
    """A feature that is not declared and approved in the task spec (R-P1)."""


class EngineUnavailable(DataError):
    """The feature engine asked for cannot run (e.g. pyspark or Java missing); says what to install."""


class WorkspaceError(ClinicalMlopsError):
    """A problem with the workspace layout or its stores."""


class SnapshotNotFound(WorkspaceError):
    """No snapshot with the given id exists in the workspace."""


class ModelNotFound(WorkspaceError):
    """No trained model with the given version exists in the workspace."""


class StoreUnavailable(WorkspaceError):
    """A store's database cannot be reached or written now (down, read-only, disk full).

    The transaction was rolled back: nothing of it was written. The service answers 503.
    """


# -- evidence plane: ledger, keys, identity vault ------------------------------------------


class LedgerError(ClinicalMlopsError):
    """A problem with the audit ledger or an export of it."""


class LedgerNotFound(LedgerError):
    """No ledger database exists where one was expected (nothing was created)."""


class LedgerCorrupted(LedgerError):
    """The ledger database cannot be read, or is not a clinical-mlops ledger."""


class EntryNotFound(LedgerError):
    """No ledger entry with the given sequence number."""


class AlreadyRecorded(LedgerError):
    """An append refused because an earlier entry holds one of its unique keys; nothing written.

    ``scope`` names the rule (``request``, ``decision``, ``senior_review``, ``outcome``,
    ``supersedes``; see ``ledger.claims``), ``key`` the value as the caller gave it, ``seq``
    the entry that holds it and ``index`` the position of the refused item in its batch.
    """

    def __init__(self, message: str, *, scope: str, key: str, seq: int, index: int):
        self.scope = scope
        self.key = key
        self.seq = seq
        self.index = index
        super().__init__(message)


class ClockBehindLedger(LedgerError):
    """The clock reads earlier than the newest entry; entry times never go backwards."""


class UnknownEntryType(LedgerError):
    """An entry type or schema version that is not declared in ``ledger.entries``."""


class EntryPayloadInvalid(LedgerError):
    """A payload that does not match the schema of its entry type."""


class SubjectNotPseudonymised(LedgerError):
    """A value that is not a pseudonym was given as an entry's subject."""


class BundleInvalid(LedgerError):
    """An auditor export bundle that is malformed; the message names the field."""


class WitnessRefused(LedgerError):
    """A witness refused a checkpoint (tlog-witness status and why); nothing was cosigned."""

    def __init__(self, status: int, reason: str, *, latest_size: int | None = None):
        super().__init__(f"witness refused the checkpoint ({status}): {reason}")
        self.status = status
        self.reason = reason
        self.latest_size = latest_size


class PrivacyError(ClinicalMlopsError):
    """A problem with keys, encryption, pseudonyms or consent."""


class KeyNotFound(PrivacyError):
    """A key id that the key provider or the identity store does not hold."""


class WrongKey(PrivacyError):
    """A key that exists but does not authenticate the data it should open."""


class KeyFileInsecure(PrivacyError):
    """A key file whose permissions let group or others read it (must be 0600)."""


class KeyProviderUnavailable(PrivacyError):
    """The key provider cannot be reached, is not installed, or refused the request.

    Raised before anything is committed: the service answers 503 and writes nothing.
    """


class SubjectNotFound(PrivacyError):
    """No pseudonym is recorded for the subject (unknown, or already erased)."""


class SubjectErased(SubjectNotFound, KeyNotFound):
    """The subject was erased (R-A4): their data keys are destroyed, so nothing of theirs is
    decrypted, shown, or sealed any more; the service answers 410 Gone. The message names
    no identifier and no pseudonym."""


class ConsentNotGranted(PrivacyError):
    """The subject's recorded consent does not cover the purpose at that time (R-P4)."""


# -- evaluation: validation report and model card -------------------------------------------


class EvaluationError(ClinicalMlopsError):
    """Test-set evidence that cannot be evaluated: misaligned arrays, a non-binary outcome, a bad option."""


# -- registry and governance: release bundles, statuses, gates, approvals ------------------


class RegistryError(ClinicalMlopsError):
    """A problem with a release bundle or the model registry."""


class BundleSignatureInvalid(RegistryError):
    """A release bundle whose file hashes, manifest or Ed25519 signature do not verify."""


class BundleExpired(BundleSignatureInvalid):
    """A release bundle whose signature validity period has ended; re-sign or rebuild it."""


class BundleForeign(BundleSignatureInvalid):
    """A release bundle built and signed for another workspace (another audit ledger)."""


class ReleaseNotFound(RegistryError):
    """No registered release with the given version."""


class EvidenceNotFound(RegistryError):
    """No evidence set written for the release, or no such file in its newest set."""


class EvidenceInvalid(RegistryError):
    """An evidence set whose files, manifest or signature do not verify; nothing of it is used."""


class TrackingUnavailable(RegistryError):
    """Experiment tracking was asked for but MLflow is not installed or cannot be reached."""


class GovernanceError(ClinicalMlopsError):
    """A governance action refused by a rule; the refusal is itself recorded in the ledger."""


class TransitionNotAllowed(GovernanceError):
    """A status change that the release lifecycle (R-L2) does not allow."""


class TrialAlreadyRunning(GovernanceError):
    """A trial of the release already runs at that site (one per release and site, by the store)."""


class RoleRequired(GovernanceError):
    """The acting person does not hold a role that the action requires."""


class ApprovalRefused(GovernanceError):
    """An approval that breaks the four-eyes rules (self-approval, two roles, duplicate)."""


class AcknowledgementRefused(GovernanceError):
    """An acknowledgement of a risk the release does not carry, or of a risk already
    acknowledged on it (one per release and risk, enforced by the store)."""


class GateFailed(GovernanceError):
    """A release gate failed; ``results`` holds every gate result evaluated."""

    def __init__(self, message: str, results: object | None = None):
        self.results = results
        super().__init__(message)


class IncidentStepRefused(GovernanceError):
    """An incident step out of order, or without the steps it requires first."""


class ReleaseChanged(GovernanceError):
    """A decision on a release whose state (status, approvals, gates, rollout) changed since
    the page showing it was loaded; reload, review the change and decide again."""


class IdentityRefused(GovernanceError):
    """A governed act without proof of who made it, or whose proof does not hold: a signature
    that does not verify, is over another act, was used before, or is by a key not registered
    to the acting person; or a public key already registered to someone."""


# -- serving: predictor, HTTP service, CDS Hooks ----------------------------------------------


class ServingError(ClinicalMlopsError):
    """A request the serving layer refuses, or a service that cannot serve."""


class InputInvalid(ServingError):
    """Inputs that fail the task spec; ``problems`` lists (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = ["request refused, inputs do not match the task spec:"]
        lines += [f"  {path}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


class OutsideIntendedUse(ServingError):
    """A patient or setting outside the population the model was validated for (R-P5)."""

    def __init__(self, message: str, *, code: str):
        self.code = code
        super().__init__(message)


class FhirDataUnavailable(ServingError):
    """The data a CDS Hooks call needs was neither prefetched nor readable from its FHIR server."""


class DuplicateRequest(ServingError):
    """A request id that was already served; send a fresh id for a new prediction."""


class ReleaseNotServable(ServingError):
    """No verified release in a servable status for the task (or the site)."""


class PredictionNotFound(ServingError):
    """No readable inference record with the given id."""


class OverrideInvalid(ServingError):
    """An override naming an undeclared action or reason code."""


class CaseAlreadyDecided(ServingError):
    """An escalated case that was already accepted or overridden; ``decision`` is that record."""

    def __init__(self, message: str, *, decision: dict[str, object] | None = None):
        self.decision = decision
        super().__init__(message)


class OutcomeAlreadyRecorded(ServingError):
    """A prediction that already has its outcome; a different one is sent as a correction."""


class NotAuthenticated(ServingError):
    """Missing credentials, or credentials that do not verify (expired, wrong audience, bad key)."""


class NotAuthorised(ServingError):
    """Credentials that verify but carry no role the route allows."""


class ServiceConfigInvalid(ServingError):
    """A service started without a usable token key, or with a malformed API-key file."""


# -- monitoring: drift, outcomes, fairness, workflow, alerts -----------------------------------


class MonitoringError(ClinicalMlopsError):
    """Monitoring that cannot run, or an alert action the alert's status does not allow."""


class ReferenceProfileMissing(MonitoringError):
    """A release bundle without the monitoring reference profile drift is measured against."""


class AlertNotFound(MonitoringError):
    """No monitoring alert with the given id in the workspace."""


class AlertTransitionInvalid(MonitoringError):
    """Acknowledging or resolving an alert whose status does not allow it (e.g. resolved)."""


# -- console: the clinician and governance web app ---------------------------------------------


class ConsoleError(ClinicalMlopsError):
    """A console login, session or form that cannot be accepted."""


class ConsoleUserInvalid(ConsoleError):
    """A console user name, role or password that is not acceptable (names which and why)."""


class SessionExpired(ConsoleError):
    """A console session past its expiry, signed out, or older than its user's password; sign in again."""


class SignInThrottled(ConsoleError):
    """A sign-in refused unchecked after too many failures; ``retry_after`` is the wait in seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class FormTokenInvalid(ConsoleError):
    """A form post without a valid one-time token: forged, replayed or from another session."""
