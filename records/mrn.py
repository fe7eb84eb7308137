"""Medical record numbers with a Damm check digit.

The Damm algorithm catches every single-digit error and every transposition
of adjacent digits, the two slips most often made when an MRN is read aloud
or typed: a wrong-patient error stopped before any lookup.
"""

import secrets
import unicodedata

# The weakly totally anti-symmetric quasigroup of order 10 from Damm's thesis.
_QUASIGROUP = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

BODY_DIGITS = 7
LENGTH = BODY_DIGITS + 1


def _interim(digits: str) -> int:
    interim = 0
    for digit in digits:
        interim = _QUASIGROUP[interim][int(digit)]
    return interim


def check_digit(body: str) -> str:
    if not body.isdigit():
        raise ValueError("an MRN body is digits only")
    return str(_interim(body))


def is_valid(mrn: str) -> bool:
    """True when MRN has the portal's length, only digits and a right check digit."""
    candidate = normalise(mrn)
    return (
        len(candidate) == LENGTH
        and candidate.isascii()
        and candidate.isdigit()
        and _interim(candidate) == 0
    )


def normalise(mrn: str) -> str:
    """Drop the spaces and dashes people type between digit groups.

    Any dash: word processors and phones turn "1234-5678" into an en dash.
    """
    return "".join(
        character
        for character in "".join(mrn.split())
        if unicodedata.category(character) != "Pd" and character != "\u2212"
    )


def generate() -> str:
    # The first digit is never 0 so the number survives a spreadsheet.
    body = str(secrets.randbelow(9) + 1) + "".join(
        str(secrets.randbelow(10)) for _ in range(BODY_DIGITS - 1)
    )
    return body + check_digit(body)


def display(mrn: str) -> str:
    """Group as 4-4 for reading aloud: 1234-5678."""
    return f"{mrn[:4]}-{mrn[4:]}" if len(mrn) == LENGTH else mrn
