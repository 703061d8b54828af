"""The event-feature aggregation, generated from the task spec as portable SQL.

Every engine (DuckDB and Spark SQL offline, DuckDB on one patient at the bedside)
registers the text :func:`event_features_sql` returns as the relation
``event_features``, one row per unit of analysis (``stay_id`` or ``hadm_id``, the
spec's event key) with one column per event feature. A task's own SQL file joins
it to the cohort and adds the static features. The aggregation is therefore
declared once, in the spec: for each event feature the raw-event ``variable``, the
window (the feature's own ``window`` or the task's observation window, in hours
from the anchor, half-open), the physiologically valid range (values outside it
are device artefacts and ignored) and the aggregation:

* ``min``, ``max``, ``mean`` of the valid values in the window;
* ``last``: the value charted latest (ties: the highest value);
* ``any``: 1 when any valid value in the window is non-zero, 0 when all are zero.

A flag feature comes out as INTEGER, every other as DOUBLE; a unit without a valid
value of a feature gets NULL. Only SQL that DuckDB and Spark SQL read alike is used.
"""

from __future__ import annotations

from clinical_mlops.tasks.spec import Feature, TaskSpec

__all__ = ["EVENT_FEATURES", "event_features_sql"]

#: The relation name task SQL reads the generated aggregation from.
EVENT_FEATURES = "event_features"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _number(value: float) -> str:
    # A typed DOUBLE literal, so both engines compare DOUBLE with DOUBLE exactly.
    return f"CAST({_text(repr(float(value)))} AS DOUBLE)"


def _shift(column: str, hours: float) -> str:
    minutes = round(hours * 60)
    if minutes == 0:
        return column
    sign = "+" if minutes > 0 else "-"
    return f"{column} {sign} INTERVAL '{abs(minutes)}' MINUTE"


def _tagged(spec: TaskSpec, f: Feature, key: str) -> str:
    where = [f"variable = {_text(f.variable or '')}"]
    if f.valid_range is not None:
        low, high = f.valid_range
        where.append(f"value >= {_number(low)}")
        where.append(f"value <= {_number(high)}")
    if f.window is not None:
        # The feature's window, as an offset from the task window both ends are measured from.
        obs = spec.observation_window
        start = _shift("window_start", f.window.start_hours - obs.start_hours)
        end = _shift("window_end", f.window.end_hours - obs.end_hours)
        if start != "window_start":
            where.append(f"charttime >= {start}")
        if end != "window_end":
            where.append(f"charttime < {end}")
    conditions = "\n      AND ".join(where)
    return (
        f"    SELECT {key}, {_text(f.name)} AS feature, value, charttime FROM windowed\n"
        f"    WHERE {conditions}"
    )


def _aggregate(f: Feature) -> str:
    mine = f"feature = {_text(f.name)}"
    if f.aggregation == "any":
        expr = f"MAX(CASE WHEN {mine} THEN CASE WHEN value <> 0 THEN 1 ELSE 0 END END)"
    elif f.aggregation == "last":
        expr = f"MAX(CASE WHEN {mine} AND rn = 1 THEN value END)"
    else:
        fn = {"min": "MIN", "max": "MAX", "mean": "AVG"}[f.aggregation]
        expr = f"{fn}(CASE WHEN {mine} THEN value END)"
    kind = "INTEGER" if f.kind == "flag" else "DOUBLE"
    return f"    CAST({expr} AS {kind}) AS {f.name}"


def event_features_sql(spec: TaskSpec) -> str:
    """Return the SELECT of ``spec``'s event features: one row per unit with events.

    Reads the relations ``events`` and ``cohort`` (``window_start``, ``window_end`` and
    the event key). A spec without event features gets a relation of keys only.
    """
    key = spec.event_key
    features = spec.event_features
    obs = spec.observation_window
    lines = [
        f"-- Event features of task {spec.name} (version {spec.version}), generated from its",
        f"-- spec: one row per {key}. Window in hours from the anchor, half-open.",
    ]
    for f in features:
        w = f.window or obs
        low, high = f.valid_range or (None, None)
        lines.append(
            f"--   {f.name}: {f.aggregation} of {f.variable} in [{w.start_hours:g}, "
            f"{w.end_hours:g}) h, valid [{low if low is None else f'{low:g}'}, "
            f"{high if high is None else f'{high:g}'}] {f.unit or ''}".rstrip()
        )
    windowed = (
        "WITH windowed AS (\n"
        f"    SELECT e.{key} AS {key}, e.variable, e.value, e.charttime,\n"
        "           c.window_start, c.window_end\n"
        "    FROM events e\n"
        "    JOIN cohort c\n"
        f"      ON e.{key} = c.{key}\n"
        "     AND e.charttime >= c.window_start\n"
        "     AND e.charttime < c.window_end\n"
        "    WHERE e.value IS NOT NULL\n"
        ")"
    )
    if not features:
        return "\n".join([*lines, windowed, f"SELECT DISTINCT {key} FROM windowed", ""])
    tagged = "tagged AS (\n" + "\n    UNION ALL\n".join(_tagged(spec, f, key) for f in features)
    parts = [windowed, tagged + "\n)"]
    source = "tagged"
    if any(f.aggregation == "last" for f in features):
        parts.append(
            "ranked AS (\n"
            f"    SELECT {key}, feature, value,\n"
            "           ROW_NUMBER() OVER (\n"
            f"               PARTITION BY {key}, feature ORDER BY charttime DESC, value DESC\n"
            "           ) AS rn\n"
            "    FROM tagged\n"
            ")"
        )
        source = "ranked"
    body = ",\n".join(parts)
    select = (
        f"SELECT\n    {key},\n"
        + ",\n".join(_aggregate(f) for f in features)
        + f"\nFROM {source}\nGROUP BY {key}\n"
    )
    return "\n".join([*lines, body, select])
