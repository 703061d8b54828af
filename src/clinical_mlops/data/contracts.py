"""Data contracts and quality gates that run before any training (SPEC R-L7).

Two stages, each producing :class:`Check` results:

* :func:`check_raw` on the raw source — duplicate ids, dangling references,
  nulls in required columns, timestamp order, units against the task spec,
  physiological ranges, non-finite values.
* :func:`check_features` on the extracted feature table — only declared
  columns, values inside valid ranges and declared categories, and
  **leakage**: features recomputed from the events as they stood at each stay's
  prediction time must equal the features actually extracted. Any difference
  means something charted after the prediction time reached a feature.

A *hard* check that fails stops the build with :class:`ContractViolation` (or
:class:`LeakageDetected`) whose message names table, column and example rows; a
*soft* check is reported (count and examples) and recorded in the snapshot.

Before either, :func:`conform_features` holds a feature table to R-P1 whatever produced
it (an engine running feature SQL, or a prepared table): exactly the declared features,
every one approved, in canonical order and types; anything else raises
:class:`UndeclaredFeature`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.data.raw import NULLABLE, RawSource
from clinical_mlops.errors import ContractViolation, LeakageDetected, UndeclaredFeature
from clinical_mlops.tasks.spec import TaskSpec

__all__ = [
    "Check",
    "ContractReport",
    "check_features",
    "check_leakage",
    "check_raw",
    "conform_features",
    "unapproved_features",
]

# Above this share of out-of-range values a variable is not "a few artefacts" but a
# systematic problem (a unit error, a mis-mapped item): the build stops.
MAX_OUT_OF_RANGE_FRACTION = 0.01
_EXAMPLES = 5


@dataclass(frozen=True)
class Check:
    """The outcome of one contract check."""

    name: str
    severity: Literal["hard", "soft"]
    passed: bool
    table: str
    column: str | None = None
    count: int = 0
    examples: tuple[Any, ...] = ()
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "passed": self.passed,
            "table": self.table,
            "column": self.column,
            "count": self.count,
            "examples": [_plain(x) for x in self.examples],
            "message": self.message,
        }

    def describe(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        ex = f" (e.g. {', '.join(str(_plain(x)) for x in self.examples)})" if self.examples else ""
        return f"[{self.severity}] {self.name} — {where}: {self.message}{ex}"


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (pd.Timestamp, datetime)):
        return x.isoformat()
    if isinstance(x, tuple):
        return [_plain(v) for v in x]
    return x


@dataclass
class ContractReport:
    """All checks of a build, in the order they ran."""

    checks: list[Check] = field(default_factory=list)

    def extend(self, checks: Iterable[Check]) -> None:
        self.checks.extend(checks)

    @property
    def hard_failures(self) -> list[Check]:
        return [c for c in self.checks if c.severity == "hard" and not c.passed]

    @property
    def soft_failures(self) -> list[Check]:
        return [c for c in self.checks if c.severity == "soft" and not c.passed]

    def raise_if_failed(self, stage: str, *, leakage: bool = False) -> None:
        """Raise ``ContractViolation`` listing every failed hard check of this report."""
        bad = self.hard_failures
        if not bad:
            return
        lines = [f"{stage}: {len(bad)} hard data-contract violation(s); nothing was written:"]
        lines += [f"  - {c.describe()}" for c in bad]
        error = LeakageDetected if leakage else ContractViolation
        raise error("\n".join(lines), report=self)

    def summary(self) -> dict[str, Any]:
        return {
            "checks": len(self.checks),
            "hard_failed": len(self.hard_failures),
            "soft_failed": len(self.soft_failures),
            "soft": [c.as_dict() for c in self.soft_failures],
        }


def _ok(
    name: str, table: str, column: str | None = None, severity: Literal["hard", "soft"] = "hard"
) -> Check:
    return Check(name, severity, True, table, column, 0, (), "ok")


# ---------------------------------------------------------------------------------------
# Raw source
# ---------------------------------------------------------------------------------------


def check_raw(source: RawSource, spec: TaskSpec) -> ContractReport:
    """Run every raw-source check and return the report (raises nothing)."""
    report = ContractReport()
    tables = {n: source.read(n).to_pandas() for n in ("patients", "admissions", "icustays")}
    report.extend(_check_required_nulls(tables))
    report.extend(_check_duplicates(tables))
    report.extend(_check_references(tables))
    report.extend(_check_timestamp_order(tables))
    report.extend(_check_categories(tables, spec))
    report.extend(_check_events(source.table_path("events"), spec, tables))
    return report


def _check_required_nulls(tables: dict[str, pd.DataFrame]) -> list[Check]:
    out = []
    for name, df in tables.items():
        for col in df.columns:
            if col in NULLABLE.get(name, set()):
                continue
            nulls = df[col].isna().to_numpy()
            if nulls.any():
                rows = np.flatnonzero(nulls)[:_EXAMPLES].tolist()
                out.append(
                    Check(
                        "required value present",
                        "hard",
                        False,
                        name,
                        col,
                        int(nulls.sum()),
                        tuple(f"row {r}" for r in rows),
                        "null in a required column",
                    )
                )
            else:
                out.append(_ok("required value present", name, col))
    return out


def _check_duplicates(tables: dict[str, pd.DataFrame]) -> list[Check]:
    out = []
    for name, key in (
        ("patients", "subject_id"),
        ("admissions", "hadm_id"),
        ("icustays", "stay_id"),
    ):
        ids = tables[name][key]
        dup = ids[ids.duplicated(keep=False)]
        if len(dup):
            out.append(
                Check(
                    "unique identifier",
                    "hard",
                    False,
                    name,
                    key,
                    int(dup.nunique()),
                    tuple(sorted(dup.unique().tolist())[:_EXAMPLES]),
                    f"duplicate {key} values ({len(dup)} rows share {dup.nunique()} ids)",
                )
            )
        else:
            out.append(_ok("unique identifier", name, key))
    return out


def _check_references(tables: dict[str, pd.DataFrame]) -> list[Check]:
    out = []
    icu, adm = tables["icustays"], tables["admissions"]
    for child, ccol, parent, pcol, df in (
        ("icustays", "hadm_id", "admissions", "hadm_id", icu),
        ("icustays", "subject_id", "patients", "subject_id", icu),
        ("admissions", "subject_id", "patients", "subject_id", adm),
    ):
        known = set(tables[parent][pcol].tolist())
        missing = ~df[ccol].isin(known)
        if missing.any():
            out.append(
                Check(
                    "reference resolves",
                    "hard",
                    False,
                    child,
                    ccol,
                    int(missing.sum()),
                    tuple(df.loc[missing, ccol].head(_EXAMPLES).tolist()),
                    f"values with no matching {parent}.{pcol}",
                )
            )
        else:
            out.append(_ok("reference resolves", child, ccol))
    merged = icu.merge(adm[["hadm_id", "subject_id"]], on="hadm_id", suffixes=("", "_adm"))
    wrong = merged["subject_id"] != merged["subject_id_adm"]
    if wrong.any():
        out.append(
            Check(
                "reference resolves",
                "hard",
                False,
                "icustays",
                "subject_id",
                int(wrong.sum()),
                tuple(merged.loc[wrong, "stay_id"].head(_EXAMPLES).tolist()),
                "stay's subject_id differs from its admission's subject_id",
            )
        )
    return out


def _check_timestamp_order(tables: dict[str, pd.DataFrame]) -> list[Check]:
    icu, adm = tables["icustays"], tables["admissions"]
    s = icu.merge(adm.drop(columns=["subject_id"]), on="hadm_id", how="inner")
    slack = pd.Timedelta(hours=24)
    rules: list[tuple[str, str, str, pd.Series, Literal["hard", "soft"]]] = [
        ("icustays", "outtime", "ICU out-time before in-time", s["outtime"] < s["intime"], "hard"),
        (
            "admissions",
            "dischtime",
            "discharge before admission",
            s["dischtime"] < s["admittime"],
            "hard",
        ),
        (
            "admissions",
            "deathtime",
            "death before admission",
            s["deathtime"] < s["admittime"],
            "hard",
        ),
        (
            "icustays",
            "intime",
            "ICU admission more than 24 h before hospital admission",
            s["intime"] < s["admittime"] - slack,
            "hard",
        ),
        (
            "icustays",
            "outtime",
            "ICU discharge more than 24 h after hospital discharge",
            s["outtime"] > s["dischtime"] + slack,
            "soft",
        ),
        (
            "admissions",
            "deathtime",
            "death more than 24 h before ICU discharge",
            s["deathtime"] < s["outtime"] - slack,
            "hard",
        ),
    ]
    out = []
    for table, col, what, bad, sev in rules:
        bad = bad.fillna(False).to_numpy(dtype=bool)
        if bad.any():
            out.append(
                Check(
                    "timestamps in order",
                    sev,
                    False,
                    table,
                    col,
                    int(bad.sum()),
                    tuple(s.loc[bad, "stay_id"].head(_EXAMPLES).tolist()),
                    f"{what} (icustays.stay_id listed)",
                )
            )
        else:
            out.append(_ok("timestamps in order", table, col, sev))
    return out


def _check_categories(tables: dict[str, pd.DataFrame], spec: TaskSpec) -> list[Check]:
    sex = tables["patients"]["sex"]
    allowed = (
        set(spec.feature("sex").categories or ()) if "sex" in spec.feature_names else {"F", "M"}
    )
    bad = ~sex.isin(allowed)
    if bad.any():
        return [
            Check(
                "value in declared categories",
                "hard",
                False,
                "patients",
                "sex",
                int(bad.sum()),
                tuple(sex[bad].unique()[:_EXAMPLES].tolist()),
                f"expected one of {sorted(allowed)}",
            )
        ]
    return [_ok("value in declared categories", "patients", "sex")]


def _check_events(path: Path, spec: TaskSpec, tables: dict[str, pd.DataFrame]) -> list[Check]:
    con = duckdb.connect(":memory:")
    key = spec.event_key
    parent = "icustays" if key == "stay_id" else "admissions"
    try:
        con.execute(f"CREATE VIEW ev AS SELECT * FROM read_parquet('{_sql_str(path)}')")
        out: list[Check] = []
        # Required columns: the key that ties an event to the task's unit of analysis.
        for col in (key, "charttime", "variable", "unit"):
            n = con.execute(f"SELECT COUNT(*) FROM ev WHERE {col} IS NULL").fetchall()[0][0]
            out.append(
                _ok("required value present", "events", col)
                if n == 0
                else Check(
                    "required value present",
                    "hard",
                    False,
                    "events",
                    col,
                    int(n),
                    (),
                    "null in a required column",
                )
            )
        # Units referenced by events exist.
        con.register("unit_ids", tables[parent][[key]])
        n, ex = _count_examples(
            con,
            f"SELECT DISTINCT ev.{key} FROM ev ANTI JOIN unit_ids USING ({key}) "
            f"WHERE ev.{key} IS NOT NULL ORDER BY 1",
        )
        out.append(
            _ok("reference resolves", "events", key)
            if n == 0
            else Check(
                "reference resolves",
                "soft",
                False,
                "events",
                key,
                n,
                ex,
                f"events for {key} values not in {parent} (ignored)",
            )
        )
        # Units per variable used by the spec.
        declared = {f.variable: f for f in spec.event_features if f.variable}
        units = con.execute(
            "SELECT variable, unit, COUNT(*) FROM ev GROUP BY variable, unit ORDER BY variable, unit"
        ).fetchall()
        for var, unit, count in units:
            f = declared.get(var)
            if f is None:
                continue
            if unit != f.unit:
                out.append(
                    Check(
                        "unit matches spec",
                        "hard",
                        False,
                        "events",
                        "unit",
                        int(count),
                        (f"variable={var} unit={unit}",),
                        f"{var} charted in {unit!r}; task spec feature {f.name!r} expects "
                        f"{f.unit!r}: convert at extraction",
                    )
                )
        if not any(c.name == "unit matches spec" for c in out):
            out.append(_ok("unit matches spec", "events", "unit"))
        # Values: non-finite, out of range (per variable).
        stats = con.execute(
            "SELECT variable, COUNT(*), "
            "SUM(CASE WHEN value IS NULL THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN isnan(value) OR isinf(value) THEN 1 ELSE 0 END) FROM ev GROUP BY variable ORDER BY variable"
        ).fetchall()
        for var, total, nulls, nonfinite in stats:
            f = declared.get(var)
            if f is None or f.valid_range is None:
                continue
            lo, hi = f.valid_range
            n_out, ex = _count_examples(
                con,
                f"SELECT stay_id, charttime, value FROM ev WHERE variable = '{_sql_str(var)}' "
                f"AND (value < {lo} OR value > {hi}) ORDER BY stay_id, charttime, value",
            )
            frac = n_out / total if total else 0.0
            if n_out == 0:
                out.append(_ok("value in physiological range", "events", f"value[{var}]", "soft"))
            else:
                sev: Literal["hard", "soft"] = (
                    "hard" if frac > MAX_OUT_OF_RANGE_FRACTION else "soft"
                )
                action = (
                    "too many to be artefacts — check units and item mapping"
                    if sev == "hard"
                    else "treated as artefacts and ignored by features"
                )
                out.append(
                    Check(
                        "value in physiological range",
                        sev,
                        False,
                        "events",
                        f"value[{var}]",
                        n_out,
                        ex,
                        f"{n_out} of {total} values ({frac:.2%}) outside [{lo:g}, {hi:g}] {f.unit}; {action}",
                    )
                )
            if nulls or nonfinite:
                out.append(
                    Check(
                        "value is a finite number",
                        "soft",
                        False,
                        "events",
                        f"value[{var}]",
                        int(nulls + nonfinite),
                        (),
                        "null or non-finite values (ignored by features)",
                    )
                )
        return out
    finally:
        con.close()


def _count_examples(con: duckdb.DuckDBPyConnection, query: str) -> tuple[int, tuple[Any, ...]]:
    n = con.execute(f"SELECT COUNT(*) FROM ({query})").fetchall()[0][0]
    rows = con.execute(f"{query} LIMIT {_EXAMPLES}").fetchall() if n else []
    return int(n), tuple(tuple(_plain(v) for v in r) if len(r) > 1 else _plain(r[0]) for r in rows)


def _sql_str(value: object) -> str:
    return str(value).replace("'", "''")


# ---------------------------------------------------------------------------------------
# Feature table
# ---------------------------------------------------------------------------------------


def check_features(features: pd.DataFrame, spec: TaskSpec) -> ContractReport:
    """Check the extracted feature table against the spec (ranges, categories, types)."""
    report = ContractReport()
    for f in spec.features:
        col = features[f.name]
        present = col.dropna()
        if f.kind == "categorical":
            bad = ~present.isin(set(f.categories or ()))
            msg = f"values outside declared categories {list(f.categories or ())}"
        elif f.valid_range is not None:
            lo, hi = f.valid_range
            vals = present.astype(float)
            bad = (vals < lo) | (vals > hi)
            msg = f"values outside [{lo:g}, {hi:g}]"
        else:
            continue
        if bad.any():
            ids = features.loc[present.index[bad.to_numpy()], "stay_id"].head(_EXAMPLES).tolist()
            report.checks.append(
                Check(
                    "feature in declared domain",
                    "hard",
                    False,
                    "features",
                    f.name,
                    int(bad.sum()),
                    tuple(ids),
                    msg + " (stay_id listed)",
                )
            )
        else:
            report.checks.append(_ok("feature in declared domain", "features", f.name))
    return report


def check_leakage(
    features: pd.DataFrame,
    recompute_at_prediction_time: Callable[[], pd.DataFrame],
    spec: TaskSpec,
) -> ContractReport:
    """Compare the features with features recomputed from events before the prediction time.

    ``recompute_at_prediction_time`` returns the feature table computed by the
    same SQL over only the events charted strictly before each stay's prediction
    time. Any cell that differs is information from the future.
    """
    report = ContractReport()
    truncated = recompute_at_prediction_time().set_index("stay_id").sort_index()
    full = features.set_index("stay_id").sort_index()
    for f in spec.features:
        a, b = full[f.name], truncated[f.name].reindex(full.index)
        if f.kind == "categorical":
            differ = ~((a == b).fillna(False) | (a.isna() & b.isna()))
        else:
            av, bv = a.astype(float).to_numpy(), b.astype(float).to_numpy()
            same = np.isclose(av, bv, rtol=0, atol=1e-12) | (np.isnan(av) & np.isnan(bv))
            differ = pd.Series(~same, index=a.index)
        differ = differ.to_numpy(dtype=bool)
        if differ.any():
            ids = full.index[differ][:_EXAMPLES].tolist()
            report.checks.append(
                Check(
                    "no event after prediction time reaches a feature",
                    "hard",
                    False,
                    "features",
                    f.name,
                    int(differ.sum()),
                    tuple(ids),
                    "feature changes when events after the prediction time are removed "
                    "(stay_id listed): the feature SQL reads past its window",
                )
            )
        else:
            report.checks.append(
                _ok("no event after prediction time reaches a feature", "features", f.name)
            )
    return report


def unapproved_features(spec: TaskSpec) -> str | None:
    """Return why ``spec`` cannot reach a model because of unapproved features, or None (R-P1)."""
    unapproved = [f.name for f in spec.features if f.status != "approved"]
    if not unapproved:
        return None
    return (
        f"feature(s) {', '.join(unapproved)} of task {spec.name!r} are declared but not approved "
        "(status must be 'approved' before they may reach a model)"
    )


def conform_features(table: pd.DataFrame, spec: TaskSpec, *, sql_name: str) -> pd.DataFrame:
    """Check R-P1 on an engine's output and return it with canonical column order and types."""
    declared = list(spec.feature_names)
    got = [c for c in table.columns if c != "stay_id"]
    extra = [c for c in got if c not in declared]
    if extra:
        raise UndeclaredFeature(
            f"{sql_name} returns column(s) {', '.join(extra)} that task {spec.name!r} does not "
            "declare; declare, justify and approve them in the task spec or remove them from the SQL"
        )
    missing = [c for c in declared if c not in got]
    if missing:
        raise UndeclaredFeature(
            f"{sql_name} does not return declared feature(s) {', '.join(missing)} of task {spec.name!r}"
        )
    unapproved = unapproved_features(spec)
    if unapproved:
        raise UndeclaredFeature(unapproved)
    out = table.loc[:, ["stay_id", *declared]].copy()
    out["stay_id"] = out["stay_id"].astype(np.int64)
    for f in spec.features:
        if f.kind == "numeric":
            out[f.name] = pd.to_numeric(out[f.name], errors="raise").astype("float64")
        elif f.kind == "flag":
            out[f.name] = out[f.name].astype("Int8")
        else:
            out[f.name] = out[f.name].astype("string")
    return out.sort_values("stay_id").reset_index(drop=True)
