"""Request inputs checked against the task spec, then encoded as one model-matrix row.

What a request may carry is exactly the spec's declared and approved features
(R-P1): an undeclared field is refused, not ignored. Each value is checked for
its type (a number, a 0/1 flag, one of the declared categories), for finiteness
(NaN and infinity are refused — a missing value is ``null`` or absent), for its
unit (the declared UCUM unit, its display form, or any unit UCUM converts to it, with
the feature's declared molar mass between mass and substance concentrations; see
:mod:`clinical_mlops.units`) and against the spec's physiologically valid range
(values outside it are artifacts and refused). Every problem is collected and
reported by field path, so a caller fixes them all at once.

A field path is names joined by dots, with list positions in brackets
(``items[0].features.lactate``); a name that is not a plain ASCII identifier, such
as a key a caller made up, is written as a JSON string in brackets
(``features["a.b"]``), so :func:`split_path` reads every path back exactly.

The checked values are kept in the declared unit: they are what the audit record
stores and what a replay re-encodes. Encoding follows
:class:`~clinical_mlops.modeling.preprocess.Preprocessor` exactly (median
imputation, one-hot over declared categories) with numpy only.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinical_mlops.errors import InputInvalid
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.registry.profile import ReferenceProfile
from clinical_mlops.tasks.spec import Feature, TaskSpec
from clinical_mlops.units import UnitNotConvertible, convert, ucum_code

__all__ = [
    "CheckedInputs",
    "InputSchema",
    "field_path",
    "loads_json",
    "split_path",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SEGMENT = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]|\[("(?:[^"\\]|\\.)*")\]')


def field_path(where: str, name: str) -> str:
    """Return the path of key ``name`` inside ``where``: ``where.name``, or ``where["name"]``
    when the name is not a plain ASCII identifier (dots, brackets, any digit or letter
    outside ASCII), so the path reads back as the same key."""
    if _NAME.match(name):
        return f"{where}.{name}" if where else name
    return f"{where}[{json.dumps(name)}]"


def split_path(path: str) -> list[str | int]:
    """Return the steps of a field path: names as text, ``[n]`` list positions as integers.

    Only ASCII digits in brackets are positions. Text that does not follow the path form
    is returned whole as one last step, never an error.
    """
    out: list[str | int] = []
    at = 0
    while at < len(path):
        found = _SEGMENT.match(path, at)
        if found is None or found.end() == at:
            out.append(path[at:].lstrip("."))
            break
        name, index, quoted = found.groups()
        if name is not None:
            out.append(name)
        elif index is not None:
            out.append(int(index))
        else:
            try:
                out.append(json.loads(quoted))
            except ValueError:
                out.append(path[at:])
                break
        at = found.end()
    return out


class _DuplicateKey(Exception):
    """A JSON object in a request body names one key twice."""


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs in order, kept to find a duplicated key."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _duplicate(value: Any, at: str) -> tuple[str, str] | None:
    """Return (path, key) of the first key named twice in an object, outermost first."""
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, _ in value:
            if key in seen:
                return field_path(at, key), key
            seen.add(key)
        for key, item in value:
            found = _duplicate(item, field_path(at, key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _duplicate(item, f"{at}[{i}]")
            if found:
                return found
    return None


def loads_json(raw: bytes | str) -> Any:
    """Return the JSON value of ``raw``, as ``json.loads`` reads it, refusing duplicate keys.

    A JSON object naming a key twice is ambiguous: parsers keep one of the values (Python's
    the last), so the checked inputs could differ from what the sender meant or what
    another reader of the same text sees. Raises ``InputInvalid`` naming the key and where
    it is, or ``ValueError`` for text that is not JSON.
    """
    try:
        return json.loads(raw, object_pairs_hook=_unique)
    except _DuplicateKey:
        path, key = _duplicate(json.loads(raw, object_pairs_hook=_Pairs), "") or ("", "")
        raise InputInvalid(
            [
                (
                    path,
                    f"key {key!r} appears more than once in this object; send each key once "
                    "(which value a JSON reader keeps is not defined)",
                )
            ]
        ) from None


@dataclass(frozen=True)
class CheckedInputs:
    """Values in declared units (None = missing), with what the checks found."""

    values: dict[str, Any]
    missing: tuple[str, ...]
    out_of_profile: tuple[str, ...]

    @property
    def completeness(self) -> float:
        """Fraction of the spec's features that were present."""
        return 1.0 - len(self.missing) / max(len(self.values), 1)


class InputSchema:
    """The spec's features as checks and an encoder, prepared once per release."""

    def __init__(
        self, spec: TaskSpec, preprocessor: Preprocessor, profile: ReferenceProfile | None = None
    ):
        if tuple(preprocessor.features) != spec.feature_names:
            raise ValueError("the release's preprocessor features differ from its task spec")
        self.spec = spec
        self.pre = preprocessor
        self.features: dict[str, Feature] = {f.name: f for f in spec.features}
        self.declared = frozenset(f.name for f in spec.approved_features)
        # Values beyond the range seen on the validation stays are legal but unusual: flagged.
        self.profile_range: dict[str, tuple[float, float]] = {}
        for name, entry in profile.features.items() if profile is not None else ():
            edges = entry.edges or []
            if edges:
                self.profile_range[name] = (float(edges[0]), float(edges[-1]))
        self.columns = preprocessor.columns
        # (name, feature, kind, valid low, valid high, profile low, profile high, categories)
        self._plan = []
        for name in spec.feature_names:
            f = self.features[name]
            # finite bounds, so NaN, infinity and integers beyond a float take the full check
            low, high = f.valid_range or (-math.inf, math.inf)
            low, high = max(low, -sys.float_info.max), min(high, sys.float_info.max)
            seen = self.profile_range.get(name, (-math.inf, math.inf))
            allowed = frozenset(f.categories or ())
            self._plan.append((name, f, f.kind, low, high, *seen, allowed))
        self._slots: list[tuple[str, int, dict[str, int] | None, float]] = []
        col = 0
        for name in preprocessor.features:
            cats = preprocessor.categories.get(name)
            if cats is not None:
                self._slots.append((name, col, {c: col + j for j, c in enumerate(cats)}, 0.0))
                col += len(cats)
            else:
                self._slots.append((name, col, None, preprocessor.medians[name]))
                col += 1
        self.width = col

    # -- checking --------------------------------------------------------------------------
    def check(self, raw: Mapping[str, Any], *, where: str = "features") -> CheckedInputs:
        """Return the checked values of one request; raise ``InputInvalid`` naming every field."""
        problems: list[tuple[str, str]] = []
        if not isinstance(raw, Mapping):
            raise InputInvalid([(where, "expected an object of feature values")])
        for name in () if self.declared.issuperset(raw) else sorted(set(raw) - self.declared):
            why = (
                "is declared but not approved for use"
                if name in self.features
                else "is not a feature of this task"
            )
            problems.append(
                (field_path(where, name), f"{why}; undeclared inputs are refused (R-P1), remove it")
            )
        values: dict[str, Any] = {}
        missing: list[str] = []
        unusual: list[str] = []
        for name, feature, kind, low, high, seen_low, seen_high, cats in self._plan:
            item = raw.get(name)
            # The common cases first: not measured; a plain number in the declared unit and
            # within range; a 0/1 flag; a declared category. Anything else takes ``_one``.
            kind_of = type(item)
            number = kind_of is float or kind_of is int
            value: Any
            if item is None:
                value = None
            elif kind == "numeric" and number and low <= item <= high:
                value = float(item)
            elif kind == "flag" and number and (item == 0 or item == 1):
                value = int(item)
            elif kind_of is str and item in cats:
                value = item
            else:
                path = f"{where}.{name}"
                value, problem = self._one(feature, item, path)
                if problem:
                    problems.append((path, problem))
                    continue
            values[name] = value
            if value is None:
                missing.append(name)
            elif kind == "numeric" and not seen_low <= value <= seen_high:
                unusual.append(name)
        if problems:
            raise InputInvalid(problems)
        return CheckedInputs(values=values, missing=tuple(missing), out_of_profile=tuple(unusual))

    def _one(self, f: Feature, item: Any, path: str) -> tuple[Any, str | None]:
        if item is None:
            return None, None
        unit: str | None = None
        if isinstance(item, Mapping):
            extra = set(item) - {"value", "unit"}
            if extra or "value" not in item:
                return None, 'expected a value or {"value": ..., "unit": ...}'
            unit, item = item.get("unit"), item["value"]
            if item is None:
                return None, None
        if f.kind == "categorical":
            if not isinstance(item, str):
                return None, f"expected one of {', '.join(f.categories or ())} (text)"
            if item not in (f.categories or ()):
                return None, f"{item!r} is not one of {', '.join(f.categories or ())}"
            return item, None
        if isinstance(item, bool):
            item = int(item) if f.kind == "flag" else item
            if f.kind != "flag":
                return None, "expected a number, got true/false"
        if not isinstance(item, int | float):
            return None, f"expected a number, got {type(item).__name__}"
        try:
            number = float(item)
        except OverflowError:  # a JSON integer beyond any float
            return None, "the number is too large to be a measurement"
        if not math.isfinite(number):
            return None, "NaN and infinity are not values; send null when not measured"
        if f.kind == "flag":
            if number not in (0.0, 1.0):
                return None, "a flag is 0 or 1 (or true/false)"
            return int(number), None
        if unit is not None and unit not in (f.unit, f.display_unit, f.shown_unit):
            code = ucum_code(unit) if isinstance(unit, str) else None
            try:
                if code is None or f.unit is None:
                    raise UnitNotConvertible(str(unit), str(f.unit), "not a UCUM unit")
                number = convert(number, code, f.unit, molar_mass=f.molar_mass)
            except UnitNotConvertible as exc:
                return None, (
                    f"unit {unit!r} is not accepted ({exc}); send {f.unit!r}"
                    + (f" ({f.display_unit})" if f.display_unit else "")
                    + " or a UCUM unit that converts to it"
                )
        low, high = f.valid_range or (-math.inf, math.inf)
        if not low <= number <= high:
            return None, (
                f"{number:g} lies outside the valid range [{low:g}, {high:g}] "
                f"{f.shown_unit}; values outside it are measurement artifacts"
            )
        return number, None

    # -- encoding --------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Return the float64 model matrix of checked rows (same numbers as ``Preprocessor``)."""
        X = np.zeros((len(rows), self.width), dtype=np.float64)
        if not rows:
            return X
        # Column by column: checked values are finite, so a NaN here can only be a None.
        for name, col, cats, median in self._slots:
            column = [values.get(name) for values in rows]
            if cats is not None:
                for i, v in enumerate(column):
                    j = cats.get(v) if v is not None else None
                    if j is not None:
                        X[i, j] = 1.0
            else:
                x = np.array(column, dtype=np.float64)
                X[:, col] = np.where(np.isnan(x), median, x)
        return X

    def imputed(self) -> dict[str, float]:
        """Return the training median used for each numeric feature when it is missing."""
        return dict(self.pre.medians)
