"""Units of measure: UCUM codes read and converted with a maintained UCUM library (ucumvert).

A task spec declares each feature's canonical UCUM unit; values that arrive in another
unit (an EHR in the United States sends creatinine in mg/dL, one in Europe in umol/L)
are converted here, never by a table kept in code. Conversion between a mass and a
substance concentration (mg/dL <-> umol/L) needs the substance's molar mass, which the
spec declares per feature (``molar_mass``). Temperatures convert as absolute scales
(98.6 [degF] is 37 Cel). Units with only an annotation (``{score}``, ``{INR}``) name
no quantity: they convert to exactly themselves and to nothing else.

:func:`ucum_code` reads the display forms EHRs often put in ``Quantity.unit`` when they
send no UCUM ``code`` (``mmHg``, ``°C``, ``beats/min``, ``K/uL``).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from clinical_mlops.errors import ValueInvalid

__all__ = ["UnitNotConvertible", "convert", "ucum_code"]


class UnitNotConvertible(ValueInvalid):
    """A value cannot be expressed in the unit asked for; the message names both units."""

    def __init__(self, from_unit: str, to_unit: str, why: str):
        self.from_unit = from_unit
        self.to_unit = to_unit
        super().__init__(f"cannot convert {from_unit!r} to {to_unit!r}: {why}")


# Display forms EHRs send in place of a UCUM code, matched without regard to case or spaces.
# Checked before UCUM itself: "C" and "F" are valid UCUM (coulomb, farad), but a temperature
# sent as "C" means degrees Celsius.
_DISPLAY: dict[str, str] = {
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "°c": "Cel",
    "ºc": "Cel",
    "degc": "Cel",
    "deg c": "Cel",
    "c": "Cel",
    "celsius": "Cel",
    "°f": "[degF]",
    "ºf": "[degF]",
    "degf": "[degF]",
    "deg f": "[degF]",
    "f": "[degF]",
    "fahrenheit": "[degF]",
    "beats/min": "/min",
    "beats/minute": "/min",
    "bpm": "/min",
    "breaths/min": "/min",
    "breaths/minute": "/min",
    "per min": "/min",
    "/minute": "/min",
    "k/ul": "10*3/uL",
    "k/µl": "10*3/uL",
    "x10^3/ul": "10*3/uL",
    "x10^9/l": "10*9/L",
    "×10⁹/l": "10*9/L",
    "x 10^9/l": "10*9/L",
    "µmol/l": "umol/L",
    "μmol/l": "umol/L",
    "µg/l": "ug/L",
    "μg/l": "ug/L",
    "years": "a",
    "year": "a",
    "yr": "a",
    "points": "{score}",
    "score": "{score}",
    "ratio": "{ratio}",
}
_ANNOTATION = re.compile(r"\{[^{}]*\}")
_SPACES = re.compile(r"\s+")


@cache
def _registry() -> Any:
    # Built once per process (about a second): the UCUM grammar and unit definitions.
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@cache
def _parse(code: str) -> Any:
    """Return the pint quantity of one UCUM code (annotations read as 1); raises on bad codes."""
    return _registry().from_ucum(code)


def _valid(code: str) -> bool:
    from ucumvert import parse_ucum

    try:
        parse_ucum(code)
    except Exception:  # ucumvert raises its own and lark's errors for text that is not UCUM
        return False
    return True


def ucum_code(text: str | None) -> str | None:
    """Return the UCUM code ``text`` stands for (itself when it is UCUM), or None.

    Reads the display forms EHRs send in ``Quantity.unit`` (``mmHg``, ``°C``,
    ``beats/min``, ``K/uL``, ``µmol/L``). None means the text is neither UCUM nor a
    known display form: the value's unit is unknown and it cannot be used.
    """
    if text is None:
        return None
    stripped = text.strip()
    if not stripped:
        return None
    known = _DISPLAY.get(_SPACES.sub(" ", stripped.lower()))
    if known is not None:
        return known
    return stripped if _valid(stripped) else None


def _annotation_only(code: str) -> bool:
    return bool(code) and not _ANNOTATION.sub("", code).strip()


def convert(
    value: float, from_unit: str, to_unit: str, *, molar_mass: float | None = None
) -> float:
    """Return ``value`` (in ``from_unit``) expressed in ``to_unit``; both are UCUM codes.

    A mass concentration converts to a substance concentration (and back) only with
    ``molar_mass`` in g/mol. Raises :class:`UnitNotConvertible` naming both units when
    either is not UCUM or they measure different things.
    """
    if from_unit == to_unit:
        return float(value)
    if _annotation_only(from_unit) or _annotation_only(to_unit):
        raise UnitNotConvertible(from_unit, to_unit, "an annotation names no quantity to convert")
    from pint.errors import DimensionalityError

    try:
        source, target = _parse(from_unit), _parse(to_unit)
    except Exception:
        bad = from_unit if not _valid(from_unit) else to_unit
        raise UnitNotConvertible(from_unit, to_unit, f"{bad!r} is not a UCUM code") from None
    reg = _registry()
    # A UCUM code may carry a factor ("10.L/min"); offset units (Cel, [degF]) carry 1.
    quantity = reg.Quantity(float(value) * source.magnitude, source.units)
    try:
        return float(quantity.to(target.units).magnitude / target.magnitude)
    except DimensionalityError:
        pass
    mass, substance = _parse("g/L"), _parse("mol/L")
    if quantity.dimensionality == mass.dimensionality and (
        target.dimensionality == substance.dimensionality
    ):
        per_mole = _molar(from_unit, to_unit, molar_mass)
        moles = reg.Quantity(
            quantity.to(mass.units).magnitude / mass.magnitude / per_mole, substance.units
        )
        return float(moles.to(target.units).magnitude / target.magnitude)
    if quantity.dimensionality == substance.dimensionality and (
        target.dimensionality == mass.dimensionality
    ):
        per_mole = _molar(from_unit, to_unit, molar_mass)
        grams = reg.Quantity(
            quantity.to(substance.units).magnitude / substance.magnitude * per_mole, mass.units
        )
        return float(grams.to(target.units).magnitude / target.magnitude)
    raise UnitNotConvertible(
        from_unit,
        to_unit,
        f"they measure different quantities ({quantity.dimensionality} and "
        f"{target.dimensionality})",
    )


def _molar(from_unit: str, to_unit: str, molar_mass: float | None) -> float:
    if molar_mass is None or not molar_mass > 0:
        raise UnitNotConvertible(
            from_unit,
            to_unit,
            "a mass and a substance concentration convert only with the substance's molar "
            "mass (declare molar_mass in g/mol on the feature)",
        )
    return float(molar_mass)
