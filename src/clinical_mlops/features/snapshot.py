"""Content-addressed dataset snapshots: the cohort joined with its features, versioned.

The snapshot is the input of every model. :func:`build_snapshot` builds one from a raw
source (contracts, cohort, feature SQL, leakage check); :func:`build_table_snapshot`
from a prepared table (``data.table``).

A snapshot is a folder ``artifacts/snapshots/<id>/`` holding

* ``cohort.parquet``   — stay_id, real_year, split, label, ethnicity (for subgroup audits),
  site (the hospital the stay belongs to: an evaluation stratum, never a model input)
  and, for a table whose clinical baseline is a column, that score (audit only)
* ``features.parquet`` — stay_id and exactly the spec's approved features
* ``contracts.json``   — every data-contract check that ran, with counts and examples
* ``manifest.json``    — the canonical manifest; ``id = SHA-256(manifest.json)``

The manifest records the source (name, version, extraction time,
de-identification method, raw file hashes), the cohort-criteria hash, the
feature-SQL hash and that of the event aggregation generated from the spec
(``event_features_sha256``), the cohort flow, counts, prevalence, training-set
missingness, the split-membership hash and the SHA-256 of every file. The same
source, spec and SQL therefore always give the same id, and any change to any
of them gives another. The build time and engine go to ``build.json`` beside it,
which is not part of the id.

Building is all-or-nothing: work happens in a staging folder that is renamed
into place only after every hard contract passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from clinical_mlops import __version__, ledger
from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.data.cohort import (
    apply_missingness_criterion,
    build_cohort,
    require_both_classes,
)
from clinical_mlops.data.contracts import ContractReport, check_features, check_leakage, check_raw
from clinical_mlops.data.raw import UNSPECIFIED_SITE, RawSource, write_table
from clinical_mlops.data.table import prepare_table
from clinical_mlops.errors import ContractViolation, SnapshotNotFound, WorkspaceError
from clinical_mlops.features.engine import (
    FeatureEngine,
    FeatureSQL,
    extract_features,
    feature_views,
    load_feature_sql,
)
from clinical_mlops.hashing import (
    canonical_json,
    sha256_bytes,
    sha256_file,
    sha256_json,
    sha256_text,
)
from clinical_mlops.tasks.spec import BASELINE_COLUMN, TaskSpec, load_sealed_task
from clinical_mlops.workspace import Workspace

__all__ = [
    "MANIFEST_SCHEMA",
    "SPEC_FILE",
    "Snapshot",
    "build_snapshot",
    "build_table_snapshot",
    "list_snapshots",
    "locked_test_stays",
    "open_snapshot",
    "write_snapshot",
]

MANIFEST_SCHEMA = "clinical-mlops/snapshot-manifest/v1"
_FILES = ("cohort.parquet", "features.parquet", "contracts.json")
#: The task spec the snapshot was built with, beside the manifest (checked by its hash there).
SPEC_FILE = "task_spec.json"

StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot on disk."""

    id: str
    path: Path
    manifest: dict[str, Any]
    #: true when a build found this snapshot already built from the same inputs
    reused: bool = field(default=False, compare=False)

    @property
    def task_name(self) -> str:
        return str(self.manifest["task"]["name"])

    def spec(self) -> TaskSpec:
        """Return the task spec this snapshot was built with (checked by hash)."""
        spec = load_sealed_task(self.task_name, self.path / SPEC_FILE)
        if spec.spec_hash() != self.manifest["task"]["spec_sha256"]:
            raise WorkspaceError(
                f"snapshot {self.id[:12]} was built with a different version of task "
                f"{self.task_name!r} (spec hash {self.manifest['task']['spec_sha256'][:12]}, "
                f"installed {spec.spec_hash()[:12]}); rebuild the snapshot"
            )
        return spec

    def cohort(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "cohort.parquet")

    def features(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "features.parquet")

    def frame(self) -> pd.DataFrame:
        """Return the features joined to the cohort: one row per stay, with split and label."""
        return self.features().merge(
            self.cohort(), on="stay_id", how="inner", validate="one_to_one"
        )

    def contracts(self) -> dict[str, Any]:
        return dict(json.loads((self.path / "contracts.json").read_text(encoding="utf-8")))

    def published_comparison(self) -> list[dict[str, Any]]:
        """Rows of (figure, ours, published) for the figures the task spec publishes."""
        published = self.spec().published
        ours = self.summary()
        rows: list[dict[str, Any]] = []
        for key, label in (
            ("n_stays", "cohort stays"),
            ("n_train", "train stays"),
            ("n_test", "test stays"),
        ):
            if key in published:
                rows.append({"figure": label, "ours": ours[key], "published": published[key]})
        if "prevalence" in published:
            rows.append(
                {
                    "figure": "prevalence",
                    "ours": ours["prevalence"],
                    "published": published["prevalence"],
                }
            )
        for feature, rate in published.get("missingness", {}).items():
            rows.append(
                {
                    "figure": f"missing {feature} (train)",
                    "ours": ours["missingness"].get(feature),
                    "published": rate,
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """The figures a user asks for first (the ``--json`` output of ``data build``)."""
        m = self.manifest
        return {
            "snapshot_id": self.id,
            "task": m["task"]["name"],
            "source": m["source"]["source"],
            "cohort_flow": m["cohort_flow"],
            "n_stays": m["counts"]["n_stays"],
            "n_train": m["counts"]["n_train"],
            "n_test": m["counts"]["n_test"],
            "n_positive": m["counts"]["n_positive"],
            "prevalence": m["prevalence"]["overall"],
            "prevalence_train": m["prevalence"]["train"],
            "prevalence_test": m["prevalence"]["test"],
            "missingness": m["missingness_train"],
            "feature_sql_sha256": m["feature_sql"]["sha256"],
            "criteria_sha256": m["cohort_criteria_sha256"],
            "contracts": {k: v for k, v in m["contracts"].items() if k != "soft"},
            "path": str(self.path),
        }


def build_snapshot(
    workspace: Workspace,
    spec: TaskSpec,
    source: RawSource,
    *,
    engine: FeatureEngine | None = None,
    sql: FeatureSQL | None = None,
    clock: Clock | None = None,
    on_step: StepCallback | None = None,
    actor: str = "pipeline",
) -> Snapshot:
    """Build (or find) the snapshot of ``spec`` over ``source``; return it.

    Raises :class:`ContractViolation` / :class:`LeakageDetected` on hard
    contract failures, :class:`UndeclaredFeature` if the SQL returns anything
    beyond the approved features. Nothing is written unless all checks pass.
    A ``snapshot_built`` event naming ``actor`` is appended to the audit ledger.
    When the workspace holds the snapshot built from the same inputs (task spec,
    source files, feature SQL, package version) it is returned, ``reused``, without
    running the build again or recording a second event.
    """
    step = on_step or (lambda _name: None)
    clock = clock or SystemClock()
    sql = sql or load_feature_sql(spec)
    events = [source.table_path("events")]
    source_section = {
        "source": source.info.get("source", "unknown"),
        "source_version": source.info.get("source_version"),
        "extracted_at": source.info.get("extracted_at"),
        "deidentification": source.info.get("deidentification"),
        "params": source.info.get("params", {}),
        "raw_files": source.file_hashes,
    }
    sql_section = {"name": sql.name, "sha256": sql.sha256} | {
        f"{name}_sha256": sha256_text(select) for name, select in feature_views(spec)
    }
    inputs = _inputs_sha256(spec, {"source": source_section, "feature_sql": sql_section})
    found = _find_built(workspace, inputs)
    if found is not None:
        step("found the snapshot built from the same inputs")
        return found

    step("checking raw data contracts")
    report = ContractReport()
    report.extend(check_raw(source, spec).checks)
    report.raise_if_failed(f"raw source {source.path}")

    step("applying cohort criteria")
    cohort = build_cohort(source, spec)
    if cohort.stays.empty:
        raise ContractViolation(
            "cohort is empty after the inclusion criteria: "
            + "; ".join(f"{s.step}: {s.remaining}" for s in cohort.flow)
        )

    step(f"extracting features ({sql.name})")
    tables = source.relations()
    features = extract_features(
        spec, cohort=cohort.stays, events=events, tables=tables, engine=engine, sql=sql
    )

    step("checking leakage (features at prediction time)")
    leak = check_leakage(
        features,
        lambda: extract_features(
            spec,
            cohort=cohort.stays,
            events=events,
            tables=tables,
            engine=engine,
            sql=sql,
            before_prediction_only=True,
        ),
        spec,
    )
    leak.raise_if_failed("leakage check", leakage=True)
    report.extend(leak.checks)
    feat_report = check_features(features, spec)
    feat_report.raise_if_failed("feature table")
    report.extend(feat_report.checks)

    step("applying the data-sufficiency criterion")
    features = apply_missingness_criterion(cohort, features, spec)
    stays = cohort.stays
    if stays.empty:
        raise ContractViolation("cohort is empty after the data-sufficiency criterion")
    require_both_classes(stays, spec)

    step("writing snapshot")
    return write_snapshot(
        workspace,
        spec,
        stays=stays,
        features=features,
        report=report,
        flow=[s.as_dict() for s in cohort.flow],
        source=source_section,
        sql=sql_section,
        engine=getattr(engine, "name", "duckdb"),
        clock=clock,
        actor=actor,
        inputs_sha256=inputs,
    )


def build_table_snapshot(
    workspace: Workspace,
    spec: TaskSpec,
    path: str | Path,
    *,
    clock: Clock | None = None,
    on_step: StepCallback | None = None,
    actor: str = "pipeline",
) -> Snapshot:
    """Build (or find) the snapshot of a table task over the file at ``path``; return it.

    Raises what :func:`~clinical_mlops.data.table.prepare_table` raises (the column and
    file rows of a mismatch, an unapproved feature, a hard contract failure); nothing is
    written unless every check passes. A ``snapshot_built`` ledger event names ``actor``.
    A table already snapshotted for this spec is found, not built again (``reused``).
    """
    step = on_step or (lambda _name: None)
    file = Path(path)
    inputs = None
    if file.is_file():
        inputs = _inputs_sha256(spec, {"table": {"file": file.name, "sha256": sha256_file(file)}})
        found = _find_built(workspace, inputs)
        if found is not None:
            step("found the snapshot built from the same inputs")
            return found
    table = prepare_table(spec, file, on_step=step)
    step("writing snapshot")
    return write_snapshot(
        workspace,
        spec,
        stays=table.stays,
        features=table.features,
        report=table.report,
        flow=table.flow,
        source=table.source,
        sql=table.sql,
        engine="table",
        clock=clock or SystemClock(),
        actor=actor,
        extra=table.extra,
        inputs_sha256=inputs,
    )


def write_snapshot(
    workspace: Workspace,
    spec: TaskSpec,
    *,
    stays: pd.DataFrame,
    features: pd.DataFrame,
    report: ContractReport,
    flow: list[dict[str, Any]],
    source: dict[str, Any],
    sql: dict[str, str],
    engine: str,
    clock: Clock,
    actor: str,
    extra: dict[str, Any] | None = None,
    inputs_sha256: str | None = None,
) -> Snapshot:
    """Write the snapshot of a finished cohort and feature table; return it (any source).

    ``stays`` holds stay_id, real_year, split, the label, ethnicity and site (absent:
    :data:`~clinical_mlops.data.raw.UNSPECIFIED_SITE`); ``source``
    and ``sql`` are the manifest's source and feature-code sections; ``extra`` adds
    manifest sections (absent from snapshots that do not need them, so their ids
    do not change). The spec goes beside the manifest as ``task_spec.json``.
    ``inputs_sha256`` (the hash of what the build read) goes to ``build.json``, where
    a later build of the same inputs finds it. When the workspace already holds a
    snapshot with this id, that one is returned (``reused``) and no ledger event is
    recorded: the build of that content was recorded when it was first written.
    """
    label = spec.label.name
    cohort_table = pd.DataFrame(
        {
            "stay_id": stays["stay_id"].astype("int64"),
            "real_year": stays["real_year"].astype("int32"),
            "split": stays["split"].astype(str),
            label: stays[label].astype("int8"),
            "ethnicity": stays["ethnicity"].astype("string"),
            "site": (
                stays["site"].astype(str)
                if "site" in stays.columns
                else pd.Series(UNSPECIFIED_SITE, index=stays.index)
            ),
        }
    )
    if BASELINE_COLUMN in stays.columns:
        # Present only when the spec reads its baseline from a column, so other snapshots
        # keep their bytes and ids; never in features.parquet, so never a model input.
        cohort_table[BASELINE_COLUMN] = stays[BASELINE_COLUMN].astype("float64").to_numpy()
    train = cohort_table["split"].eq("train")
    feats_train = features.loc[features["stay_id"].isin(cohort_table.loc[train, "stay_id"])]
    counts = {
        "n_stays": len(cohort_table),
        "n_train": int(train.sum()),
        "n_test": int((~train).sum()),
        "n_positive": int(cohort_table[label].sum()),
        "n_positive_train": int(cohort_table.loc[train, label].sum()),
        "n_positive_test": int(cohort_table.loc[~train, label].sum()),
    }
    prevalence = {
        "overall": _ratio(counts["n_positive"], counts["n_stays"]),
        "train": _ratio(counts["n_positive_train"], counts["n_train"]),
        "test": _ratio(counts["n_positive_test"], counts["n_test"]),
    }
    missingness = {f: round(float(feats_train[f].isna().mean()), 6) for f in spec.feature_names}
    membership = sha256_json(
        [
            [int(s), str(p)]
            for s, p in zip(cohort_table["stay_id"], cohort_table["split"], strict=True)
        ]
    )

    with workspace.staging_dir(workspace.snapshots_dir) as stage:
        write_table(
            pa.Table.from_pandas(cohort_table, preserve_index=False), stage / "cohort.parquet"
        )
        write_table(
            pa.Table.from_pandas(features, preserve_index=False), stage / "features.parquet"
        )
        (stage / "contracts.json").write_bytes(
            canonical_json({"checks": [c.as_dict() for c in report.checks]})
        )
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "task": {"name": spec.name, "version": spec.version, "spec_sha256": spec.spec_hash()},
            "source": source,
            "cohort_criteria_sha256": spec.criteria_hash(),
            "feature_sql": sql,
            "cohort_flow": flow,
            "counts": counts,
            "prevalence": prevalence,
            "missingness_train": missingness,
            "split_membership_sha256": membership,
            "contracts": report.summary(),
            "files": {name: sha256_file(stage / name) for name in _FILES},
        } | (extra or {})
        body = canonical_json(manifest)
        (stage / SPEC_FILE).write_bytes(canonical_json(spec.model_dump(mode="json")))
        snapshot_id = sha256_bytes(body)
        (stage / "manifest.json").write_bytes(body)
        (stage / "build.json").write_text(
            json.dumps(
                {
                    "built_at": utc_iso(clock.now()),
                    "engine": engine,
                    "clinical_mlops_version": __version__,
                }
                | ({"inputs_sha256": inputs_sha256} if inputs_sha256 else {}),
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        existed = (workspace.snapshots_dir / snapshot_id).exists()
        workspace.publish(stage, workspace.snapshots_dir / snapshot_id)
    snapshot = open_snapshot(workspace, snapshot_id)
    if existed:
        return replace(snapshot, reused=True)
    ledger.record(
        workspace,
        type="snapshot_built",
        actor=actor,
        clock=clock,
        payload={
            "snapshot_id": snapshot_id,
            "task": spec.name,
            "source": source["source"],
            "n_stays": counts["n_stays"],
            "feature_sql_sha256": sql["sha256"],
            "cohort_criteria_sha256": spec.criteria_hash(),
        }
        | (
            {"event_features_sha256": sql["event_features_sha256"]}
            if "event_features_sha256" in sql
            else {}
        ),
    )
    return snapshot


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def _inputs_sha256(spec: TaskSpec, read: dict[str, Any]) -> str:
    """Return the hash of everything a build reads: the spec, the source, the code version."""
    return sha256_json(
        {"task_spec_sha256": spec.spec_hash(), "clinical_mlops_version": __version__} | read
    )


def _find_built(workspace: Workspace, inputs_sha256: str) -> Snapshot | None:
    """Return the snapshot already built from these inputs (verified), or None."""
    for snapshot_id in list_snapshots(workspace):
        try:
            build = json.loads(
                (workspace.snapshots_dir / snapshot_id / "build.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            continue  # a snapshot without build facts is still valid; it is only not matched
        if isinstance(build, dict) and build.get("inputs_sha256") == inputs_sha256:
            return replace(open_snapshot(workspace, snapshot_id), reused=True)
    return None


def list_snapshots(workspace: Workspace) -> list[str]:
    """Return the ids of the snapshots in the workspace, sorted."""
    return sorted(
        p.name
        for p in workspace.snapshots_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    )


def open_snapshot(workspace: Workspace, snapshot_id: str) -> Snapshot:
    """Return the snapshot whose id is (or starts with, 8+ characters) ``snapshot_id``, verified.

    Raises :class:`SnapshotNotFound` when there is no such snapshot and
    :class:`WorkspaceError` when its files do not match its manifest.
    """
    ids = list_snapshots(workspace)
    matches = [
        i for i in ids if i == snapshot_id or (len(snapshot_id) >= 8 and i.startswith(snapshot_id))
    ]
    if len(matches) != 1:
        known = ", ".join(i[:12] for i in ids) or "none"
        why = "is ambiguous" if matches else "does not exist"
        raise SnapshotNotFound(
            f"snapshot {snapshot_id!r} {why} in workspace {workspace.root} (snapshots: {known}); "
            "build one with `clinical-mlops data build`"
        )
    path = workspace.snapshots_dir / matches[0]
    body = (path / "manifest.json").read_bytes()
    if sha256_bytes(body) != matches[0]:
        raise WorkspaceError(
            f"snapshot {matches[0][:12]}: manifest.json does not hash to the snapshot id"
        )
    manifest = json.loads(body)
    for name, digest in manifest["files"].items():
        if sha256_file(path / name) != digest:
            raise WorkspaceError(
                f"snapshot {matches[0][:12]}: {name} does not match its manifest hash"
            )
    return Snapshot(id=matches[0], path=path, manifest=manifest)


def locked_test_stays(snapshot: Snapshot) -> pd.DataFrame:
    """Return the locked test stays of ``snapshot`` (features, label, year, ethnicity, site)."""
    frame = snapshot.frame()
    return frame.loc[frame["split"] == "test"].reset_index(drop=True)
