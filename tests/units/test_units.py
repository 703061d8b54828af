"""UCUM conversion (clinical_mlops.units) agrees with pint's own unit definitions."""

from __future__ import annotations

import math

import pint
import pytest

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.tasks import load_task
from clinical_mlops.units import UnitNotConvertible, convert, ucum_code

PINT = pint.UnitRegistry()


def _chem(value: float, source: str, target: str, molar_mass: float) -> float:
    q = PINT.Quantity(value, source)
    return float(q.to(target, "chemistry", mw=molar_mass * PINT("g/mol")).magnitude)


def _plain(value: float, source: str, target: str) -> float:
    return float(PINT.Quantity(value, source).to(target).magnitude)


CREATININE = load_task("icu_mortality_48h").feature("creatinine").molar_mass
LACTATE = load_task("icu_mortality_48h").feature("lactate").molar_mass
BILIRUBIN = load_task("icu_mortality_48h").feature("bilirubin").molar_mass

# (value, UCUM from, UCUM to, molar mass, the same conversion computed by plain pint)
TABLE = [
    (1.3, "mg/dL", "umol/L", CREATININE, lambda v: _chem(v, "mg/dL", "umol/L", CREATININE)),
    (115.0, "umol/L", "mg/dL", CREATININE, lambda v: _chem(v, "umol/L", "mg/dL", CREATININE)),
    (4.2, "mmol/L", "mg/dL", LACTATE, lambda v: _chem(v, "mmol/L", "mg/dL", LACTATE)),
    (27.0, "mg/dL", "mmol/L", LACTATE, lambda v: _chem(v, "mg/dL", "mmol/L", LACTATE)),
    (34.0, "umol/L", "mg/dL", BILIRUBIN, lambda v: _chem(v, "umol/L", "mg/dL", BILIRUBIN)),
    (101.3, "[degF]", "Cel", None, lambda v: _plain(v, "degF", "degC")),
    (36.6, "Cel", "[degF]", None, lambda v: _plain(v, "degC", "degF")),
    (12.0, "kPa", "mm[Hg]", None, lambda v: _plain(v, "kPa", "mmHg")),
    (90.0, "mm[Hg]", "kPa", None, lambda v: _plain(v, "mmHg", "kPa")),
    (35.0, "g/L", "g/dL", None, lambda v: _plain(v, "g/L", "g/dL")),
    (13.5, "g/dL", "g/L", None, lambda v: _plain(v, "g/dL", "g/L")),
    (250.0, "10*3/uL", "10*9/L", None, lambda v: _plain(v * 1e3, "1/uL", "1/L") / 1e9),
    (0.25, "10*12/L", "10*9/L", None, lambda v: _plain(v * 1e12, "1/L", "1/L") / 1e9),
    (72.0, "/min", "/h", None, lambda v: _plain(v, "1/min", "1/h")),
    (70.0, "kg", "[lb_av]", None, lambda v: _plain(v, "kg", "lb")),
]


@pytest.mark.parametrize(("value", "source", "target", "molar_mass", "reference"), TABLE)
def test_conversion_matches_pint(value, source, target, molar_mass, reference):
    got = convert(value, source, target, molar_mass=molar_mass)
    assert math.isclose(got, reference(value), rel_tol=1e-9), (got, reference(value))
    # and back again
    back = convert(got, target, source, molar_mass=molar_mass)
    assert math.isclose(back, value, rel_tol=1e-9)


def test_clinical_reference_values():
    # Textbook equivalences: creatinine 1 mg/dL = 88.4 umol/L, body temperature 98.6 F = 37 C.
    assert convert(1.0, "mg/dL", "umol/L", molar_mass=CREATININE) == pytest.approx(88.4, abs=0.01)
    assert convert(98.6, "[degF]", "Cel") == pytest.approx(37.0, abs=1e-9)
    assert convert(1.0, "mmol/L", "mg/dL", molar_mass=LACTATE) == pytest.approx(9.008, abs=1e-6)


def test_the_same_unit_is_returned_unchanged():
    assert convert(7.0, "{score}", "{score}") == 7.0
    assert convert(3, "mm[Hg]", "mm[Hg]") == 3.0


@pytest.mark.parametrize(
    ("source", "target", "molar_mass", "fragment"),
    [
        ("mg/dL", "umol/L", None, "molar mass"),
        ("kg", "mm[Hg]", None, "different quantities"),
        ("mmHg", "mm[Hg]", None, "'mmHg' is not a UCUM code"),
        ("mm[Hg]", "no such unit", None, "'no such unit' is not a UCUM code"),
        ("{score}", "1", None, "annotation"),
        ("%", "{score}", None, "annotation"),
    ],
)
def test_units_that_cannot_convert_are_named(source, target, molar_mass, fragment):
    with pytest.raises(UnitNotConvertible) as info:
        convert(1.0, source, target, molar_mass=molar_mass)
    assert isinstance(info.value, ValueInvalid)
    assert repr(source) in str(info.value) and repr(target) in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("mmHg", "mm[Hg]"),
        (" mm Hg ", "mm[Hg]"),
        ("°C", "Cel"),
        ("degF", "[degF]"),
        ("beats/min", "/min"),
        ("bpm", "/min"),
        ("K/uL", "10*3/uL"),
        ("µmol/L", "umol/L"),
        ("mg/dL", "mg/dL"),
        ("10*9/L", "10*9/L"),
        ("%", "%"),
        ("not a unit", None),
        ("", None),
        (None, None),
    ],
)
def test_display_forms_read_as_ucum(text, code):
    assert ucum_code(text) == code


def test_a_display_form_converts_once_read():
    assert convert(98.6, ucum_code("°F") or "", ucum_code("°C") or "") == pytest.approx(
        37.0, abs=1e-9
    )
