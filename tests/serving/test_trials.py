"""Silent and shadow trials beside the live release, and the trial dossier."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from trial_world import (  # noqa: F401
    CLIN,
    COMP,
    ENG,
    N_STAYS,
    SITE,
    consent,
    copy_of,
    limited_release,
    requests,
    world,
)

from clinical_mlops.application import trials
from clinical_mlops.application.dossier import release_dossier
from clinical_mlops.application.governance import record_outcome
from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import (
    InputInvalid,
    ReleaseNotServable,
    RoleRequired,
    TransitionNotAllowed,
    TrialAlreadyRunning,
)
from clinical_mlops.governance.board import Governance
from clinical_mlops.ledger import Ledger
from clinical_mlops.registry.registry import Registry
from clinical_mlops.serving import Predictor
from clinical_mlops.workspace import Workspace
from identities import console


def start(
    ws: Workspace, version: str, *, mode: str = "silent", site: str = SITE, actor: str = CLIN
) -> dict[str, Any]:
    with Registry.open(ws) as reg, Governance(reg) as gov:
        return trials.start_trial(
            gov, version, site=site, mode=mode, actor=actor, identity=console(actor), why="trial"
        )


def without_ids(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("audit_seq", "request_id")}


def trial_entries(led: Ledger) -> list[Any]:
    return list(led.read_from(1, types=("trial_inference",)))


# -- the must-show: a silent trial over simulated operation -------------------------------------


def test_silent_trial_dossier_and_live_answers_unchanged(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from sklearn.metrics import roc_auc_score

    plain = copy_of(world, "plain", tmp_path)
    tw = copy_of(world, "trial", tmp_path)
    start(tw, world["candidate"])
    reqs = requests(world, N_STAYS, prefix="stay")
    labels = [world["labels"][i % len(world["labels"])] for i in range(N_STAYS)]

    # simulated time starts after the world's own ledger entries
    t0 = datetime.now(UTC) + timedelta(days=1)
    clock = FixedClock(t0)
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, ws in (("plain", plain), ("trial", tw)):
        clock.set(t0)
        with Predictor.open(ws, site=SITE, clock=clock) as p:
            out = []
            for lo in range(0, N_STAYS, 50):  # a batch every simulated hour
                out += [r.to_json() for r in p.predict_many(reqs[lo : lo + 50], requester="ehr")]
                clock.advance(timedelta(hours=1))
            answers[name] = out
            if name == "trial":
                clock.advance(timedelta(hours=30))  # outcomes arrive a day later
                for r, y in zip(out, labels, strict=True):
                    record_outcome(
                        p.ledger,
                        prediction_seqs=[r["audit_seq"]],
                        outcome=y,
                        actor="records",
                        observed_at=(clock.now() - timedelta(hours=2)).isoformat(),
                    )
                    clock.advance(timedelta(seconds=30))
                cand = trial_entries(p.ledger)
                escalations = {
                    v.payload["request_id"]
                    for v in p.ledger.read_from(1, types=("escalation",))
                    if v.payload.get("request_id")
                }

    # the live answers are the same, field by field, with or without the candidate
    assert [r["status"] for r in answers["trial"]] == ["scored"] * N_STAYS
    for a, b in zip(answers["plain"], answers["trial"], strict=True):
        assert without_ids(a) == without_ids(b)
    # one audited, unshown record per request for the candidate, paired with the live request
    assert len(cand) == N_STAYS
    assert {v.payload["mode"] for v in cand} == {"silent"}
    assert not any(v.payload["shown_to_clinician"] for v in cand)
    assert [v.payload["paired_request_id"] for v in cand] == [r.request_id for r in reqs]
    assert {v.payload["release"] for v in cand} == {world["candidate"]}
    # the candidate queued nothing: escalations are the live release's only
    assert len(escalations) == sum(bool(r["escalated"]) for r in answers["trial"])

    with Registry.open(tw, clock=clock) as reg, Governance(reg) as gov:
        d = trials.write_dossier(gov, world["candidate"], out=tmp_path / "dossier")
    [site] = d["sites"]
    assert site["site"] == SITE and site["n_candidate"] == site["n_paired"] == N_STAYS
    c, live = site["candidate"], site["live"]
    assert c["n_outcomes"] == live["n_outcomes"] == N_STAYS
    p_live = np.array([r["probability"] for r in answers["trial"]])
    p_cand = np.array([v.payload["probability"] for v in cand])
    assert c["auroc"]["value"] == pytest.approx(roc_auc_score(labels, p_cand), abs=1e-12)
    assert live["auroc"]["value"] == pytest.approx(roc_auc_score(labels, p_live), abs=1e-12)
    lo, hi = c["auroc"]["ci"]
    assert lo < c["auroc"]["value"] < hi
    # alerts at each model's own threshold; the live release's reviews are what it queued
    assert c["alerts_per_100"] == pytest.approx(100 * np.mean(p_cand >= 0.30))
    assert live["alerts_per_100"] == pytest.approx(100 * np.mean(p_live >= live["threshold"]))
    assert live["reviews_per_100"] == pytest.approx(100 * len(escalations) / N_STAYS)
    # disagreement: the candidate's lower threshold flags cases the live release does not
    only = site["disagreement"]["candidate_only"]
    expected = (p_cand >= 0.30) & ~(p_live >= live["threshold"])
    assert only["n"] == int(expected.sum())
    assert only["n_events"] == int(np.sum(expected & (np.array(labels) == 1)))
    # lead time: outcomes observed 2 h before they were recorded, a day after the predictions
    lead = c["lead_time_hours"]
    assert isinstance(lead, dict) and 20 < lead["median"] < 40
    assert d["summary"]["decision"] in ("go", "no-go", "insufficient")
    assert d["summary"]["by_site"] == {SITE: site["verdict"]["decision"]}
    written = json.loads(Path(d["written"]["json"]).read_text(encoding="utf-8"))
    assert written["sites"][0]["candidate"]["auroc"]["value"] == c["auroc"]["value"]
    html = Path(d["written"]["html"]).read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and site["verdict"]["decision"] in html

    # the governance team sees the silent trial's summary on the release page
    with Registry.open(tw, clock=clock) as reg, Governance(reg) as gov:
        shown = release_dossier(gov, world["candidate"])
    assert shown["trial"]["summary"] == d["summary"]
    assert shown["trial"]["sites"][0]["candidate_auroc"]["value"] == pytest.approx(
        c["auroc"]["value"]
    )


def test_dossier_without_outcomes_is_insufficient(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    tw = copy_of(world, "trial", tmp_path)
    start(tw, world["candidate"])
    with Predictor.open(tw, site=SITE) as p:
        p.predict_many(requests(world, 60, prefix="early"), requester="ehr")
    with Registry.open(tw) as reg, Governance(reg) as gov:
        d = trials.write_dossier(gov, world["candidate"])
    [site] = d["sites"]
    assert d["summary"]["decision"] == "insufficient"
    assert site["n_candidate"] == 60
    for model in (site["candidate"], site["live"]):
        assert model["n_outcomes"] == 0
        for key in ("auroc", "calibration_slope", "ece", "net_benefit", "lead_time_hours"):
            assert isinstance(model[key], str) and model[key].startswith("insufficient data")
    assert site["verdict"]["rules"][0]["verdict"] == "insufficient"
    with (
        Registry.open(tw) as reg,
        Governance(reg) as gov,
        pytest.raises(InputInvalid, match="as_of"),
    ):
        trials.write_dossier(gov, world["candidate"], as_of="yesterday")


# -- the rules -----------------------------------------------------------------------------------


def test_shadow_and_silent_no_longer_replace_the_live_release(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    tw = copy_of(world, "trial", tmp_path)
    with Registry.open(tw) as reg, Governance(reg) as gov:
        manifest = gov.set_rollout(
            world["candidate"],
            site=SITE,
            mode="shadow",
            actor=CLIN,
            identity=console(CLIN),
            why="t",
        )
        assert SITE not in manifest["sites"] and manifest["sites"]["*"]["release"] == world["live"]
        assert [(t["release"], t["site"], t["mode"]) for t in manifest["trials"]] == [
            (world["candidate"], SITE, "shadow")
        ]
        # the live release itself is no candidate where it serves
        with pytest.raises(TransitionNotAllowed, match="compares a candidate"):
            gov.set_rollout(
                world["live"], site=SITE, mode="silent", actor=CLIN, identity=console(CLIN), why="t"
            )
    with Predictor.open(tw, site=SITE) as p:
        res = p.predict(requests(world, 1, prefix="one")[0], requester="ehr")
        [rec] = trial_entries(p.ledger)
    assert res.status == "scored" and res.release == world["live"] and res.mode == "full"
    assert rec.payload["mode"] == "shadow" and rec.payload["paired_request_id"] == res.request_id
    # a shadow trial is an engineering view: not on the governance team's release page
    with Registry.open(tw) as reg, Governance(reg) as gov:
        assert release_dossier(gov, world["candidate"])["trial"] is None
        ended = trials.end_trial(
            gov, world["candidate"], site=SITE, actor=ENG, identity=console(ENG), why="done"
        )
        assert ended["ended"] is not None and reg.trials(task="icu_mortality_48h") == []


def test_a_failing_candidate_does_not_change_the_live_answer(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    plain = copy_of(world, "plain", tmp_path)
    tw = copy_of(world, "trial", tmp_path)
    start(tw, world["candidate"])
    with Registry.open(tw) as reg:
        path = Path(reg.get(world["candidate"]).path)
    (path / "deployment.json").write_text("{}", encoding="utf-8")  # the bundle no longer verifies
    reqs = requests(world, 5, prefix="f")
    with Predictor.open(plain, site=SITE) as p:
        expected = [without_ids(r.to_json()) for r in p.predict_many(reqs, requester="ehr")]
    with Predictor.open(tw, site=SITE) as p:
        got = [without_ids(r.to_json()) for r in p.predict_many(reqs, requester="ehr")]
        recs = trial_entries(p.ledger)
    assert got == expected
    assert len(recs) == 5 and all("BundleSignatureInvalid" in r.payload["failed"] for r in recs)
    assert all("probability" not in r.payload for r in recs)


def test_first_release_runs_silent_before_any_approval(
    trained: tuple[Path, str],
    tmp_path: Path,
    world: dict[str, Any],  # noqa: F811
) -> None:
    ws = Workspace.open(tmp_path / "first")
    shutil.copytree(trained[0] / "artifacts", ws.root / "artifacts", dirs_exist_ok=True)
    consent(ws, 10)
    first = limited_release(ws, trained[1], threshold=0.30)
    with Registry.open(ws) as reg:
        assert reg.active("icu_mortality_48h") is None
    with pytest.raises(ReleaseNotServable, match="no active approved release"):
        Predictor.open(ws, site=SITE)
    start(ws, first)
    with Predictor.open(ws, site=SITE) as p:
        res = p.predict(requests(world, 1, prefix="first")[0], requester="ehr")
        view = p.ledger.read(res.audit_seq)
        assert trial_entries(p.ledger) == []
        other = p.predict(
            requests(world, 1, prefix="north", site="demo-icu-north")[0], requester="ehr"
        )
    assert res.status == "shadow" and res.mode == "silent" and res.probability is None
    assert view.entry.type == "inference" and view.payload["release"] == first
    assert view.payload["shown_to_clinician"] is False
    assert other.status == "refused" and other.refusal["code"] == "not_deployed"
    with Registry.open(ws) as reg, Governance(reg) as gov:
        d = trials.write_dossier(gov, first)
    assert d["sites"][0]["live"] is None and d["sites"][0]["n_candidate"] == 1
    assert d["summary"]["decision"] == "insufficient"


def test_trial_roles_and_the_store_refuses_a_duplicate(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    tw = copy_of(world, "trial", tmp_path)
    with Registry.open(tw) as reg, Governance(reg) as gov:
        gov.grant_roles("auditor.ann", roles=["compliance"], actor=COMP, why="audit")
        with pytest.raises(RoleRequired):
            trials.start_trial(
                gov,
                world["candidate"],
                site=SITE,
                mode="silent",
                actor="auditor.ann",
                identity=console("auditor.ann"),
                why="t",
            )
        with pytest.raises(InputInvalid, match="why"):
            trials.start_trial(
                gov,
                world["candidate"],
                site=SITE,
                mode="silent",
                actor=CLIN,
                identity=console(CLIN),
                why=" ",
            )
        with pytest.raises(TransitionNotAllowed, match="not a trial mode"):
            trials.start_trial(
                gov,
                world["candidate"],
                site=SITE,
                mode="pilot",
                actor=CLIN,
                identity=console(CLIN),
                why="t",
            )
        with pytest.raises(TransitionNotAllowed, match="name the site"):
            trials.start_trial(
                gov,
                world["candidate"],
                site="*",
                mode="silent",
                actor=CLIN,
                identity=console(CLIN),
                why="t",
            )
        trials.start_trial(
            gov,
            world["candidate"],
            site=SITE,
            mode="silent",
            actor=CLIN,
            identity=console(CLIN),
            why="t",
        )
        with pytest.raises(TrialAlreadyRunning):
            trials.start_trial(
                gov,
                world["candidate"],
                site=SITE,
                mode="shadow",
                actor=ENG,
                identity=console(ENG),
                why="t",
            )
        with pytest.raises(RoleRequired):
            trials.end_trial(
                gov,
                world["candidate"],
                site=SITE,
                actor="auditor.ann",
                identity=console("auditor.ann"),
                why="t",
            )
    # the store itself holds the rule: a second running row cannot be inserted
    from clinical_mlops.registry import schema as t

    with (
        Registry.open(tw) as reg,
        pytest.raises(sa.exc.IntegrityError),
        reg.engine.begin() as conn,
    ):
        conn.execute(
            sa.insert(t.trials).values(
                task="icu_mortality_48h",
                site=SITE,
                version=world["candidate"],
                mode="shadow",
                started="x",
                started_by="x",
                why="x",
            )
        )
    with Ledger.open(tw) as led:
        kinds = [
            v.entry.type for v in led.read_from(1, types=("trial_started", "governance_refused"))
        ]
    assert kinds.count("trial_started") == 1 and kinds.count("governance_refused") == 5
