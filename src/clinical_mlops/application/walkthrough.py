"""The demo's serving step: score the locked test stays through the Predictor, audited.

Each test stay becomes a demo patient (identifier ``demo-stay-<id>``) with consent
for direct care, granted through :func:`~clinical_mlops.application.privacy.grant_consent`
(so the ledger holds each grant's ``consent_recorded`` entry), and is scored in batches of :data:`~clinical_mlops.serving.predictor.MAX_BATCH`,
so the ledger holds one inference record per stay. Returns a summary and one
sample result with its CDS Hooks card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clinical_mlops.application.privacy import consent_in_force, grant_consent
from clinical_mlops.application.services import Services
from clinical_mlops.features.snapshot import locked_test_stays, open_snapshot
from clinical_mlops.serving.cds_hooks import card_for
from clinical_mlops.serving.predictor import MAX_BATCH, PredictionRequest, Predictor
from clinical_mlops.workspace import Workspace

__all__ = ["score_test_set"]


def score_test_set(workspace: Workspace, *, site: str, requester: str) -> dict[str, Any]:
    """Return counts, timing and a sample card after scoring every locked test stay."""
    import time

    with Predictor.open(workspace, site=site) as p:
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
                outcome_words="48-h mortality risk",
            )
            if sample
            else None
        )
        return {
            "release": p.default,
            "n": len(results),
            "by_status": {
                s: sum(r.status == s for r in results)
                for s in ("scored", "shadow", "fallback", "refused")
            },
            "escalated": sum(r.escalated for r in results),
            "seconds": round(elapsed, 2),
            "rows_per_second": round(len(results) / elapsed, 1) if elapsed else None,
            "first_seq": min(
                (r.audit_seq for r in results if r.audit_seq is not None), default=None
            ),
            "sample": sample.to_json() if sample else None,
            "card": card,
        }
