"""External validation of a release (R-V1): its model on data outside its development.

:func:`validate_on` applies the model of a registered release — read from its verified
bundle, JSON only — to the stays of another snapshot (all of them, or those of named
sites), evaluates them with the same :func:`~clinical_mlops.evaluation.report.evaluate`
as development, at the release's operating threshold and under its signed escalation
policy, and adds the comparison with the development figures
(:func:`~clinical_mlops.evaluation.external.with_development_comparison`). The report
(``report.json`` and ``report.html``) is stored under
``artifacts/validations/<bundle>/<id>/``, a row in ``reg_external_validations`` (one per
release, snapshot and site selection, enforced by the store) and an
``external_validation_recorded`` ledger entry carrying the report's SHA-256, written in
one metadata transaction.

Refused, with the option named and nothing recorded (:class:`ExternalValidationRefused`):

* ``--on``: a snapshot of another task, or with another feature contract or outcome
  definition than the release was trained on;
* ``--on``: stays seen in development — the snapshot shares a raw file with the
  release's development snapshot (same source) and a selected stay is in the
  development cohort;
* ``--site`` (``--on`` when no site is named): an overlapping period — selected stays at
  a site of the development cohort with years inside the development years (later
  years at the same site, or another site, are external);
* ``--site``: a site the snapshot does not hold; ``--on``/``--site``: a selection with
  no events (or no non-events), which no figure could describe;
* the same release, snapshot and sites validated before.

A selection with both classes but too few stays or events is evaluated and reported with
the report's insufficient-data wording in place of the figures it cannot support.
:func:`independence_problems` is the check on its own, for any use of a release on other
data (local recalibration reuses it).
"""

from __future__ import annotations

import builtins
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from clinical_mlops.errors import RegistryError
from clinical_mlops.hashing import canonical_json, sha256_file, sha256_json
from clinical_mlops.registry import schema as t
from clinical_mlops.registry.bundle import Bundle
from clinical_mlops.registry.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.features.snapshot import Snapshot
    from clinical_mlops.workspace import Workspace

__all__ = [
    "ALL_SITES",
    "ExternalValidation",
    "ExternalValidationRefused",
    "external_validations",
    "independence_problems",
    "select_stays",
    "validate_on",
    "validated_sites",
]

#: the ``sites`` key of a validation over every stay of its snapshot
ALL_SITES = "*"
#: feature attributes that make two feature contracts the same model input
_CONTRACT = ("kind", "unit", "aggregation", "categories", "window")


class ExternalValidationRefused(RegistryError):
    """An external validation refused; ``problems`` lists (option, message). Nothing recorded."""

    def __init__(self, release: str, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__(
            f"external validation of {release} refused (nothing was recorded): "
            + "; ".join(f"{field}: {message}" for field, message in problems)
        )


@dataclass(frozen=True)
class ExternalValidation:
    """One external validation recorded as evidence of a release."""

    id: str
    release: str
    snapshot_id: str
    sites: tuple[str, ...]
    years: tuple[int, int]
    n: int
    n_events: int
    auroc: float | None
    summary: dict[str, Any]
    path: Path
    report_sha256: str
    html_sha256: str
    actor: str
    at: str
    seq: int | None

    def to_json(self) -> dict[str, Any]:
        return self.summary | {
            "id": self.id,
            "release": self.release,
            "snapshot_id": self.snapshot_id,
            "sites": list(self.sites),
            "years": list(self.years),
            "n": self.n,
            "n_events": self.n_events,
            "auroc": self.auroc,
            "path": str(self.path),
            "report_sha256": self.report_sha256,
            "html_sha256": self.html_sha256,
            "actor": self.actor,
            "at": self.at,
            "seq": self.seq,
        }


def _sites_key(sites: Sequence[str] | None) -> str:
    return ",".join(sorted(set(sites))) if sites else ALL_SITES


def _span(years: Any) -> str:
    lo, hi = int(min(years)), int(max(years))
    return str(lo) if lo == hi else f"{lo}-{hi}"


def select_stays(snapshot: Snapshot, sites: Sequence[str] | None = None) -> pd.DataFrame:
    """Return the stays of ``snapshot`` an external use reads: all, or those at ``sites``.

    One row per stay (features, label, real_year, ethnicity, site); a site the snapshot
    does not hold is refused (``--site``, naming the sites it holds).
    """
    frame = snapshot.frame()
    if not sites:
        return frame.reset_index(drop=True)
    held = sorted(str(s) for s in frame["site"].unique())
    unknown = sorted(set(sites) - set(held))
    if unknown:
        raise ExternalValidationRefused(
            snapshot.task_name,
            [
                (
                    "--site",
                    f"snapshot {snapshot.id[:12]} holds no stay at {', '.join(unknown)} (its "
                    f"sites: {', '.join(held)})",
                )
            ],
        )
    return frame.loc[frame["site"].isin(list(sites))].reset_index(drop=True)


def _feature_contract(spec: Any) -> dict[str, dict[str, Any]]:
    return {
        f.name: {k: json.loads(canonical_json(getattr(f, k, None))) for k in _CONTRACT}
        for f in spec.features
    }


def _checks(
    workspace: Workspace,
    bundle: Bundle,
    snapshot: Snapshot,
    stays: pd.DataFrame,
    *,
    sites: Sequence[str] | None,
) -> tuple[list[tuple[str, str]], list[str], dict[str, Any]]:
    """Return (problems, statements of independence, the development's sites and years)."""
    from clinical_mlops.errors import SnapshotNotFound
    from clinical_mlops.features.snapshot import SPEC_FILE, open_snapshot
    from clinical_mlops.tasks.spec import task_from_mapping

    on = f"snapshot {snapshot.id[:12]}"
    if snapshot.task_name != bundle.task:
        return (
            [
                (
                    "--on",
                    f"{on} is of task {snapshot.task_name!r}; the release predicts task "
                    f"{bundle.task!r}",
                )
            ],
            [],
            {},
        )
    problems: list[tuple[str, str]] = []
    released = bundle.spec()
    sealed = snapshot.path / SPEC_FILE
    theirs = task_from_mapping(json.loads(sealed.read_text(encoding="utf-8")), source=str(sealed))
    ours_c, theirs_c = _feature_contract(released), _feature_contract(theirs)
    if ours_c != theirs_c:
        missing = sorted(set(ours_c) - set(theirs_c))
        extra = sorted(set(theirs_c) - set(ours_c))
        differing = sorted(n for n in set(ours_c) & set(theirs_c) if ours_c[n] != theirs_c[n])
        parts = [
            *([f"lacks {', '.join(missing)}"] if missing else []),
            *([f"adds {', '.join(extra)}"] if extra else []),
            *([f"defines {', '.join(differing)} differently"] if differing else []),
        ]
        problems.append(
            (
                "--on",
                f"{on} was built with another feature contract than the release was trained "
                f"on (it {'; '.join(parts)})",
            )
        )
    if released.label.model_dump(mode="json") != theirs.label.model_dump(mode="json"):
        problems.append(
            ("--on", f"{on} defines the outcome {theirs.label.name!r} differently from the release")
        )
    dev_manifest = bundle.read_json("snapshot_manifest.json")
    dev_id = str(bundle.release["snapshot_id"])
    try:
        development = open_snapshot(workspace, dev_id)
    except SnapshotNotFound:
        problems.append(
            (
                "--on",
                f"the release's development snapshot {dev_id[:12]} is not in this workspace, so "
                "stays seen in development cannot be told apart; restore it first",
            )
        )
        return problems, [], {}
    dev = development.cohort()
    dev_sites = sorted(str(s) for s in dev["site"].unique())
    lo, hi = int(dev["real_year"].min()), int(dev["real_year"].max())
    about = {"snapshot_id": dev_id, "sites": dev_sites, "years": [lo, hi], "n_stays": len(dev)}
    statements: list[str] = []
    shared = set(dev_manifest["source"].get("raw_files", {}).values()) & set(
        snapshot.manifest["source"].get("raw_files", {}).values()
    )
    if shared:
        seen = stays["stay_id"].isin(dev["stay_id"])
        if bool(seen.any()):
            problems.append(
                (
                    "--on",
                    f"{on} comes from the same raw source as the release's development snapshot "
                    f"{dev_id[:12]} and {int(seen.sum())} of its {len(stays)} selected stays were "
                    "in the development cohort (leakage: stays seen in development)",
                )
            )
        else:
            statements.append(
                f"Same raw source as development, but none of the {len(stays)} stays was in "
                "the development cohort."
            )
    else:
        statements.append(
            f"Another raw source than development (no raw file in common with snapshot "
            f"{dev_id[:12]})."
        )
    at_dev_site = stays["site"].astype(str).isin(dev_sites)
    inside = at_dev_site & stays["real_year"].between(lo, hi)
    if bool(inside.any()):
        overlap = stays.loc[inside]
        where = sorted(str(s) for s in overlap["site"].unique())
        problems.append(
            (
                "--site" if sites else "--on",
                f"{int(inside.sum())} selected stays are at {', '.join(where)} in "
                f"{_span(overlap['real_year'])}, a site and period of development (sites "
                f"{', '.join(dev_sites)}, {lo}-{hi}): not external; select another site, or "
                f"years after {hi}",
            )
        )
    else:
        other = sorted(str(s) for s in stays.loc[~at_dev_site, "site"].unique())
        later = stays.loc[at_dev_site]
        if other:
            statements.append(
                f"Site(s) {', '.join(other)} were not in development (sites "
                f"{', '.join(dev_sites)})."
            )
        if len(later):
            statements.append(
                f"Stays at development sites are from {_span(later['real_year'])}, after the "
                f"development years {lo}-{hi}."
            )
    return problems, statements, about


def independence_problems(
    workspace: Workspace,
    bundle: Bundle,
    snapshot: Snapshot,
    stays: pd.DataFrame,
    *,
    sites: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Return why ``stays`` of ``snapshot`` are not external data for ``bundle`` ([]: they are).

    Each problem is (option, message), the option as the command line names it:
    another task or feature contract or outcome (``--on``); stays of the development
    cohort when the snapshot shares a raw file with the development snapshot (``--on``);
    stays at a development site within the development years (``--site`` when ``sites``
    were named, else ``--on``). The development cohort is read from the release's
    development snapshot, which must be in ``workspace``.
    """
    return _checks(workspace, bundle, snapshot, stays, sites=sites)[0]


def _row(r: Any, workspace: Workspace) -> ExternalValidation:
    return ExternalValidation(
        id=r.id,
        release=r.version,
        snapshot_id=r.snapshot_id,
        sites=tuple(json.loads(r.summary)["sites"]),
        years=(int(r.year_from), int(r.year_to)),
        n=int(r.n),
        n_events=int(r.n_events),
        auroc=r.auroc,
        summary=json.loads(r.summary),
        path=workspace.root / r.path,
        report_sha256=r.report_sha256,
        html_sha256=r.html_sha256,
        actor=r.actor,
        at=r.time,
        seq=r.ledger_seq,
    )


def external_validations(registry: Registry, version: str) -> builtins.list[ExternalValidation]:
    """Return the external validations recorded for release ``version``, oldest first."""
    rel = registry.get(version)
    table = t.external_validations
    with registry.engine.connect() as conn:
        rows = conn.execute(
            sa.select(table)
            .where(table.c.version == rel.version)
            .order_by(table.c.time, table.c.id)
        ).all()
    return [_row(r, registry.workspace) for r in rows]


def validated_sites(validations: Sequence[ExternalValidation]) -> builtins.list[str]:
    """Return the sites with an external validation whose AUROC could be measured, sorted."""
    return sorted({s for v in validations if v.auroc is not None for s in v.sites})


def _existing(registry: Registry, version: str, snapshot_id: str, key: str) -> Any:
    table = t.external_validations
    with registry.engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.id, table.c.actor, table.c.time).where(
                table.c.version == version,
                table.c.snapshot_id == snapshot_id,
                table.c.sites == key,
            )
        ).first()


def _evaluate(
    bundle: Bundle,
    snapshot: Snapshot,
    stays: pd.DataFrame,
    *,
    statement: str,
) -> tuple[ValidationReport, Any]:
    """Return the report of the release's model on ``stays`` and the input it was computed from."""
    from clinical_mlops.evaluation.inputs import evaluation_input
    from clinical_mlops.evaluation.report import evaluate
    from clinical_mlops.modeling.escalation import ResolvedEscalation

    lineage = bundle.read_json("lineage.json")
    selection = lineage["selection"]
    inp = evaluation_input(
        model=bundle.model(),
        snapshot=snapshot,
        test=stays,
        selected_model=selection["selected_model"],
        hyperparameters=selection["hyperparameters"],
        cv=selection["cv"],
        lineage=lineage,
        seed=int(lineage["seed"]),
    )
    # the release's own spec (its threshold, policy and strata), and the words of what was covered
    inp = replace(inp, spec=bundle.spec(), extra=inp.extra | {"external": statement})
    policy = bundle.deployment.get("escalation")
    report = evaluate(
        inp,
        n_boot=int(lineage["training"]["config"]["n_boot"]),
        threshold=bundle.threshold,
        escalation=None if policy is None else ResolvedEscalation.from_json(policy),
    )
    return report, inp


def validate_on(
    registry: Registry,
    version: str,
    *,
    on: str,
    sites: Sequence[str] | None = None,
    actor: str,
) -> ExternalValidation:
    """Return the external validation of release ``version`` on snapshot ``on``, recorded.

    ``sites`` restricts the validation to the stays of those sites (default: every stay
    of the snapshot). Refusals raise :class:`ExternalValidationRefused` naming the
    option, before anything is written. The report files, the registry row and the
    ``external_validation_recorded`` entry are written together: the row is inserted
    first (the store refuses a second validation of the same release, snapshot and
    sites), then the entry, then the report folder is moved into place, in one
    metadata transaction.
    """
    from clinical_mlops.evaluation.external import with_development_comparison
    from clinical_mlops.evaluation.report import write_report
    from clinical_mlops.features.snapshot import open_snapshot

    workspace = registry.workspace
    rel = registry.get(version)
    bundle = registry.bundle(rel.version)
    snapshot = open_snapshot(workspace, on)
    chosen = sorted(set(sites)) if sites else None
    key = _sites_key(chosen)
    earlier = _existing(registry, rel.version, snapshot.id, key)
    if earlier is not None:
        raise ExternalValidationRefused(
            rel.version,
            [
                (
                    "--on",
                    f"{rel.version} was already validated on snapshot {snapshot.id[:12]} at "
                    f"{'every site' if key == ALL_SITES else key} by {earlier.actor} at "
                    f"{earlier.time} (validation {earlier.id}; rule: one per release, snapshot "
                    "and sites)",
                )
            ],
        )
    stays = select_stays(snapshot, chosen)
    problems, statements, development = _checks(workspace, bundle, snapshot, stays, sites=chosen)
    if problems:
        raise ExternalValidationRefused(rel.version, problems)
    label = bundle.spec().label.name
    n, n_events = len(stays), int(stays[label].sum()) if len(stays) else 0
    where = "--site" if chosen else "--on"
    if n_events == 0 or n_events == n:
        missing = "no events" if n_events == 0 else "no stay without the event"
        problems.append(
            (
                where,
                f"the {n} selected stays have {missing} ({label}); no discrimination or "
                "calibration figure can describe them",
            )
        )
    if problems:
        raise ExternalValidationRefused(rel.version, problems)
    site_list = chosen or sorted(str(s) for s in stays["site"].unique())
    years = [int(stays["real_year"].min()), int(stays["real_year"].max())]
    selection = f"the stays at {', '.join(chosen)}" if chosen else "every stay of the snapshot"
    statement = (
        f"External validation of {rel.version} on {selection} (snapshot {snapshot.id[:12]}, "
        f"site(s) {', '.join(site_list)}, {_span(years)}): {' '.join(statements)} Performance "
        "at other sites and in other years remains unknown and must be monitored."
    )
    report, inp = _evaluate(bundle, snapshot, stays, statement=statement)
    report = with_development_comparison(
        report,
        bundle.report(),
        about={
            "release": rel.version,
            "bundle_sha256": bundle.sha256,
            "snapshot_id": snapshot.id,
            "source": snapshot.manifest["source"].get("source"),
            "sites": site_list,
            "selection": selection,
            "years": years,
            "n": n,
            "n_events": n_events,
            "development": development | {"n_test": bundle.report().test.n},
            "independence": statements,
        },
    )
    validation_id = sha256_json({"release": rel.version, "snapshot_id": snapshot.id, "sites": key})[
        :16
    ]
    parent = workspace.artifacts_dir / "validations" / bundle.path.name
    final = parent / validation_id
    external = report.external
    if external is None:  # with_development_comparison always sets it
        raise RegistryError(f"external validation of {rel.version}: the comparison is missing")
    auroc = report.test.auroc
    summary = {
        "sites": site_list,
        "selection": selection,
        "auroc_ci": report.test.auroc_ci,
        "development_auroc": bundle.report().test.auroc,
        "development_auroc_ci": bundle.report().test.auroc_ci,
        "auroc_ci_below_development": external.auroc_ci_below_development,
        "rows": [r.to_json() for r in external.rows],
        "statement": external.summary,
    }
    table = t.external_validations
    now = registry.now()
    with workspace.staging_dir(parent) as stage:
        written = write_report(report, inp, stage)
        report_sha, html_sha = sha256_file(written["json"]), sha256_file(written["html"])
        try:
            with registry.engine.begin() as conn:
                conn.execute(
                    sa.insert(table).values(
                        id=validation_id,
                        version=rel.version,
                        snapshot_id=snapshot.id,
                        sites=key,
                        year_from=years[0],
                        year_to=years[1],
                        n=n,
                        n_events=n_events,
                        auroc=float(auroc) if isinstance(auroc, int | float) else None,
                        summary=canonical_json(summary).decode("utf-8"),
                        path=str(final.relative_to(workspace.root)),
                        report_sha256=report_sha,
                        html_sha256=html_sha,
                        actor=actor,
                        time=now,
                    )
                )
                seq = registry.record(
                    type="external_validation_recorded",
                    actor=actor,
                    payload={
                        "release": rel.version,
                        "bundle_sha256": bundle.sha256,
                        "snapshot_id": snapshot.id,
                        "sites": site_list,
                        "years": years,
                        "n": n,
                        "n_events": n_events,
                        "report_sha256": report_sha,
                        "html_sha256": html_sha,
                        "auroc": auroc if isinstance(auroc, int | float | str) else "not measured",
                        "auroc_ci_below_development": external.auroc_ci_below_development,
                    },
                )
                if final.exists():
                    # left by a run that stopped before its row was committed: not evidence
                    shutil.rmtree(final)
                workspace.publish(stage, final)
                conn.execute(
                    sa.update(table).where(table.c.id == validation_id).values(ledger_seq=seq)
                )
        except sa.exc.IntegrityError:
            raise ExternalValidationRefused(
                rel.version,
                [
                    (
                        "--on",
                        f"{rel.version} was already validated on snapshot {snapshot.id[:12]} "
                        "at these sites (rule: one per release, snapshot and sites)",
                    )
                ],
            ) from None
    return next(v for v in external_validations(registry, rel.version) if v.id == validation_id)
