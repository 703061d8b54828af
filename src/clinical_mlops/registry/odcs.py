"""Data contracts as Open Data Contract Standard (ODCS) v3 documents.

:func:`odcs_contract` states a task's input contract (SPEC R-L7) — the snapshot's
``features`` and ``cohort`` tables — in the form data-platform tools read
(``datacontract-cli``, catalogues, Bitol tooling): every column with its logical and
physical type, whether it may be null, its classification, and the quality rules the
build enforces (valid ranges, declared categories, unique stay ids) or monitoring
alerts on (missingness above the release's reference). For a release it adds the
release's status, its team (author and the people who approved it, in their roles)
and, when the snapshot is in the workspace, where its files are.

The document is built from the task spec and the signed bundle only; no stay-level
value enters it. Classification: ``restricted`` for the unit identifier and the
protected attributes (personal data that identifies or singles out a patient),
``confidential`` for every other clinical value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clinical_mlops.data.contracts import MAX_OUT_OF_RANGE_FRACTION

if TYPE_CHECKING:
    from clinical_mlops.registry.bundle import Bundle
    from clinical_mlops.registry.registry import Release
    from clinical_mlops.tasks.spec import Feature, TaskSpec

__all__ = ["ODCS_API_VERSION", "odcs_contract", "odcs_yaml"]

#: the newest ODCS version whose JSON Schema the export is checked against
ODCS_API_VERSION = "v3.1.0"

# Registry status -> ODCS status (its documented values: proposed, draft, active,
# deprecated, retired). A suspended release still serves its fallback: deprecated.
_STATUS = {
    "approved": "active",
    "approved_limited": "active",
    "suspended": "deprecated",
    "retired": "retired",
}
_PHYSICAL = {"numeric": "double", "flag": "int8", "categorical": "string"}
_LOGICAL = {"numeric": "number", "flag": "integer", "categorical": "string"}


def _stable(text: str) -> str:
    """Return ``text`` as an ODCS stable id (letters, digits, '-' and '_')."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _words(text: str) -> str:
    return " ".join(text.split())


def _feature_property(
    f: Feature, *, spec: TaskSpec, protected: set[str], missing: float | None
) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "id": _stable(f"features-{f.name}"),
        "name": f.name,
        "businessName": f.label,
        "logicalType": _LOGICAL[f.kind],
        "physicalType": _PHYSICAL[f.kind],
        # Event features are missing when nothing was charted in the window; a static
        # feature is required by the raw contract.
        "required": f.source == "static",
        "unique": False,
        "description": _words(f.justification)
        + (f" Caveat: {_words(f.caveat)}" if f.caveat else ""),
        "classification": "restricted" if f.name in protected else "confidential",
        "tags": ["phi", "protected-attribute"] if f.name in protected else ["phi"],
        "criticalDataElement": True,
    }
    quality: list[dict[str, Any]] = []
    if f.valid_range is not None:
        low, high = (float(v) for v in f.valid_range)
        if f.kind == "numeric":
            prop["logicalTypeOptions"] = {"minimum": low, "maximum": high}
        quality.append(
            {
                "id": _stable(f"features-{f.name}-range"),
                "name": f"{f.name} inside its valid range",
                "description": (
                    f"Every present value lies in [{low:g}, {high:g}]"
                    + (f" {f.shown_unit}" if f.shown_unit else "")
                    + "; a value outside stops the snapshot build. In the raw events, more than "
                    f"{MAX_OUT_OF_RANGE_FRACTION:.0%} out-of-range values of the variable stop "
                    "it too (a unit or mapping fault); fewer are device artefacts and ignored."
                ),
                "type": "sql",
                # Text for the reader's engine, never run here; names match ^[a-z][a-z0-9_]*$.
                "query": (
                    f"SELECT COUNT(*) FROM features WHERE {f.name} IS NOT NULL AND "  # noqa: S608
                    f"({f.name} < {low:g} OR {f.name} > {high:g})"
                ),
                "mustBe": 0,
                "dimension": "conformity",
                "severity": "error",
                "businessImpact": "operational",
            }
        )
    if f.categories:
        quality.append(
            {
                "id": _stable(f"features-{f.name}-categories"),
                "name": f"{f.name} among its declared categories",
                "description": "A value outside the declared categories stops the snapshot build.",
                "metric": "invalidValues",
                "arguments": {"validValues": list(f.categories)},
                "mustBe": 0,
                "unit": "rows",
                "dimension": "conformity",
                "severity": "error",
                "businessImpact": "operational",
            }
        )
    if missing is not None:
        limit = min(1.0, missing + spec.monitoring.missingness_increase)
        quality.append(
            {
                "id": _stable(f"features-{f.name}-missing"),
                "name": f"{f.name} missingness",
                "description": (
                    f"{missing:.1%} missing on the release's reference stays; monitoring "
                    f"alerts when a window's missingness rises by more than "
                    f"{spec.monitoring.missingness_increase:.0%} (to over {limit:.1%})."
                ),
                "metric": "nullValues",
                "mustBeLessOrEqualTo": round(limit * 100, 2),
                "unit": "percent",
                "dimension": "completeness",
                "severity": "warning",
                "businessImpact": "operational",
            }
        )
    if quality:
        prop["quality"] = quality
    return prop


def _id_property(obj: str, spec: TaskSpec) -> dict[str, Any]:
    unit = "hospital admission" if spec.anchor == "discharge" else "ICU stay"
    return {
        "id": _stable(f"{obj}-stay_id"),
        "name": "stay_id",
        "businessName": f"{unit} identifier",
        "logicalType": "integer",
        "physicalType": "int64",
        "required": True,
        "unique": True,
        "primaryKey": True,
        "primaryKeyPosition": 1,
        "description": (
            f"The source's identifier of the {unit} (the unit of analysis). Never sent to "
            "the scoring service or recorded in the audit ledger, which hold pseudonyms."
        ),
        "classification": "restricted",
        "tags": ["phi", "identifier"],
        "criticalDataElement": True,
        "quality": [
            {
                "id": _stable(f"{obj}-stay_id-unique"),
                "name": "one row per unit",
                "metric": "duplicateValues",
                "mustBe": 0,
                "unit": "rows",
                "dimension": "uniqueness",
                "severity": "error",
                "businessImpact": "operational",
            }
        ],
    }


def _cohort_object(spec: TaskSpec) -> dict[str, Any]:
    def column(name: str, logical: str, physical: str, text: str, **more: Any) -> dict[str, Any]:
        return {
            "id": _stable(f"cohort-{name}"),
            "name": name,
            "logicalType": logical,
            "physicalType": physical,
            "required": True,
            "unique": False,
            "description": text,
            "classification": "confidential",
            "tags": ["phi"],
        } | more

    label = spec.label
    return {
        "id": "cohort",
        "name": "cohort",
        "physicalName": "cohort.parquet",
        "physicalType": "file",
        "logicalType": "object",
        "businessName": "Cohort",
        "description": (
            "One row per unit of analysis that met the cohort criteria: its label, split "
            "and the strata of subgroup audits (never model inputs)."
        ),
        "dataGranularityDescription": "one row per unit of analysis",
        "properties": [
            _id_property("cohort", spec),
            column("real_year", "integer", "int32", "Calendar year of the anchor event."),
            column(
                "split",
                "string",
                "string",
                "train or test (the split is declared in the task spec).",
                quality=[
                    {
                        "id": "cohort-split-values",
                        "metric": "invalidValues",
                        "arguments": {"validValues": ["train", "test"]},
                        "mustBe": 0,
                        "unit": "rows",
                        "dimension": "conformity",
                        "severity": "error",
                    }
                ],
            ),
            column(
                label.name,
                "integer",
                "int8",
                f"The label: {_words(label.description)}",
                quality=[
                    {
                        "id": _stable(f"cohort-{label.name}-values"),
                        "metric": "invalidValues",
                        "arguments": {"validValues": [0, 1]},
                        "mustBe": 0,
                        "unit": "rows",
                        "dimension": "conformity",
                        "severity": "error",
                    }
                ],
            ),
            column(
                "ethnicity",
                "string",
                "string",
                "Recorded ethnicity, for subgroup audits only; null where not recorded.",
                required=False,
                classification="restricted",
                tags=["phi", "protected-attribute"],
            ),
            column(
                "site",
                "string",
                "string",
                "The hospital the unit belongs to: an evaluation stratum, never a model input.",
            ),
        ],
    }


def _features_object(spec: TaskSpec, missingness: Mapping[str, float]) -> dict[str, Any]:
    protected = {a.column for a in spec.protected_attributes}
    cap = spec.cohort.max_missing_feature_fraction
    return {
        "id": "features",
        "name": "features",
        "physicalName": "features.parquet",
        "physicalType": "file",
        "logicalType": "object",
        "businessName": "Model inputs",
        "description": (
            f"The approved model inputs of {spec.name}, one row per unit of analysis, as "
            f"they stood at the prediction time (hour {spec.prediction_time_hours:g}); "
            "nothing charted after it may reach a feature (the leakage check)."
        ),
        "dataGranularityDescription": "one row per unit of analysis",
        "properties": [_id_property("features", spec)]
        + [
            _feature_property(f, spec=spec, protected=protected, missing=missingness.get(f.name))
            for f in spec.approved_features
        ],
        "quality": [
            {
                "id": "features-missing-per-unit",
                "name": "missing inputs per unit",
                "type": "text",
                "description": (
                    f"A unit missing more than {cap:.0%} of the {len(spec.approved_features)} "
                    "features is excluded from the cohort before training."
                ),
                "dimension": "completeness",
            },
            {
                "id": "features-leakage",
                "name": "no leakage",
                "type": "text",
                "description": (
                    "Features recomputed from the events as they stood at each unit's "
                    "prediction time must equal the features extracted; any difference stops "
                    "the build."
                ),
                "dimension": "timeliness",
            },
        ],
    }


def odcs_contract(
    spec: TaskSpec,
    *,
    release: Release | None = None,
    bundle: Bundle | None = None,
    team: Sequence[Mapping[str, str]] = (),
    snapshot_dir: Path | None = None,
) -> dict[str, Any]:
    """Return the ODCS v3 data contract of ``spec``'s input data (of ``release`` when given).

    ``team`` lists ``{"username", "role"}`` of the people responsible (the release's
    author and approvers); ``snapshot_dir`` is the release's snapshot folder, stated as
    a ``local`` server when it exists. Per-feature missingness limits come from the
    release's reference profile, so a contract of a task alone has none.
    """
    missingness: dict[str, float] = {}
    if bundle is not None and bundle.has("reference_profile.json"):
        profile = bundle.profile()
        missingness = {n: float(p.missing_fraction) for n, p in profile.features.items()}
    use = spec.intended_use
    limitations = [f"Not intended for: {_words(u)}." for u in spec.non_intended_uses]
    limitations += [f"{f.label}: {_words(f.caveat)}" for f in spec.approved_features if f.caveat]
    doc: dict[str, Any] = {
        "apiVersion": ODCS_API_VERSION,
        "kind": "DataContract",
        "id": (
            f"urn:clinical-mlops:data-contract:{spec.name}:{release.version}"
            if release is not None
            else f"urn:clinical-mlops:data-contract:{spec.name}:v{spec.version}"
        ),
        "name": f"{spec.name} model inputs",
        "version": release.version if release is not None else f"{spec.version}.0.0",
        "status": _STATUS.get(release.status, "proposed") if release is not None else "draft",
        "domain": "clinical",
        "tags": [spec.name, spec.cohort.setting, "phi"],
        "description": {
            "purpose": _words(f"{spec.title}. {spec.description}"),
            "usage": _words(
                f"{use.statement} Users: {', '.join(use.users)}. Setting: {use.setting}. "
                f"Population: {use.population}."
            ),
            "limitations": " ".join(limitations),
        },
        "schema": [_features_object(spec, missingness), _cohort_object(spec)],
    }
    members = []
    seen: set[tuple[str, str]] = set()
    for m in team:
        key = (m["username"], m["role"])
        if key not in seen:
            seen.add(key)
            members.append({"username": m["username"], "role": m["role"]})
    if members:
        doc["team"] = {
            "name": f"{spec.name} release team",
            "description": "The release's author and the people who decided on it, in their roles.",
            "members": members,
        }
    if snapshot_dir is not None and snapshot_dir.is_dir():
        doc["servers"] = [
            {
                "id": "snapshot",
                "server": "snapshot",
                "type": "local",
                "description": "The content-addressed snapshot the release was trained on.",
                "path": str(snapshot_dir / "*.parquet"),
                "format": "parquet",
            }
        ]
    custom = [{"property": "taskSpecSha256", "value": spec.spec_hash()}]
    if release is not None:
        custom += [
            {"property": "bundleSha256", "value": release.bundle_sha256},
            {"property": "modelVersion", "value": release.model_version},
        ]
    doc["customProperties"] = custom
    return doc


def odcs_yaml(doc: Mapping[str, Any]) -> str:
    """Return ``doc`` as the YAML text an ``.odcs.yaml`` file holds (keys in document order)."""
    return yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100)
