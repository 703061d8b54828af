"""Content-addressed dataset snapshots: the versioned input of every model.

A snapshot is a folder ``artifacts/snapshots/<id>/`` holding

* ``cohort.parquet``   — stay_id, real_year, split, label, ethnicity (for subgroup audits)
* ``features.parquet`` — stay_id and exactly the spec's approved features
* ``contracts.json``   — every data-contract check that ran, with counts and examples
* ``manifest.json``    — the canonical manifest; ``id = SHA-256(manifest.json)``

The manifest records the source (name, version, extraction time,
de-identification method, raw file hashes), the cohort-criteria hash, the
feature-SQL hash, the cohort flow, counts, prevalence, training-set
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from clinical_mlops import __version__, ledger
from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.data.cohort import apply_missingness_criterion, build_cohort
from clinical_mlops.data.contracts import ContractReport, check_features, check_leakage, check_raw
from clinical_mlops.data.raw import RawSource, write_table
from clinical_mlops.errors import ContractViolation, SnapshotNotFound, WorkspaceError
from clinical_mlops.features.engine import (
    FeatureEngine,
    FeatureSQL,
    extract_features,
    load_feature_sql,
)
from clinical_mlops.hashing import canonical_json, sha256_bytes, sha256_file, sha256_json
from clinical_mlops.tasks.spec import TaskSpec, load_sealed_task
from clinical_mlops.workspace import Workspace

__all__ = [
    "MANIFEST_SCHEMA",
    "SPEC_FILE",
    "Snapshot",
    "build_snapshot",
    "list_snapshots",
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
    """
    step = on_step or (lambda _name: None)
    clock = clock or SystemClock()
    sql = sql or load_feature_sql(spec)
    events = [source.table_path("events")]

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
    _require_both_classes(stays, spec)

    step("writing snapshot")
    return write_snapshot(
        workspace,
        spec,
        stays=stays,
        features=features,
        report=report,
        flow=[s.as_dict() for s in cohort.flow],
        source={
            "source": source.info.get("source", "unknown"),
            "source_version": source.info.get("source_version"),
            "extracted_at": source.info.get("extracted_at"),
            "deidentification": source.info.get("deidentification"),
            "params": source.info.get("params", {}),
            "raw_files": source.file_hashes,
        },
        sql={"name": sql.name, "sha256": sql.sha256},
        engine=getattr(engine, "name", "duckdb"),
        clock=clock,
        actor=actor,
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
) -> Snapshot:
    """Write the snapshot of a finished cohort and feature table; return it (any source).

    ``stays`` holds stay_id, real_year, split, the label and ethnicity; ``source``
    and ``sql`` are the manifest's source and feature-code sections; ``extra`` adds
    manifest sections (absent from snapshots that do not need them, so their ids
    do not change). The spec goes beside the manifest as ``task_spec.json``.
    """
    label = spec.label.name
    cohort_table = pd.DataFrame(
        {
            "stay_id": stays["stay_id"].astype("int64"),
            "real_year": stays["real_year"].astype("int32"),
            "split": stays["split"].astype(str),
            label: stays[label].astype("int8"),
            "ethnicity": stays["ethnicity"].astype("string"),
        }
    )
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
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        workspace.publish(stage, workspace.snapshots_dir / snapshot_id)
    snapshot = open_snapshot(workspace, snapshot_id)
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
        },
    )
    return snapshot


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def _require_both_classes(stays: pd.DataFrame, spec: TaskSpec) -> None:
    label = spec.label.name
    for part in ("train", "test"):
        y = stays.loc[stays["split"] == part, label]
        if y.empty:
            raise ContractViolation(
                f"the {part} split is empty: no cohort stay falls in split.{part}_years "
                f"{getattr(spec.split, part + '_years')}"
            )
        if y.nunique() < 2:
            raise ContractViolation(
                f"the {part} split has only label {int(y.iloc[0])} ({len(y)} stays): a model cannot be "
                "trained or evaluated on one class"
            )


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
