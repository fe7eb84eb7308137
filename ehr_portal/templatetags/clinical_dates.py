"""Dates on clinical pages, written without Django's general date formatter.

Django's ``date`` filter reads its format string and builds a formatter for
every value it is given: about 30 us each here, a third of the chart
summary's template time with the thirty dates on it. The pages use a few
fixed formats; ``clinical_date`` writes those directly, in English (the
portal runs with USE_I18N off), and hands any other format, or a value that
is no date, to Django's filter. It takes the same format strings, so a
template reads as it would with ``date``.
"""

import datetime

from django import template
from django.template.defaultfilters import date as django_date

register = template.Library()

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip


def _day(value) -> str:
    return f"{value.day} {MONTHS[value.month - 1]} {value.year:04d}"


def _clock(value) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


# Format -> (writer, whether it needs a time of day).
_WRITERS = {
    "j M Y": (_day, False),
    "M Y": (lambda value: f"{MONTHS[value.month - 1]} {value.year:04d}", False),
    "j M Y, H:i": (lambda value: f"{_day(value)}, {_clock(value)}", True),
    "H:i": (_clock, True),
}


@register.filter(expects_localtime=True, is_safe=False)
def clinical_date(value, format_string):
    """``value`` as Django's ``date`` filter would write it with ``format_string``.

    Aware datetimes arrive already in the display time zone (the engine
    converts them first, as for ``date``).
    """
    writer = _WRITERS.get(format_string)
    if writer is None or not isinstance(value, datetime.date):
        return django_date(value, format_string)
    write, needs_time = writer
    if needs_time and not isinstance(value, datetime.datetime):
        return django_date(value, format_string)
    return write(value)
