"""A release's predictions and outcomes in the layout Epic's open-source seismometer reads.

seismometer (``pip install seismometer``; github.com/epic-open-source/seismometer) is
a notebook toolkit for the local validation of a deployed model: performance, fairness
and cohort analyses over a *predictions* table and an *events* table, found through
``config.yml`` and ``usage_config.yml``. :func:`seismometer_tables` builds both tables
from the audit ledger's records of one release; :func:`write_seismometer_export`
writes them with the configuration files::

    config.yml         other_info: where the tables and the other files are
    usage_config.yml   data_usage: entity/context ids, score, prediction time, cohorts,
                       the events and which one is the target
    dictionary.yml     every column of both tables: dtype, display name, definition
    metadata.json      the model's name and its operating threshold
    data/predictions.parquet   one row per prediction
    data/events.parquet        one row per outcome and per clinician override

Privacy: the patient column is the pseudonym the audit ledger records (never an MRN or
other EHR identifier); the encounter column is the encounter pseudonym the request's
encounter was recorded under, or ``seq-<audit seq>`` when the request named none (the
prediction is then its own context). Times are UTC without an offset, as seismometer
casts them to ``datetime64[ns]``. Outcomes are those linked to a prediction under
the monitoring rules (:func:`~clinical_mlops.monitoring.records.link_outcomes`): the
first valid outcome per prediction, at its arrival time in the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from clinical_mlops.monitoring.records import InferenceRecords, OutcomeRecords, OverrideRecords
from clinical_mlops.monitoring.records import link_outcomes as _link

if TYPE_CHECKING:
    from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "CONTEXT",
    "ENTITY",
    "EVENT_OVERRIDE",
    "PREDICT_TIME",
    "SCORE",
    "SeismometerTables",
    "seismometer_tables",
    "write_seismometer_export",
]

ENTITY = "PatientId"
CONTEXT = "EncounterId"
PREDICT_TIME = "ScoringTime"
SCORE = "RiskScore"
EVENT_OVERRIDE = "ClinicianOverride"
_EVENT_COLUMNS = (ENTITY, CONTEXT, "Type", "Time", "Value")


@dataclass(frozen=True)
class SeismometerTables:
    """The two tables seismometer reads, and what the configuration says of their columns."""

    predictions: pd.DataFrame
    events: pd.DataFrame
    features: tuple[str, ...]
    cohorts: tuple[str, ...]
    target: str


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True).tz_localize(None))


def seismometer_tables(
    spec: TaskSpec,
    inferences: InferenceRecords,
    outcomes: OutcomeRecords,
    overrides: OverrideRecords,
    *,
    encounters: Mapping[int, str | None],
) -> SeismometerTables:
    """Return the predictions and events tables of ``inferences`` (one release, one period).

    ``encounters`` maps a prediction's audit seq to its encounter pseudonym (None when
    the request named none). Every prediction is one row; outcomes and overrides of
    predictions outside ``inferences`` are left out.
    """
    from clinical_mlops.evaluation.fairness import group_masks

    n = len(inferences)
    seqs = inferences.seq
    subjects = list(inferences.subjects) if inferences.subjects else [None] * n
    context = [encounters.get(int(s)) or f"seq-{int(s)}" for s in seqs]
    pred = pd.DataFrame(
        {
            ENTITY: pd.Series(subjects, dtype="string"),
            CONTEXT: pd.Series(context, dtype="string"),
            PREDICT_TIME: _utc(inferences.time),
            SCORE: inferences.probability.astype(np.float64),
            "AuditSeq": seqs.astype(np.int64),
            "ShownToClinician": inferences.shown.astype(bool),
            "Escalated": inferences.escalated.astype(bool)
            if len(inferences.escalated) == n
            else np.zeros(n, dtype=bool),
            "Site": pd.Series(
                list(inferences.sites) if inferences.sites else [None] * n, dtype="string"
            ).fillna("unspecified"),
        }
    )
    inputs = inferences.inputs.reset_index(drop=True)
    features = tuple(f.name for f in spec.approved_features)
    for f in spec.approved_features:
        values = inputs[f.name] if f.name in inputs.columns else pd.Series([None] * n)
        if f.kind == "categorical":
            pred[f.name] = values.astype("string")
        else:
            pred[f.name] = pd.to_numeric(values, errors="coerce").astype(np.float64)
    cohorts = ["Site"]
    frame = pd.DataFrame({f: pred[f] for f in features})
    for attr, masks in group_masks(spec, frame).items():
        column = attr if attr not in pred.columns else f"{attr}_group"
        labels = pd.Series([None] * n, dtype="string")
        for label, mask in masks.items():
            labels[np.asarray(mask, dtype=bool)] = label
        pred[column] = labels.fillna("unknown")
        cohorts.append(column)

    target = spec.label.name
    linked = _link(inferences, outcomes)
    rows = linked.index
    outcome_events = pd.DataFrame(
        {
            ENTITY: pred[ENTITY].iloc[rows].to_numpy(),
            CONTEXT: pred[CONTEXT].iloc[rows].to_numpy(),
            "Type": target,
            "Time": _utc(linked.time).to_numpy(),
            "Value": linked.y.astype(np.float64),
        }
    )
    position = {int(s): i for i, s in enumerate(seqs)}
    kept = [
        (position[int(s)], t)
        for s, t, a in zip(overrides.seq, overrides.time, overrides.action, strict=True)
        if a == "override" and int(s) in position
    ]
    ov_rows = np.asarray([r for r, _ in kept], dtype=np.int64)
    override_events = pd.DataFrame(
        {
            ENTITY: pred[ENTITY].iloc[ov_rows].to_numpy(),
            CONTEXT: pred[CONTEXT].iloc[ov_rows].to_numpy(),
            "Type": EVENT_OVERRIDE,
            "Time": _utc(np.asarray([t for _, t in kept], dtype=float)).to_numpy(),
            "Value": np.ones(len(kept), dtype=np.float64),
        }
    )
    events = pd.concat([outcome_events, override_events], ignore_index=True)
    events = events.astype(
        {ENTITY: "string", CONTEXT: "string", "Type": "string", "Value": np.float64}
    )
    events["Time"] = pd.to_datetime(events["Time"])
    events = events.sort_values("Time", kind="stable").reset_index(drop=True)
    return SeismometerTables(
        predictions=pred,
        events=events.loc[:, list(_EVENT_COLUMNS)],
        features=features,
        cohorts=tuple(cohorts),
        target=target,
    )


def _dtype(series: pd.Series) -> str:
    """Return the pandas dtype seismometer casts the column to (``DataFrame.astype`` names)."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime64[ns]"
    if pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    return "string"


def write_seismometer_export(
    tables: SeismometerTables,
    out: Path,
    *,
    spec: TaskSpec,
    release: str,
    threshold: float,
) -> dict[str, Path]:
    """Return the paths written: both tables and seismometer's configuration files in ``out``.

    Files already in ``out`` with these names are replaced; nothing else there is touched.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    words = spec.presentation
    outcome = words.outcome if words is not None else spec.label.description
    target_name = " ".join(str(outcome).split())
    definitions = {
        f.name: f"{f.label} ({f.shown_unit})" if f.shown_unit else f.label
        for f in spec.approved_features
    }
    described = {
        ENTITY: ("Patient", "The patient's pseudonym in the audit ledger (never an MRN)."),
        CONTEXT: (
            "Encounter",
            "The encounter's pseudonym, or seq-<audit seq> when the request named no encounter.",
        ),
        PREDICT_TIME: ("Prediction Time", "When the prediction was made (UTC)."),
        SCORE: ("Risk", f"{spec.title}: the calibrated probability the release served."),
        "AuditSeq": ("Audit record", "The prediction's audit-ledger seq (its prediction id)."),
        "ShownToClinician": ("Shown", "Whether a clinician saw the prediction."),
        "Escalated": ("Escalated", "Whether the prediction was routed to clinician review."),
        "Site": ("Site", "The site the prediction was made for."),
    }
    pred_defs = []
    for column in tables.predictions.columns:
        name, text = described.get(column, (column, definitions.get(column, "Subgroup label.")))
        pred_defs.append(
            {
                "name": column,
                "dtype": _dtype(tables.predictions[column]),
                "display_name": name,
                "definition": text,
            }
        )
    event_defs = [
        {
            "name": tables.target,
            "dtype": "float64",
            "display_name": target_name,
            "definition": " ".join(spec.label.description.split()),
        },
        {
            "name": EVENT_OVERRIDE,
            "dtype": "float64",
            "display_name": "Clinician override",
            "definition": "A clinician overrode the recommendation (1).",
        },
    ]
    usage = {
        "data_usage": {
            "entity_id": ENTITY,
            "context_id": CONTEXT,
            "primary_output": SCORE,
            "primary_target": target_name,
            "predict_time": PREDICT_TIME,
            # seismometer loads only the columns named somewhere in usage: the model inputs,
            # and the audit seq and workflow flags so each row can be traced back.
            "features": [*tables.features, "AuditSeq", "ShownToClinician", "Escalated"],
            "cohorts": [
                {"source": c, "display_name": c.replace("_", " ").capitalize()}
                for c in tables.cohorts
            ],
            "event_table": {"type": "Type", "time": "Time", "value": "Value"},
            "events": [
                {
                    "source": tables.target,
                    "display_name": target_name,
                    "usage": "target",
                    "aggregation_method": "max",
                },
                {
                    "source": EVENT_OVERRIDE,
                    "display_name": "Clinician override",
                    "usage": "intervention",
                    "aggregation_method": "max",
                },
            ],
            "censor_min_count": 10,
        }
    }
    config = {
        "other_info": {
            "template": "binary",
            "usage_config": "usage_config.yml",
            "event_definition": "dictionary.yml",
            "prediction_definition": "dictionary.yml",
            "info_dir": "outputs",
            "data_dir": "data",
            "prediction_path": "predictions.parquet",
            "event_path": "events.parquet",
            "metadata_path": "metadata.json",
        }
    }
    paths = {
        "predictions": data / "predictions.parquet",
        "events": data / "events.parquet",
        "config": out / "config.yml",
        "usage_config": out / "usage_config.yml",
        "dictionary": out / "dictionary.yml",
        "metadata": data / "metadata.json",
    }
    tables.predictions.to_parquet(paths["predictions"], index=False)
    tables.events.to_parquet(paths["events"], index=False)

    def dump(obj: Any) -> str:
        return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=100)

    paths["config"].write_text(dump(config), encoding="utf-8")
    paths["usage_config"].write_text(dump(usage), encoding="utf-8")
    paths["dictionary"].write_text(
        dump({"predictions": pred_defs, "events": event_defs}), encoding="utf-8"
    )
    paths["metadata"].write_text(
        json.dumps({"modelname": f"{spec.title} ({release})", "thresholds": [threshold]}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return paths
