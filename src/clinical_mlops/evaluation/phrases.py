"""Feature contributions in clinical words: "Lactate 4.1 mmol/L raised the risk".

Shared by the validation report (error examples) and the serving layer, so a
clinician reads the same sentence in both. Contributions are on the log-odds
scale (SHAP values of the raw model margin); the words for their size are fixed
by :data:`STRENGTH_WORDS` so the phrasing is stable across releases. The
sentence describes what moved *this model's* estimate, not a cause of death.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clinical_mlops.tasks.spec import Feature, TaskSpec

__all__ = ["NEGLIGIBLE", "STRENGTH_WORDS", "describe_contribution", "format_value", "top_phrases"]

# |log-odds contribution| below this reads as "had almost no effect on the risk".
NEGLIGIBLE = 0.05
# (upper bound of |contribution|, adverb); 0.25 log-odds is an odds ratio of about 1.3,
# 0.75 about 2.1.
STRENGTH_WORDS: tuple[tuple[float, str], ...] = (
    (0.25, " slightly"),
    (0.75, ""),
    (math.inf, " strongly"),
)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: float, span: float) -> str:
    # Wide-range measurements (heart rate, MAP, SpO2) read as whole numbers; narrow ones
    # (temperature, labs) keep a decimal.
    if abs(value) >= 100 or (span >= 40 and abs(value) >= 10):
        text = f"{value:.0f}"
    elif abs(value) >= 1:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text.removesuffix(".0")


def _unit(feature: Feature) -> str:
    # An explicit empty display unit (e.g. INR) means "show no unit", not "fall back".
    return feature.display_unit if feature.display_unit is not None else (feature.unit or "")


def format_value(feature: Feature, value: Any) -> str:
    """Return a value as a clinician reads it: rounded, with its display unit (``"4.1 mmol/L"``).

    Flags read "present"/"absent"; categorical values are shown as recorded.
    """
    if feature.kind == "flag":
        return "present" if float(value) >= 0.5 else "absent"
    if feature.kind == "categorical":
        return str(value)
    unit = _unit(feature)
    low, high = feature.valid_range or (0.0, 0.0)
    number = _number(float(value), high - low)
    if not unit:
        return number
    return f"{number}{unit}" if unit == "%" else f"{number} {unit}"


def _effect(contribution: float) -> str:
    if abs(contribution) < NEGLIGIBLE:
        return "had almost no effect on the risk"
    verb = "raised" if contribution > 0 else "lowered"
    adverb = next(word for bound, word in STRENGTH_WORDS if abs(contribution) < bound)
    return f"{verb} the risk{adverb}"


def describe_contribution(
    spec: TaskSpec,
    name: str,
    value: Any,
    contribution: float,
    *,
    imputed_value: float | None = None,
    shown_as: str | None = None,
) -> str:
    """Return one sentence on how a feature moved this patient's risk estimate.

    ``value`` is the raw (unimputed) value; when it is missing, the sentence says
    so and, if ``imputed_value`` is given, which value the model used instead:
    ``"Albumin not measured (median 3.2 g/dL used) lowered the risk slightly"``.
    ``shown_as`` replaces the value's text, e.g. an age band when anonymising.

    Examples
    --------
    >>> from clinical_mlops.tasks import load_task
    >>> describe_contribution(load_task("icu_mortality_48h"), "lactate", 4.13, 0.62)
    'Lactate 4.1 mmol/L raised the risk'
    """
    feature = spec.feature(name)
    label = feature.label.split(" (")[0]
    if shown_as is not None:
        subject = f"{label} {shown_as}"
    elif _is_missing(value):
        used = (
            f" (median {format_value(feature, imputed_value)} used)"
            if imputed_value is not None and not _is_missing(imputed_value)
            else ""
        )
        subject = f"{label} not measured{used}"
    elif feature.kind == "categorical":
        subject = f"{label}: {format_value(feature, value)}"
    else:
        subject = f"{label} {format_value(feature, value)}"
    return f"{subject} {_effect(float(contribution))}"


def top_phrases(
    spec: TaskSpec,
    values: Mapping[str, Any],
    contributions: Mapping[str, float],
    *,
    k: int = 3,
    imputed_values: Mapping[str, float] | None = None,
    shown_as: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return the ``k`` largest contributions (by size) as ``{feature, contribution, phrase}``.

    ``contributions`` may include a ``"bias"`` entry (the model's baseline); it is skipped.
    """
    imputed, shown = imputed_values or {}, shown_as or {}
    ranked = sorted(
        ((n, float(c)) for n, c in contributions.items() if n != "bias"),
        key=lambda item: (-abs(item[1]), item[0]),
    )
    return [
        {
            "feature": n,
            "contribution": c,
            "phrase": describe_contribution(
                spec, n, values.get(n), c, imputed_value=imputed.get(n), shown_as=shown.get(n)
            ),
        }
        for n, c in ranked[:k]
    ]
