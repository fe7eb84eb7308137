"""clinical_date writes exactly what Django's date filter would, faster."""

import datetime
import zoneinfo

import pytest
from django.template import Context, Template
from django.utils import timezone

FORMATS = ["j M Y", "M Y", "j M Y, H:i", "H:i", "Y-m-d H:i", "j F Y"]

BRISBANE = zoneinfo.ZoneInfo("Australia/Brisbane")
VALUES = [
    datetime.date(1961, 2, 28),
    datetime.date(2024, 12, 1),
    datetime.date(987, 7, 4),
    datetime.datetime(2026, 12, 5, 14, 7, tzinfo=datetime.UTC),
    # Past midnight in Brisbane: the shown day is the next one.
    datetime.datetime(2026, 12, 31, 14, 30, tzinfo=datetime.UTC),
    datetime.datetime(2026, 1, 1, 0, 0, tzinfo=BRISBANE),
    datetime.datetime(2026, 5, 9, 9, 5),
    None,
    "",
    "not a date",
]


def _rendered(source: str, value):
    # Django refuses a time format for a date with TypeError: so must we.
    try:
        return Template(source).render(Context({"value": value}))
    except TypeError as error:
        return type(error)


def _both(value, format_string) -> tuple:
    ours = _rendered(
        "{% load clinical_dates %}{{ value|clinical_date:'" + format_string + "' }}",
        value,
    )
    djangos = _rendered("{{ value|date:'" + format_string + "' }}", value)
    return ours, djangos


@pytest.mark.parametrize("format_string", FORMATS)
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_same_text_as_djangos_date_filter(format_string, value):
    with timezone.override(BRISBANE):
        ours, djangos = _both(value, format_string)

    assert ours == djangos


def test_a_date_and_time_is_shown_in_the_display_time_zone():
    late_evening_utc = datetime.datetime(2026, 12, 31, 14, 30, tzinfo=datetime.UTC)

    with timezone.override(BRISBANE):
        ours, _djangos = _both(late_evening_utc, "j M Y, H:i")

    assert ours == "1 Jan 2027, 00:30"
