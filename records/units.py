"""Measurement units as clinicians read them, from the UCUM codes FHIR carries.

Imported values keep the source's unit (``130/81 mm[Hg]``, ``3 {score}``):
the API gives them as stored. Pages show them the way a chart prints them.
"""

import re

# UCUM codes whose printed form differs from the code itself.
_PRINTED = {
    "mm[Hg]": "mmHg",
    "Cel": "°C",
    "[degF]": "°F",
    "kg/m2": "kg/m²",
    "/a": "/yr",
    "10*3/uL": "×10³/µL",
    "10*6/uL": "×10⁶/µL",
    "10*9/L": "×10⁹/L",
    "10*12/L": "×10¹²/L",
    "uL": "µL",
    "ug": "µg",
    "umol/L": "µmol/L",
    "[in_i]": "in",
    "[lb_av]": "lb",
}

# A number (or systolic/diastolic pair) followed by one unit, as the import writes.
_MEASUREMENT = re.compile(r"^(?P<number>-?\d[\d.]*(?:/-?\d[\d.]*)?) (?P<unit>\S+)$")

# A UCUM annotation in braces ({score}, {#}, {T-score}) names what was counted
# and is no unit: the number stands alone.
_ANNOTATION = re.compile(r"^\{[^{}]*\}$")


def printed_value(value: str) -> str:
    """``value`` with its unit as printed; any other text is returned as it is."""
    match = _MEASUREMENT.match(value)
    if match is None:
        return value

    number, unit = match["number"], match["unit"]
    if _ANNOTATION.match(unit):
        return number
    return f"{number} {_PRINTED.get(unit, unit)}"
