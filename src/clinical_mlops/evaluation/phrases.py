"""Feature contributions in clinical words, with their reference:
"Lactate 4.1 mmol/L (training median 1.4 mmol/L) raised the risk".

Shared by the validation report (error examples) and the serving layer, so a
clinician reads the same sentence in both. Contributions are on the log-odds
scale (SHAP values of the raw model margin); the words for their size are fixed
by :data:`STRENGTH_WORDS` so the phrasing is stable across releases. The
sentence describes what moved *this model's* estimate, not a cause of death.

What a contribution is relative to: SHAP values split the model's margin for this
patient minus its *baseline* — the model's average margin over its training stays
(TreeSHAP: averaged as the trees' training cover weights them; a linear model: the
margin at the training means). So "lowered the risk" means "moved the estimate below
the model's average training stay", not "below normal". A single number cannot be
that reference for a tree model (it compares with the whole training distribution of
the input), so each measured numeric or flag input is shown beside the *training
median* of that input (the value the model also uses when it is missing), the middle
of the distribution it is compared with: :data:`CONTRIBUTION_REFERENCE` says this in
one sentence for every page or card that lists contributions, and each contribution
carries its ``reference`` (``{"statistic": "training median", "value", "shown"}``;
None for a categorical input or when no median is known).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinical_mlops.tasks.spec import Feature, TaskSpec

__all__ = [
    "CONTRIBUTION_REFERENCE",
    "NEGLIGIBLE",
    "REFERENCE_STATISTIC",
    "STRENGTH_WORDS",
    "Phraser",
    "describe_contribution",
    "estimate_percent",
    "format_value",
    "reference_of",
    "risk_percent",
    "top_phrases",
    "without_reference",
]

#: the statistic a contribution's value is shown beside (see the module docstring)
REFERENCE_STATISTIC = "training median"
#: what every listed contribution is relative to, for the page or card that lists them
CONTRIBUTION_REFERENCE = (
    "Each effect is measured against the model's average estimate over its training stays: "
    '"raised" or "lowered" means above or below that average, not above or below normal. '
    "The value in brackets is the training median of the input, the middle of the training "
    "stays it is compared with."
)
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


def estimate_percent(p: float, digits: int = 0, *, sep: str = "") -> str:
    """Return an estimated probability as a percentage that never reads as certain.

    A value that would round to 0 or 100 is shown as a bound (``<1%``, ``>99%``; with
    ``digits=1``, ``<0.1%``, ``>99.9%``), even when a calibrator returned exactly 0 or 1:
    an estimate for one patient is not a certainty. ``sep`` goes before the ``%`` sign.
    """
    text = f"{100 * p:.{digits}f}"
    step = 10.0**-digits
    if float(text) <= 0:
        return f"<{step:.{digits}f}{sep}%"
    if float(text) >= 100:
        return f">{100 - step:.{digits}f}{sep}%"
    return f"{text}{sep}%"


def risk_percent(p: float) -> str:
    """Return a calibrated risk as a person reads it: ``"12.3 %"``, ``"<0.1 %"``, ``">99.9 %"``.

    The one display rule for an estimated probability shown to a person (model card,
    validation report, console, CDS Hooks card, FHIR note): one decimal, and a value that
    would round to 0 or 100 shown as a bound, so a positive probability never reads "0 %"
    and no estimate reads as certain.
    """
    return estimate_percent(p, 1, sep=" ")


def _unit(feature: Feature) -> str:
    # An explicit empty display unit (e.g. INR) means "show no unit", not "fall back".
    return feature.display_unit if feature.display_unit is not None else (feature.unit or "")


@dataclass(frozen=True)
class _Shown:
    """How one feature's values are written; made once per feature on the serving path."""

    kind: str
    unit: str
    span: float

    @classmethod
    def of(cls, feature: Feature) -> _Shown:
        low, high = feature.valid_range or (0.0, 0.0)
        return cls(kind=feature.kind, unit=_unit(feature), span=high - low)

    def text(self, value: Any) -> str:
        if self.kind == "flag":
            return "present" if float(value) >= 0.5 else "absent"
        if self.kind == "categorical":
            return str(value)
        number = _number(float(value), self.span)
        if not self.unit:
            return number
        return f"{number}{self.unit}" if self.unit == "%" else f"{number} {self.unit}"


def format_value(feature: Feature, value: Any) -> str:
    """Return a value as a clinician reads it: rounded, with its display unit (``"4.1 mmol/L"``).

    Flags read "present"/"absent"; categorical values are shown as recorded.
    """
    return _Shown.of(feature).text(value)


def _reference(shown: _Shown, median: float | None) -> dict[str, Any] | None:
    """Return the reference a contribution's value is shown beside (None: it has none)."""
    if median is None or _is_missing(median) or shown.kind == "categorical":
        return None
    return {
        "statistic": REFERENCE_STATISTIC,
        "value": float(median),
        "shown": shown.text(median),
    }


def reference_of(feature: Feature, median: float | None) -> dict[str, Any] | None:
    """Return the reference of ``feature``'s contribution: its training median, as shown.

    ``{"statistic": "training median", "value": 88.0, "shown": "88 beats/min"}``; None
    for a categorical input or when no median is known.
    """
    return _reference(_Shown.of(feature), median)


def without_reference(shown: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return contributions as they were listed before they carried their reference.

    For comparing with a record written then (a replay): the ``reference`` key goes,
    and its words in brackets leave the phrase.
    """
    out = []
    for item in shown:
        ref = item.get("reference")
        body = {k: v for k, v in item.items() if k != "reference"}
        if isinstance(ref, Mapping):
            words = f" ({ref.get('statistic')} {ref.get('shown')})"
            body["phrase"] = str(body.get("phrase", "")).replace(words, "", 1)
        out.append(body)
    return out


def _effect(contribution: float) -> str:
    size = abs(contribution)
    if size < NEGLIGIBLE:
        return "had almost no effect on the risk"
    verb = "raised" if contribution > 0 else "lowered"
    for bound, adverb in STRENGTH_WORDS:
        if size < bound:
            return f"{verb} the risk{adverb}"
    return f"{verb} the risk"  # a NaN size; contributions are checked finite before this


def describe_contribution(
    spec: TaskSpec,
    name: str,
    value: Any,
    contribution: float,
    *,
    imputed_value: float | None = None,
    shown_as: str | None = None,
    reference: float | None = None,
) -> str:
    """Return one sentence on how a feature moved this patient's risk estimate.

    ``value`` is the raw (unimputed) value; when it is missing, the sentence says
    so and, if ``imputed_value`` is given, which value the model used instead:
    ``"Albumin not measured (median 3.2 g/dL used) lowered the risk slightly"``.
    ``reference`` (the training median) is shown beside a measured value:
    ``"Lactate 4.1 mmol/L (training median 1.4 mmol/L) raised the risk"``.
    ``shown_as`` replaces the value's text, e.g. an age band when anonymising.

    Examples
    --------
    >>> from clinical_mlops.tasks import load_task
    >>> describe_contribution(load_task("icu_mortality_48h"), "lactate", 4.13, 0.62)
    'Lactate 4.1 mmol/L raised the risk'
    """
    feature = spec.feature(name)
    shown = _Shown.of(feature)
    return _describe(
        shown,
        _label(feature),
        value,
        contribution,
        imputed_value=imputed_value,
        shown_as=shown_as,
        reference=_reference(shown, reference),
    )


def _label(feature: Feature) -> str:
    return feature.label.split(" (")[0]


def _describe(
    shown: _Shown,
    label: str,
    value: Any,
    contribution: float,
    *,
    imputed_value: float | None,
    shown_as: str | None,
    reference: Mapping[str, Any] | None = None,
) -> str:
    beside = "" if reference is None else f" ({reference['statistic']} {reference['shown']})"
    if shown_as is not None:
        subject = f"{label} {shown_as}{beside}"
    elif _is_missing(value):
        used = (
            f" (median {shown.text(imputed_value)} used)"
            if imputed_value is not None and not _is_missing(imputed_value)
            else ""
        )
        subject = f"{label} not measured{used}"
    elif shown.kind == "categorical":
        subject = f"{label}: {shown.text(value)}"
    else:
        subject = f"{label} {shown.text(value)}{beside}"
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
    """Return the ``k`` largest contributions (by size) as ``{feature, contribution, phrase,
    reference}``.

    ``contributions`` may include a ``"bias"`` entry (the model's baseline); it is skipped.
    ``imputed_values`` are the training medians: the value used for a missing input and
    the reference shown beside a measured one.
    """
    imputed, shown = imputed_values or {}, shown_as or {}
    ranked = sorted(
        ((n, float(c)) for n, c in contributions.items() if n != "bias"),
        key=lambda item: (-abs(item[1]), item[0]),
    )
    out = []
    for n, c in ranked[:k]:
        how = _Shown.of(spec.feature(n))
        ref = _reference(how, imputed.get(n))
        value = values.get(n)
        out.append(
            {
                "feature": n,
                "contribution": c,
                "phrase": _describe(
                    how,
                    _label(spec.feature(n)),
                    value,
                    c,
                    imputed_value=imputed.get(n),
                    shown_as=shown.get(n),
                    reference=None if _is_missing(value) and n not in shown else ref,
                ),
                "reference": ref,
            }
        )
    return out


class Phraser:
    """:func:`top_phrases` for many rows at once, for one spec and feature order (serving).

    The ranking is the same — by size, ties by name — done with numpy over the whole
    batch; each phrase is made by the same code as :func:`describe_contribution`, so the
    words are identical (tested).
    """

    def __init__(self, spec: TaskSpec, names: Sequence[str], imputed: Mapping[str, float]):
        self.names = list(names)
        features = [spec.feature(n) for n in self.names]
        self._how = [(_Shown.of(f), _label(f), imputed.get(f.name)) for f in features]
        self._refs = [_reference(how, median) for how, _, median in self._how]
        # Ranking happens over the columns in name order, so a stable sort breaks ties by name.
        self._by_name = np.array(sorted(range(len(self.names)), key=self.names.__getitem__))

    def top(
        self, values: Sequence[Mapping[str, Any]], contributions: np.ndarray, *, k: int = 3
    ) -> list[list[dict[str, Any]]]:
        """Return, per row, the ``k`` largest contributions as ``{feature, contribution, phrase,
        reference}``.

        ``contributions`` holds one column per name, in the order given at construction.
        """
        if len(values) == 0:
            return []
        ordered = contributions[:, self._by_name]
        ranks = np.argsort(-np.abs(ordered), axis=1, kind="stable")[:, :k]
        cols = self._by_name[ranks].tolist()
        sizes = np.take_along_axis(contributions, self._by_name[ranks], axis=1).tolist()
        out = []
        for row, picked, picked_sizes in zip(values, cols, sizes, strict=True):
            phrases = []
            for j, c in zip(picked, picked_sizes, strict=True):
                shown, label, imputed = self._how[j]
                name = self.names[j]
                missing = _is_missing(row.get(name))
                phrases.append(
                    {
                        "feature": name,
                        "contribution": c,
                        "phrase": _describe(
                            shown,
                            label,
                            row.get(name),
                            c,
                            imputed_value=imputed if missing else None,
                            shown_as=None,
                            reference=None if missing else self._refs[j],
                        ),
                        "reference": self._refs[j],
                    }
                )
            out.append(phrases)
        return out
