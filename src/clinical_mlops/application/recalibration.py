"""Local recalibration as a governed change: refit a release's calibration at one site.

:func:`recalibrate_release` takes a registered release, a site and a snapshot holding
that site's stays, and produces a new release of the task:

1. **Checks, before anything is written** (each refusal names its field and records
   nothing): the method is ``isotonic`` or ``logistic``; the site's stays are new to the
   model, by the rule external validation applies (the release's task, feature contract
   and outcome; no stay of the development cohort; not a development site within the
   development years — a calibrator fitted on the model's own training stays would be
   biased); the site is one the
   snapshot holds (the refusal lists them); each part of the site's stays holds at
   least ``acceptance.min_recalibration_events`` events and non-events (the release's
   task spec; default 50); the actor holds the engineering role.
2. **Fit** (:mod:`clinical_mlops.modeling.recalibration`): the release's scoring model
   unchanged, a new calibrator, conformal thresholds and escalation reference fitted on
   the site's training-period stays; the site's test-period stays held out.
3. **Evidence**: a new model folder (artifacts, lineage naming the parent release and
   model, the site, the snapshot, the method and the split; the validation report and
   model card computed on the held-out site stays), a ``training_run`` event (kind
   ``local_recalibration``) and a ``report_written`` event.
4. **Release**: a signed bundle scoped to the site (``deployment.json`` ``site``), and a
   draft release registered with its change classified against the parent release —
   clinical-impacting, saying where and on how many stays the calibration was refitted.
   It passes its own gates and approvals like any release, and is rolled out at its
   site only.

The calibration of the parent and of the new release on the held-out site stays is
returned (calibration-in-the-large, slope, ECE, Brier), so the improvement is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_mlops.errors import ValueInvalid, WorkspaceError
from clinical_mlops.governance.board import Governance
from clinical_mlops.hashing import canonical_json, sha256_file
from clinical_mlops.vocabulary import Role

if TYPE_CHECKING:
    import numpy as np

    from clinical_mlops.registry.bundle import Bundle
    from clinical_mlops.registry.registry import Release

__all__ = ["Recalibration", "calibration_figures", "recalibrate_release"]

Step = Callable[[str], None]


@dataclass(frozen=True)
class Recalibration:
    """What a local recalibration produced: the new release, its change, the evidence."""

    release: Release
    parent: str
    site: str
    method: str
    model_version: str
    bundle: Bundle
    folder: Path
    split: dict[str, Any]
    #: calibration on the held-out site stays: {"parent": {...}, "recalibrated": {...}}
    calibration: dict[str, dict[str, Any]]

    @property
    def change(self) -> dict[str, Any]:
        return self.release.change

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release.version,
            "status": self.release.status,
            "parent": self.parent,
            "site": self.site,
            "method": self.method,
            "model_version": self.model_version,
            "bundle_sha256": self.bundle.sha256,
            "bundle": str(self.bundle.path),
            "change_class": self.change.get("change_class"),
            "change": self.change,
            "split": self.split,
            "calibration_on_held_out": self.calibration,
            "folder": str(self.folder),
        }


def calibration_figures(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Return calibration of probabilities ``p`` against 0/1 outcomes ``y`` (rounded to 1e-4).

    ``mean_predicted`` and ``observed_rate`` (calibration-in-the-large in plain words),
    ``intercept`` (with the slope fixed at 1; 0 is ideal), ``slope`` (1 is ideal), ECE
    (10 equal-width bins) and the Brier score — the report's own definitions.
    """
    from clinical_mlops.evaluation.metrics import (
        brier_score,
        calibration_slope_intercept,
        expected_calibration_error,
    )

    cal = calibration_slope_intercept(y, p)
    return {"n": len(y)} | {
        k: round(float(v), 4)
        for k, v in {
            "mean_predicted": float(p.mean()),
            "observed_rate": float(y.mean()),
            "intercept": cal["intercept"],
            "slope": cal["slope"],
            "ece": expected_calibration_error(y, p),
            "brier": brier_score(y, p),
        }.items()
    }


def recalibrate_release(
    governance: Governance,
    version: str,
    *,
    site: str,
    snapshot: str,
    method: str = "isotonic",
    actor: str,
    why: str | None = None,
    role: str | None = None,
    seed: int | None = None,
    n_boot: int | None = None,
    on_step: Step | None = None,
) -> Recalibration:
    """Return the draft release made by recalibrating release ``version`` at ``site``.

    ``snapshot`` (an id or unique prefix) holds the site's stays; ``method`` is
    ``isotonic`` or ``logistic``; ``seed`` (default: the parent's) seeds the split and
    the report's bootstrap, ``n_boot`` (default: the parent's) its resamples. Refusals —
    an unknown method (``method``), a snapshot of another task, feature contract or
    outcome, or holding stays seen in development, or the site's stays within the
    development years at a development site (``--on``/``--site``: the independence rule of
    :func:`~clinical_mlops.registry.external.independence_problems`), a site the snapshot
    does not hold (``--site``, listing those it holds),
    too few outcomes (``acceptance.min_recalibration_events``), an actor without the
    engineering role, a recalibration already registered (same model version) — write
    nothing. The same inputs and seed give the same model version.
    """
    from clinical_mlops.evaluation.inputs import evaluation_input, fitted_on_words
    from clinical_mlops.evaluation.model_card import write_model_card
    from clinical_mlops.evaluation.report import evaluate, write_report
    from clinical_mlops.features.snapshot import open_snapshot
    from clinical_mlops.modeling.recalibration import (
        check_method,
        minimum_problems,
        recalibrate,
        site_split,
    )
    from clinical_mlops.registry.bundle import build_bundle
    from clinical_mlops.registry.external import independence_problems
    from clinical_mlops.registry.lineage import lineage_record

    step = on_step or (lambda _msg: None)
    chosen = check_method(method)
    registry = governance.registry
    workspace = registry.workspace
    parent = registry.get(version)
    parent_bundle = registry.bundle(parent.version)
    snap = open_snapshot(workspace, snapshot)
    # The site's stays must be new to the model: the same task, feature contract and
    # outcome, and no stay seen in development (the rule external validation applies).
    if snap.task_name != parent_bundle.task:
        problems = independence_problems(workspace, parent_bundle, snap, snap.cohort())
    else:
        frame = snap.frame()
        sites = sorted(frame["site"].astype(str).unique()) if "site" in frame.columns else []
        if site not in sites:
            raise ValueInvalid(
                f"--site: snapshot {snap.id[:12]} holds no stays of site {site!r} (sites "
                f"present: {', '.join(sites) or 'none recorded'})"
            )
        problems = independence_problems(
            workspace, parent_bundle, snap, frame.loc[frame["site"] == site], sites=[site]
        )
    if problems:
        raise ValueInvalid(
            "; ".join(f"{option}: {message}" for option, message in problems)
            + " (nothing was recorded)"
        )
    try:
        snap.spec()
    except WorkspaceError as exc:
        raise ValueInvalid(f"--on: {exc}") from None
    spec = parent_bundle.spec()
    parent_lineage = parent_bundle.read_json("lineage.json")
    seed = int(parent_lineage["seed"] if seed is None else seed)
    n_boot = int(parent_lineage["training"]["config"]["n_boot"] if n_boot is None else n_boot)
    split = site_split(frame, snap.spec(), site=site, seed=seed)
    minimum = spec.acceptance.min_recalibration_events
    short = minimum_problems(split, minimum)
    if short:
        raise ValueInvalid(
            f"acceptance.min_recalibration_events: each part needs at least {minimum} events "
            f"and {minimum} non-events; {'; '.join(short)} (nothing was recorded)"
        )
    with governance.governed(action="recalibrate", actor=actor, version=parent.version):
        acting = governance.require(
            actor,
            allowed=(Role.ENGINEERING,),
            action=f"recalibrate {parent.version}",
            role=role,
        )

    step(f"refitting {chosen} calibration and conformal sets on {split.n_fit} stays of {site}")
    parent_model = parent_bundle.model()
    model = recalibrate(parent_model, split, method=chosen, spec=spec)
    same = [r.version for r in registry.list(task=parent.task) if r.model_version == model.version]
    if same:
        raise ValueInvalid(
            f"--site/--on/--method: this recalibration of {parent.version} (model "
            f"{model.version}) is already registered as {same[0]}; nothing was written"
        )
    hashes = model.artifact_hashes()
    lineage = lineage_record(
        snapshot_manifest=snap.manifest,
        snapshot_id=snap.id,
        seed=seed,
        selection=parent_lineage["selection"],
        training=parent_lineage["training"]
        | {"config": parent_lineage["training"]["config"] | {"n_boot": n_boot}},
        artifacts=hashes,
    )
    lineage["recalibration"] = {
        "site": site,
        "method": chosen,
        "snapshot_id": snap.id,
        "split": split.to_json(),
        "min_recalibration_events": minimum,
        "parent": {
            "release": parent.version,
            "bundle_sha256": parent.bundle_sha256,
            "model_version": parent.model_version,
            "snapshot_id": parent_lineage["snapshot"]["id"],
        },
        "unchanged": ["model.json", "preprocess.json", "explanation.json"],
    }

    step(f"evaluating on {len(split.held_out)} held-out stays of {site} ({n_boot} resamples)")
    selection = parent_lineage["selection"]
    inp = evaluation_input(
        model=model,
        snapshot=snap,
        test=split.held_out,
        selected_model=selection["selected_model"],
        hyperparameters=selection["hyperparameters"],
        cv=selection["cv"],
        lineage=lineage,
        seed=seed,
        fitted_on=fitted_on_words(lineage),
    )
    report = evaluate(inp, n_boot=n_boot)
    before = parent_model.probability(split.held_out)
    calibration = {
        "parent": calibration_figures(inp.y_true, before),
        "recalibrated": calibration_figures(inp.y_true, inp.p_cal),
    }

    final = workspace.models_dir / model.version
    with workspace.staging_dir(workspace.models_dir) as stage:
        model.save(stage)
        (stage / "lineage.json").write_bytes(canonical_json(lineage))
        written = [
            *write_report(report, inp, stage).values(),
            *write_model_card(report, inp, stage).values(),
        ]
        workspace.publish(stage, final)
    paths = {Path(p).name: final / Path(p).name for p in written}
    registry.record(
        type="training_run",
        actor=actor,
        payload={
            "kind": "local_recalibration",
            "model_version": model.version,
            "model_sha256": model.model_sha256,
            "snapshot_id": snap.id,
            "parent_release": parent.version,
            "parent_model_version": parent.model_version,
            "site": site,
            "method": chosen,
            "seed": seed,
            "artifacts": hashes,
            "held_out_calibration": calibration,
        },
    )
    registry.record(
        type="report_written",
        actor=actor,
        payload={
            "model_version": model.version,
            "files": {name: sha256_file(path) for name, path in sorted(paths.items())},
        },
    )

    step("building the signed bundle and registering the release")
    bundle = build_bundle(
        workspace,
        model_version=model.version,
        author=actor,
        threshold=parent_bundle.threshold,
        clock=registry.clock,
    )
    release = governance.register(
        bundle,
        actor=actor,
        role=acting,
        why=(why or "").strip()
        or f"local {chosen} recalibration of {parent.version} at site {site}",
        against=parent.version,
    )
    return Recalibration(
        release=release,
        parent=parent.version,
        site=site,
        method=chosen,
        model_version=model.version,
        bundle=bundle,
        folder=final,
        split=split.to_json(),
        calibration=calibration,
    )
