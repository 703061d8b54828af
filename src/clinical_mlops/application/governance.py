"""Governance use cases: every governed act, written once, called by every front end.

The command line (``clinical-mlops registry``, ``review``, ``incident``), the review
console, ``POST /v1/overrides``, ``POST /v1/outcomes`` and CDS Hooks feedback call
these functions and nothing below them, so a rule holds whichever door a person uses:

* suspending, resuming and rolling back a release needs a reason (``InputInvalid``
  naming ``why``; nothing changes), and so does approving or rejecting one (refused
  as a ``governance_refused`` event);
* acknowledging a risk a release carries out of validation (gate 3) needs a reason
  (``InputInvalid`` naming ``reason``; nothing recorded), a person in the clinical or
  compliance role and a risk the release carries; a risk is acknowledged once;
* a form that showed a release passes the ``fingerprint`` it showed, and the act is
  refused (``ReleaseChanged``) when the release changed since;
* a case takes one decision (accept or override) and one referral to senior review,
  enforced by the ledger's store whichever front end records it
  (``CaseAlreadyDecided``); a prediction takes one outcome (``OutcomeAlreadyRecorded``).

Every governed act takes ``identity``: the :class:`~clinical_mlops.governance.identity.
VerifiedIdentity` a front end checked (a console or API session), or a
:class:`~clinical_mlops.governance.proof.SignedStatement` — a statement of exactly this act
signed with the person's registered SSH key, as the command line presents it — which is
verified here, against the act about to be made, before anything is recorded
(``IdentityRefused`` otherwise). The identity must name the acting person and is stored
with the act in the ledger.

Each function takes the open collaborators it needs — the :class:`~clinical_mlops.
governance.board.Governance` of the workspace (its registry and ledger), or the
:class:`~clinical_mlops.ledger.Ledger` — and opens nothing itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_mlops.application.dossier import check_fingerprint
from clinical_mlops.errors import GovernanceError, InputInvalid
from clinical_mlops.governance import incidents, oversight, queue, reviews
from clinical_mlops.governance.approvals import Approval, Decision
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.identity import VerifiedIdentity
from clinical_mlops.governance.oversight import OverrideRequest, record_overrides
from clinical_mlops.governance.proof import (
    SignedStatement,
    SigningKey,
    act_statement,
    describe_act,
)
from clinical_mlops.governance.queue import Case, CaseQueue, CaseState
from clinical_mlops.governance.queue import Decision as CaseDecision
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Release

if TYPE_CHECKING:
    from clinical_mlops.governance.policy import GateResult
    from clinical_mlops.governance.risks import Acknowledgement
    from clinical_mlops.registry.bundle import Bundle

__all__ = [
    "Proof",
    "acknowledge_risk",
    "add_incident_step",
    "add_key",
    "approve",
    "case_queue",
    "contain_incident",
    "decide_case",
    "decide_cases",
    "grant_roles",
    "keys",
    "next_case",
    "open_case",
    "open_incident",
    "promote",
    "prove",
    "record_outcome",
    "record_review",
    "register",
    "reject",
    "release_risks",
    "resolve_incident",
    "resume",
    "retire",
    "review_pack",
    "rollback",
    "set_review_schedule",
    "set_rollout",
    "sign_act",
    "statement_of",
    "suspend",
    "validate",
]

#: what proves who makes a governed act: a checked session's identity, a signed statement, or
#: the person's key to sign the statement of the act with (then verified like any signature)
Proof = VerifiedIdentity | SignedStatement | SigningKey

#: what a refused act without a reason says (the field is ``why`` in every front end)
REASON_REQUIRED = "say why; the reason is recorded in the audit ledger (nothing was changed)"


def _reason(why: str | None) -> str:
    """Return the stripped reason; ``InputInvalid`` naming ``why`` when it is missing or blank."""
    text = why.strip() if isinstance(why, str) else ""
    if not text:
        raise InputInvalid([("why", REASON_REQUIRED)])
    return text


def _guard(
    governance: Governance, version: str, *, fingerprint: str | None, action: str, actor: str
) -> None:
    """Refuse the act when the form's ``fingerprint`` no longer matches the release."""
    if fingerprint is not None:
        check_fingerprint(governance, version, fingerprint=fingerprint, action=action, actor=actor)


def _verified(
    governance: Governance,
    identity: Proof,
    action: str,
    *,
    person: str,
    first_key: str | None = None,
    **fields: Any,
) -> VerifiedIdentity:
    """Return the verified identity behind an act; a signed statement is checked against it."""
    if isinstance(identity, SigningKey):
        identity = sign_act(governance, identity.path, action, person=person, **fields)
    if isinstance(identity, SignedStatement):
        return governance.verify_signed(
            identity, act=describe_act(action, person=person, **fields), first_key=first_key
        )
    return identity


# -- proof of who acts -------------------------------------------------------------------------
def prove(
    governance: Governance, identity: Proof, action: str, *, person: str, **fields: Any
) -> VerifiedIdentity:
    """Return the verified identity of ``person`` making one act (``action`` with ``fields``).

    A session's identity is returned as it is; a signed statement, or a key to sign one
    with, is verified against exactly this act and the person's registered keys, and its
    nonce spent, before anything is recorded (``IdentityRefused`` otherwise). For acts
    recorded outside the release board, such as acknowledging a monitoring alert.
    """
    return _verified(governance, identity, action, person=person, **fields)


def statement_of(governance: Governance, action: str, *, person: str, **fields: Any) -> bytes:
    """Return a fresh statement of one act for ``person`` to sign (valid for 15 minutes).

    ``action`` is the act's function name here (``approve``, ``suspend``, ...) and
    ``fields`` its arguments as the act takes them; sign the statement with
    ``ssh-keygen -Y sign -n clinical-mlops -f KEY FILE`` and present it with its ``.sig``.
    """
    return act_statement(
        describe_act(action, person=person, **fields),
        workspace=governance.ledger.origin,
        now=governance.clock.now(),
    )


def sign_act(
    governance: Governance, key: Path, action: str, *, person: str, **fields: Any
) -> SignedStatement:
    """Return a statement of one act signed with the OpenSSH Ed25519 private key at ``key``.

    The statement is verified, with the act, when the act is made; a passphrase-protected
    or hardware key is signed with ``ssh-keygen`` instead (:func:`statement_of`).
    """
    from clinical_mlops.governance.proof import load_private_key, sign

    text = statement_of(governance, action, person=person, **fields)
    return SignedStatement(statement=text, signature=sign(text, load_private_key(key)))


def add_key(
    governance: Governance,
    person: str,
    *,
    public_key: str,
    actor: str,
    why: str | None,
    identity: Proof,
) -> dict[str, str]:
    """Return the SSH Ed25519 key registered to ``person`` by ``actor`` (compliance role).

    One key belongs to one person (``IdentityRefused`` otherwise, held by the store). In a
    workspace with no key yet, a compliance person registers their own first key and
    proves it by signing with it.
    """
    reason = _reason(why)
    verified = _verified(
        governance,
        identity,
        "add_key",
        person=actor,
        first_key=public_key if person == actor else None,
        key_for=person,
        public_key=" ".join(public_key.split()[:2]),
        why=reason,
    )
    return governance.add_key(
        person, public_key=public_key, actor=actor, identity=verified, why=reason
    )


def keys(governance: Governance, person: str | None = None) -> list[dict[str, str]]:
    """Return the registered public keys (of ``person``, or everyone's)."""
    return governance.keys(person)


# -- people, registration, gates ---------------------------------------------------------------
def grant_roles(
    governance: Governance, person: str, *, roles: list[str], actor: str, why: str
) -> list[str]:
    """Return ``person``'s roles after ``actor`` (compliance) granted ``roles``."""
    return governance.grant_roles(person, roles=roles, actor=actor, why=why)


def register(
    governance: Governance, bundle: Bundle, *, actor: str, why: str, role: str | None = None
) -> Release:
    """Return the draft release registered from ``bundle`` (engineering role)."""
    return governance.register(bundle, actor=actor, why=why, role=role)


def validate(governance: Governance, version: str, *, actor: str) -> dict[str, GateResult]:
    """Return gates 1-3 of ``version``, stored with their evidence (engineering role)."""
    from clinical_mlops.governance.policy import run_gates

    return run_gates(governance, version, actor=actor)


# -- risks acknowledged (gate 3) ---------------------------------------------------------------
#: what a refused acknowledgement without a reason says (the field is ``reason``)
JUSTIFICATION_REQUIRED = (
    "say why the release may go ahead despite this risk; the reason is recorded in the audit "
    "ledger and the model card (nothing was recorded)"
)


def release_risks(governance: Governance, version: str) -> list[dict[str, Any]]:
    """Return each risk ``version`` carries out of validation, with its acknowledgement or None.

    A risk is a fairness alert, a per-class conformal coverage shortfall or a failed
    masked-input check (``governance.risks``); gate 3 fails while one lacks an
    acknowledgement.
    """
    return governance.risk_register(version)


def acknowledge_risk(
    governance: Governance,
    version: str,
    *,
    risk: str,
    actor: str,
    reason: str | None,
    identity: Proof,
    role: str | None = None,
    fingerprint: str | None = None,
) -> Acknowledgement:
    """Return the acknowledgement ``actor`` recorded of ``risk`` on ``version`` (gate 3).

    Needs a reason (``InputInvalid`` naming ``reason``), a person in the clinical or
    compliance role (``RoleRequired`` naming ``role``), a risk the release carries
    (``AcknowledgementRefused`` naming ``risk``), and a risk not yet acknowledged on it
    (refused by the store's unique constraint). A refused act records nothing but its
    ``governance_refused`` event. Gate 3 passes once every risk is acknowledged and
    the gates are run again.
    """
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InputInvalid([("reason", JUSTIFICATION_REQUIRED)])
    verified = _verified(
        governance,
        identity,
        "acknowledge_risk",
        person=actor,
        release=version,
        risk=risk,
        role=role,
        why=text,
    )
    _guard(governance, version, fingerprint=fingerprint, action="acknowledge risk", actor=actor)
    return governance.acknowledge_risk(
        version, risk=risk, actor=actor, reason=text, role=role, identity=verified
    )


# -- approvals (gate 4) ------------------------------------------------------------------------
def _decide(
    governance: Governance,
    version: str,
    *,
    decision: Decision,
    person: str,
    role: str,
    why: str,
    fingerprint: str | None,
    identity: Proof,
) -> Approval:
    action = "approve" if decision == "approve" else "reject"
    if not why.strip():
        with governance.governed(action=action, actor=person, version=version):
            raise GovernanceError(
                f"{action} {version}: a comment saying why is required (rule: every decision "
                "records its reason); nothing was recorded"
            )
    verified = _verified(
        governance, identity, action, person=person, release=version, role=role, why=why
    )
    _guard(governance, version, fingerprint=fingerprint, action=action, actor=person)
    return governance.decide(
        version, person=person, role=role, decision=decision, why=why, identity=verified
    )


def approve(
    governance: Governance,
    version: str,
    *,
    person: str,
    role: str,
    why: str,
    identity: Proof,
    fingerprint: str | None = None,
) -> Approval:
    """Return the approval ``person`` recorded on ``version`` in ``role`` (gate 4).

    Refused without a comment saying why, by the bundle's author, by a person without
    the role or already decided in another, for a role already approved, and (with
    ``fingerprint``) when the release changed since it was shown, and without proof of
    who approves (``identity``): an identity already used by another approver is one
    person, whatever the name.
    """
    return _decide(
        governance,
        version,
        decision="approve",
        person=person,
        role=role,
        why=why,
        fingerprint=fingerprint,
        identity=identity,
    )


def reject(
    governance: Governance,
    version: str,
    *,
    person: str,
    role: str,
    why: str,
    identity: Proof,
    fingerprint: str | None = None,
) -> Approval:
    """Return the rejection ``person`` recorded on ``version`` in ``role`` (blocks gate 4)."""
    return _decide(
        governance,
        version,
        decision="reject",
        person=person,
        role=role,
        why=why,
        fingerprint=fingerprint,
        identity=identity,
    )


# -- lifecycle and rollout ---------------------------------------------------------------------
def promote(
    governance: Governance,
    version: str,
    *,
    actor: str,
    why: str,
    identity: Proof,
    role: str | None = None,
) -> Release:
    """Return ``version`` moved one step along the lifecycle (gated, role-checked)."""
    verified = _verified(
        governance, identity, "promote", person=actor, release=version, role=role, why=why
    )
    return governance.promote(version, actor=actor, why=why, role=role, identity=verified)


def suspend(
    governance: Governance,
    version: str,
    *,
    actor: str,
    why: str | None,
    identity: Proof,
    role: str | None = None,
    fingerprint: str | None = None,
) -> Release:
    """Return ``version`` suspended: it stops being used at every site where it runs.

    Needs a reason (``InputInvalid`` naming ``why`` otherwise; nothing changes).
    """
    reason = _reason(why)
    verified = _verified(
        governance, identity, "suspend", person=actor, release=version, role=role, why=reason
    )
    _guard(governance, version, fingerprint=fingerprint, action="suspend", actor=actor)
    return governance.suspend(version, actor=actor, why=reason, role=role, identity=verified)


def resume(
    governance: Governance,
    version: str,
    *,
    actor: str,
    why: str | None,
    identity: Proof,
    fingerprint: str | None = None,
) -> Release:
    """Return a suspended ``version`` back in the status it left (compliance role).

    Needs a reason (``InputInvalid`` naming ``why`` otherwise; nothing changes).
    """
    reason = _reason(why)
    verified = _verified(governance, identity, "resume", person=actor, release=version, why=reason)
    _guard(governance, version, fingerprint=fingerprint, action="resume", actor=actor)
    return governance.resume(version, actor=actor, why=reason, identity=verified)


def rollback(
    governance: Governance,
    version: str,
    *,
    actor: str,
    why: str | None,
    identity: Proof,
    role: str | None = None,
    fingerprint: str | None = None,
) -> Release:
    """Return the earlier approved ``version`` made the task's active release again.

    Needs a reason (``InputInvalid`` naming ``why`` otherwise; nothing changes).
    """
    reason = _reason(why)
    verified = _verified(
        governance, identity, "rollback", person=actor, release=version, role=role, why=reason
    )
    _guard(governance, version, fingerprint=fingerprint, action="rollback", actor=actor)
    return governance.rollback(version, actor=actor, why=reason, role=role, identity=verified)


def retire(
    governance: Governance,
    version: str,
    *,
    actor: str,
    why: str | None,
    identity: Proof,
    role: str | None = None,
) -> Release:
    """Return ``version`` retired (never served again; kept for audit). Needs a reason."""
    reason = _reason(why)
    verified = _verified(
        governance, identity, "retire", person=actor, release=version, role=role, why=reason
    )
    return governance.retire(version, actor=actor, why=reason, role=role, identity=verified)


def set_rollout(
    governance: Governance,
    version: str,
    *,
    site: str,
    mode: str,
    actor: str,
    why: str,
    identity: Proof,
    role: str | None = None,
) -> dict[str, Any]:
    """Return the task's deployment manifest after serving ``version`` at ``site`` in ``mode``.

    It changes what runs at the bedside: ``identity`` proves who makes it (a session's
    identity, or the person's signature of exactly this rollout), verified first.
    """
    verified = _verified(
        governance,
        identity,
        "set_rollout",
        person=actor,
        release=version,
        site=site,
        mode=mode,
        role=role,
        why=why,
    )
    return governance.set_rollout(
        version, site=site, mode=mode, actor=actor, why=why, role=role, identity=verified
    )


# -- cases: the queue, decisions and outcomes --------------------------------------------------
def case_queue(
    ledger: Ledger,
    *,
    now: datetime,
    state: CaseState = "open",
    reason: str | None = None,
    site: str | None = None,
    release: str | None = None,
    min_age_hours: float | None = None,
    limit: int = 200,
    sort: str = queue.DEFAULT_SORT,
) -> CaseQueue:
    """Return the escalation queue: the first ``limit`` cases matching the filters and the total.

    One row per case: the escalated predictions of one patient and encounter while the
    case is open, or one prediction without an encounter (``governance.queue``), in the
    order ``sort`` names (``queue.QUEUE_SORTS``; highest risk first by default). The
    console's queue and ``GET /v1/cases`` both list it.
    """
    return queue.case_queue(
        ledger,
        now=now,
        state=state,
        reason=reason,
        site=site,
        release=release,
        min_age_hours=min_age_hours,
        limit=limit,
        sort=sort,
    )


def next_case(
    ledger: Ledger,
    *,
    now: datetime,
    sort: str = queue.DEFAULT_SORT,
    reason: str | None = None,
    site: str | None = None,
    release: str | None = None,
    skip: Sequence[int] = (),
) -> Case | None:
    """Return the case a clinician should open next: the first open case in the queue's
    order that nobody has sent to senior review (None when none waits).

    The console's "Next case" button and ``GET /v1/cases/next`` both call it, with the
    filters and order of the queue the clinician is working; ``skip`` names cases they
    passed over.
    """
    return queue.next_case(
        ledger, now=now, sort=sort, reason=reason, site=site, release=release, skip=skip
    )


def open_case(ledger: Ledger, prediction_seq: int, *, now: datetime) -> Case:
    """Return the case prediction ``prediction_seq`` is in, with its decisions.

    Any prediction of the case names it; ``SubjectErased`` once its patient was erased.
    """
    return queue.case(ledger, prediction_seq, now=now)


def decide_cases(
    ledger: Ledger, requests: Sequence[OverrideRequest], *, actor: str, source: str
) -> list[CaseDecision]:
    """Return the decisions recorded on several cases, all in one transaction or none.

    The one way a clinician's response is recorded, from every front end (the
    console, ``POST /v1/overrides``, CDS Hooks feedback): a case already accepted or
    overridden refuses the whole request with ``CaseAlreadyDecided`` naming the
    decision recorded; an empty reason code is no reason code.
    """
    cleaned = [
        OverrideRequest(
            prediction_seq=r.prediction_seq,
            action=r.action,
            reason_code=r.reason_code or None,
            comment=r.comment,
            correction=r.correction,
            correction_reason=r.correction_reason,
            outcome_timestamp=r.outcome_timestamp,
        )
        for r in requests
    ]
    return [
        CaseDecision(
            seq=int(stored["seq"]),
            time=str(stored["time"]),
            actor=actor,
            action=str(stored["action"]),
            reason_code=stored.get("reason_code"),
            reason=stored.get("reason"),
            comment=stored.get("comment"),
            corrects=stored.get("corrects"),
            correction_reason=stored.get("correction_reason"),
            record=stored,
        )
        for stored in record_overrides(ledger, cleaned, actor=actor, source=source)
    ]


def decide_case(
    ledger: Ledger,
    prediction_seq: int,
    *,
    action: str,
    actor: str,
    reason_code: str | None = None,
    comment: str | None = None,
    source: str = "console",
    correction: bool = False,
    correction_reason: str | None = None,
) -> CaseDecision:
    """Return the decision recorded on the case of ``prediction_seq`` (one ``override`` entry).

    ``prediction_seq`` is any prediction of the case; the decision records it (what was
    shown) and the case it decides. See :func:`decide_cases`; ``correction`` (with ``correction_reason``) replaces the
    case's current decision, naming it.
    """
    request = OverrideRequest(
        prediction_seq=prediction_seq,
        action=action,
        reason_code=reason_code,
        comment=comment,
        correction=correction,
        correction_reason=correction_reason,
    )
    return decide_cases(ledger, [request], actor=actor, source=source)[0]


def record_outcome(
    ledger: Ledger,
    *,
    prediction_seqs: Sequence[int],
    outcome: int | bool,
    actor: str,
    observed_at: str | None = None,
    correction: bool = False,
    correction_reason: str | None = None,
) -> list[int]:
    """Return the seqs of one ``outcome`` entry per prediction, all in one transaction or none.

    A prediction takes one outcome (``OutcomeAlreadyRecorded``); a change is a
    correction with a reason.
    """
    return oversight.record_outcome(
        ledger,
        prediction_seqs=prediction_seqs,
        outcome=outcome,
        actor=actor,
        observed_at=observed_at,
        correction=correction,
        correction_reason=correction_reason,
    )


# -- incidents ---------------------------------------------------------------------------------
def open_incident(
    governance: Governance,
    version: str,
    *,
    actor: str,
    summary: str,
    severity: str,
    roles: dict[str, str],
    identity: Proof,
) -> dict[str, Any]:
    """Return a new open incident on ``version`` with its named roles."""
    verified = _verified(
        governance,
        identity,
        "open_incident",
        person=actor,
        release=version,
        summary=summary,
        severity=severity,
        roles=roles,
    )
    return incidents.open_incident(
        governance,
        version,
        actor=actor,
        summary=summary,
        severity=severity,
        roles=roles,
        identity=verified,
    )


def contain_incident(
    governance: Governance,
    incident_id: str,
    *,
    actor: str,
    action: str,
    why: str | None,
    identity: Proof,
    rollback_to: str | None = None,
) -> dict[str, Any]:
    """Return the incident contained by suspending its release or rolling back. Needs a reason."""
    reason = _reason(why)
    verified = _verified(
        governance,
        identity,
        "contain_incident",
        person=actor,
        incident=incident_id,
        containment=action,
        rollback_to=rollback_to,
        why=reason,
    )
    return incidents.contain(
        governance,
        incident_id,
        actor=actor,
        action=action,
        why=reason,
        rollback_to=rollback_to,
        identity=verified,
    )


def add_incident_step(
    governance: Governance,
    incident_id: str,
    *,
    actor: str,
    kind: str,
    detail: str,
    identity: Proof,
) -> dict[str, Any]:
    """Return the incident after a communication, patient-notification or note step."""
    verified = _verified(
        governance,
        identity,
        "add_incident_step",
        person=actor,
        incident=incident_id,
        kind=kind,
        detail=detail,
    )
    return incidents.add_step(
        governance, incident_id, actor=actor, kind=kind, detail=detail, identity=verified
    )


def resolve_incident(
    governance: Governance, incident_id: str, *, actor: str, root_cause: str, identity: Proof
) -> dict[str, Any]:
    """Return the resolved incident (needs containment, communication, notification)."""
    verified = _verified(
        governance,
        identity,
        "resolve_incident",
        person=actor,
        incident=incident_id,
        root_cause=root_cause,
    )
    return incidents.resolve(
        governance, incident_id, actor=actor, root_cause=root_cause, identity=verified
    )


# -- periodic reviews --------------------------------------------------------------------------
def review_pack(
    governance: Governance, version: str, *, as_of: datetime | None = None
) -> dict[str, Any]:
    """Return the live review pack of ``version``: per-site figures since its last review.

    Outcome-linked discrimination and calibration, subgroup gaps, alert, review and
    override rates per site, each beside its validation figure; incidents and
    monitoring alerts of the period; the pre-assessed checklist
    (:mod:`clinical_mlops.monitoring.live_review`). ``as_of`` defaults to now.
    """
    from clinical_mlops.monitoring.live_review import review_pack as pack

    return pack(governance, version, as_of=as_of)


def record_review(
    governance: Governance,
    version: str,
    *,
    reviewer: str,
    checklist: dict[str, str],
    outcome: str,
    identity: Proof,
) -> dict[str, Any]:
    """Return the periodic review recorded against ``version`` (a ``suspend`` outcome suspends).

    Recorded against the live review pack as of now: stored with the review, its
    hash in the ledger; an item the pack marks breached needs a finding, not "ok".
    The returned review holds the pack (``pack``) and its hash (``review_pack_sha256``).
    """
    from clinical_mlops.monitoring.live_review import review_pack as pack

    verified = _verified(
        governance,
        identity,
        "record_review",
        person=reviewer,
        release=version,
        outcome=outcome,
        checklist=checklist,
    )
    return reviews.record_review(
        governance,
        version,
        reviewer=reviewer,
        checklist=checklist,
        outcome=outcome,
        identity=verified,
        pack=lambda: pack(governance, version),
    )


def set_review_schedule(
    governance: Governance, *, task: str, interval_days: int, actor: str
) -> int:
    """Return the review interval (days) of ``task`` after ``actor`` (compliance) set it."""
    return reviews.set_schedule(governance, task=task, interval_days=interval_days, actor=actor)
