"""Digits as people type them, and as the portal compares them.

``str.isdigit`` says yes to superscripts and to digits of every script,
which ``int`` or ``hmac.compare_digest`` then refuse with an error: every
check of a typed number goes through here instead.
"""

import unicodedata


def digits_as_ascii(text: str) -> str:
    """Digits of any script as ASCII digits ("١٢٣" is "123"); the rest as typed.

    A phone or keyboard set to another script types its own digits for the
    code an authenticator shows: they are the same code. Other characters
    that count as digits (superscripts) are left, and refused as not digits.
    """
    return "".join(
        str(unicodedata.decimal(character)) if character.isdecimal() else character
        for character in text
    )


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of 0-9 and nothing else."""
    return text.isascii() and text.isdigit()
