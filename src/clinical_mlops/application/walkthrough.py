"""The demo's walkthrough: a governed release by named demo people, then the bedside.

:func:`govern_demo_release` creates (or reuses) four demo people — a compliance officer
who grants the roles, the engineer who builds the bundle (its author), a second
engineer, and a clinician — then: bundle -> register -> the clinician acknowledges, with
a reason, each risk the release carries out of validation (fairness alerts, coverage
shortfalls, failed masked-input checks) -> gates 1-3 -> validated ->
clinically reviewed -> three approvals by three other people -> approved for limited
rollout with a pilot site -> approved. Every step is a ledger event naming the person
and role. Each demo person has an SSH Ed25519 key, made in the workspace's
``demo-people`` folder (never in the source tree) and registered to them, and every
governed act is signed with its maker's key and verified, as on the command line: the
ledger names the key fingerprint that proved each act.

:func:`score_test_set` scores the locked test stays through the Predictor, audited, and
counts what the bedside would see: alerts per 100 stays (risk at or above the release's
threshold) beside reviews per 100 (cases the release's escalation policy queued for a
clinician), with the policy and the conformal sets' coverage guarantee in words.
Each test stay becomes a demo patient (identifier ``demo-stay-<id>``) with consent for
direct care, granted through :func:`~clinical_mlops.application.privacy.grant_consent`
(so the ledger holds each grant's ``consent_recorded`` entry), and is scored in batches
of :data:`~clinical_mlops.serving.predictor.MAX_BATCH`, so the ledger holds one
inference record per stay. Returns a summary and one sample result with its CDS Hooks
card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinical_mlops.application.governance import (
    acknowledge_risk,
    add_key,
    approve,
    keys,
    promote,
    release_risks,
    set_rollout,
)
from clinical_mlops.application.privacy import consent_in_force, grant_consent
from clinical_mlops.application.releases import tag_tracked_run
from clinical_mlops.application.scoring import open_predictor
from clinical_mlops.application.services import Services
from clinical_mlops.clock import Clock
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.governance.board import Governance
from clinical_mlops.governance.policy import run_gates
from clinical_mlops.governance.proof import SigningKey, fingerprint, load_private_key
from clinical_mlops.registry.bundle import build_bundle
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving.cds_hooks import card_for
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest
from clinical_mlops.tasks.spec import EscalationPolicy
from clinical_mlops.vocabulary import Role
from clinical_mlops.workspace import Workspace

__all__ = [
    "DEMO_JUSTIFICATION",
    "DEMO_PEOPLE",
    "PILOT_SITE",
    "demo_key",
    "demo_keys",
    "govern_demo_release",
    "score_test_set",
]

#: person -> (role, what they do in the demo)
DEMO_PEOPLE: dict[str, tuple[Role, str]] = {
    "demo.sam.okafor": (Role.COMPLIANCE, "grants roles, approves as compliance, promotes"),
    "demo.alex.kim": (
        Role.ENGINEERING,
        "builds and registers the bundle (its author), runs the gates",
    ),
    "demo.priya.nair": (Role.ENGINEERING, "approves as engineering"),
    "demo.dr.lena.ortiz": (
        Role.CLINICAL,
        "acknowledges the validation risks, clinical review, approves as clinical, pilots",
    ),
}
PILOT_SITE = "demo-icu-north"
#: risk kind -> why the demo's clinician lets a pilot go ahead despite it
DEMO_JUSTIFICATION = {
    "fairness": (
        "Synthetic demo data; the gap is stated in the model card's limitations, the pilot "
        "runs at one site with every alert reviewed by a clinician, and the fairness_gap "
        "monitor compares subgroups on live outcomes"
    ),
    "coverage": (
        "Synthetic demo data; the shortfall is stated in the model card and ambiguous or "
        "empty prediction sets are routed to a clinician during the pilot"
    ),
    "robustness": (
        "Synthetic demo data; a missing input is flagged on every prediction, input "
        "missingness is monitored, and the pilot runs at one site"
    ),
}


def demo_key(workspace: Workspace, person: str) -> SigningKey:
    """Return the signing key of demo person ``person`` (made by :func:`demo_keys`)."""
    return SigningKey(workspace.path("demo_people") / f"{person}_ed25519")


def demo_keys(workspace: Workspace, gov: Governance) -> dict[str, Path]:
    """Return each demo person's private key file, made and registered when missing.

    The keys live in the workspace (``demo-people/``, owner-only files); the compliance
    officer registers their own first, signed with it, then everyone else's.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = workspace.path("demo_people")
    folder.mkdir(mode=0o700, exist_ok=True)
    paths: dict[str, Path] = {}
    for person in DEMO_PEOPLE:
        path = folder / f"{person}_ed25519"
        if not path.exists():
            private = Ed25519PrivateKey.generate()
            path.touch(mode=0o600)
            path.write_bytes(
                private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
            public = private.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            path.with_suffix(".pub").write_text(f"{public.decode()} {person}\n")
        paths[person] = path
    comp = next(iter(DEMO_PEOPLE))
    registered = {k["fingerprint"] for k in keys(gov)}
    for person, path in paths.items():
        if fingerprint(load_private_key(path).public_key()) in registered:
            continue
        add_key(
            gov,
            person,
            public_key=path.with_suffix(".pub").read_text(),
            actor=comp,
            why="demo team key",
            identity=SigningKey(paths[comp]),
        )
    return paths


def govern_demo_release(
    workspace: Workspace,
    *,
    model_version: str,
    clock: Clock | None = None,
    threshold: float | None = None,
    escalation: EscalationPolicy | None = None,
) -> dict[str, Any]:
    """Return the ``registry show`` view of a release taken from model to ``approved``.

    ``threshold`` and ``escalation`` replace the task spec's operating threshold and
    escalation policy for this release.
    """
    comp, author, eng, clin = DEMO_PEOPLE
    with Registry.open(workspace, clock=clock) as reg, Governance(reg) as gov:
        for person, (role, _) in DEMO_PEOPLE.items():
            if role not in gov.roles_of(person):
                gov.grant_roles(person, roles=[role], actor=comp, why="demo team")
        key = {person: SigningKey(path) for person, path in demo_keys(workspace, gov).items()}
        bundle = build_bundle(
            workspace,
            model_version=model_version,
            author=author,
            clock=clock,
            threshold=threshold,
            escalation=escalation,
        )
        rel = gov.register(bundle, actor=author, why="demo release")
        v = rel.version
        tag_tracked_run(workspace, bundle, release=v)
        for risk in release_risks(gov, v):
            if risk["acknowledgement"] is None:
                acknowledge_risk(
                    gov,
                    v,
                    risk=risk["id"],
                    actor=clin,
                    reason=DEMO_JUSTIFICATION[risk["kind"]],
                    identity=key[clin],
                )
        run_gates(gov, v, actor=author)
        promote(gov, v, actor=author, why="gates 1-3 passed", identity=key[author])
        promote(
            gov, v, actor=clin, why="clinical review of report and model card", identity=key[clin]
        )
        for person, role in (
            (eng, Role.ENGINEERING),
            (clin, Role.CLINICAL),
            (comp, Role.COMPLIANCE),
        ):
            approve(gov, v, person=person, role=role, why="demo approval", identity=key[person])
        promote(gov, v, actor=comp, why="approved for a limited pilot", identity=key[comp])
        set_rollout(
            gov, v, site=PILOT_SITE, mode="pilot", actor=clin, why="demo pilot", identity=key[clin]
        )
        promote(gov, v, actor=comp, why="pilot reviewed; approved", identity=key[comp])
        return gov.show(v)


def score_test_set(workspace: Workspace, *, site: str, requester: str) -> dict[str, Any]:
    """Return counts, workload, timing and a sample card after scoring every locked test stay.

    ``workload``: alerts and reviews per 100 scored stays as served (a review is a case
    the release's policy queued: an ``escalation`` entry; ``deferred`` met a condition
    beyond the review budget), the policy's and the conformal sets' statements, and the
    validation report's reviews per 100 when the report gives it.
    """
    import time

    with open_predictor(workspace, site=site) as p:
        services = Services.using(workspace, ledger=p.ledger, clock=p.clock)
        sc = p.scorer(p.default)
        test = locked_test_stays(open_snapshot(workspace, sc.dataset_sha256))
        names = list(sc.spec.feature_names)
        requests = []
        for stay_id, rec in zip(
            test["stay_id"], test[names].to_dict(orient="records"), strict=True
        ):
            ident = f"demo-stay-{stay_id}"
            if not consent_in_force(services, subject=ident, purpose="direct_care"):
                grant_consent(
                    services,
                    subject=ident,
                    purposes=["direct_care"],
                    valid_from=datetime(2000, 1, 1, tzinfo=UTC),
                    actor="demo",
                )
            values = {
                k: (None if v != v else (v.item() if hasattr(v, "item") else v))
                for k, v in rec.items()
            }
            requests.append(
                PredictionRequest(
                    subject_id=ident,
                    purpose="direct_care",
                    setting=sc.spec.cohort.setting,
                    features=values,
                )
            )
        started = time.perf_counter()
        results = []
        for i in range(0, len(requests), MAX_BATCH):
            results += p.predict_many(requests[i : i + MAX_BATCH], requester=requester)
        elapsed = time.perf_counter() - started
        scored = [r for r in results if r.status == "scored"]
        sample = max(scored, key=lambda r: r.probability or 0.0) if scored else None
        card = (
            card_for(
                sample,
                origin=p.ledger.origin,
                model_card_url=f"/v1/models/{sample.release}/card",
                outcome_words=sc.spec.words().risk_words,
            )
            if sample
            else None
        )
        shown = [r for r in results if r.status == "scored"]
        per_100 = 100.0 / max(len(shown), 1)
        report = sc.bundle.read_json("report.json")
        workload = {
            "scored": len(shown),
            "alerts_per_100": round(per_100 * sum(bool(r.above_threshold) for r in shown), 2),
            "reviews_per_100": round(per_100 * sum(r.escalated for r in shown), 2),
            "deferred_per_100": round(
                per_100 * sum("review_deferred" in r.flags for r in shown), 2
            ),
            "threshold": sc.threshold,
            "policy": sc.policy.statement(),
            "coverage": sc.model.conformal.to_dict()["guarantee"],
            "report_reviews_per_100": (report.get("workload") or {}).get("reviews_per_100"),
        }
        return {
            "release": p.default,
            "n": len(results),
            "by_status": {
                s: sum(r.status == s for r in results)
                for s in ("scored", "shadow", "fallback", "refused")
            },
            "escalated": sum(r.escalated for r in results),
            "workload": workload,
            "seconds": round(elapsed, 2),
            "rows_per_second": round(len(results) / elapsed, 1) if elapsed else None,
            "first_seq": min(
                (r.audit_seq for r in results if r.audit_seq is not None), default=None
            ),
            "sample": sample.to_json() if sample else None,
            "card": card,
        }
