"""The common-password list for passwords of 12 characters or more.

Django's own list (shipped with Django under its BSD licence) holds 20,000
common passwords, but only 190 of them are long enough to pass our 12-character
floor, so it blocks almost nothing here. People meet a length rule in
predictable ways: a common password doubled, or followed by digits, a year
or a symbol; long runs of digits. This module derives those from Django's
list, offline and deterministically; ``manage.py build_password_list``
writes the result to ``accounts/data/common-passwords-12.txt.gz``, which
settings point CommonPasswordValidator at.
"""

import gzip
from pathlib import Path

from django.contrib.auth.password_validation import CommonPasswordValidator

MINIMUM_LENGTH = 12
BASE_WORDS = 3000
SUFFIXES = (
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678",
    "!", "1!", "123!", "@123", "01", "007", "69", "2000", "2020", "2021",
    "2022", "2023", "2024", "2025", "2026", "2027",
)  # fmt: skip
LIST_PATH = Path(__file__).resolve().parent / "data" / "common-passwords-12.txt.gz"


def _django_list() -> list[str]:
    path = CommonPasswordValidator().DEFAULT_PASSWORD_LIST_PATH
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _digit_runs() -> set[str]:
    runs = set()
    for length in range(MINIMUM_LENGTH, 17):
        for start in range(10):
            runs.add("".join(str((start + i) % 10) for i in range(length)))
            runs.add("".join(str((start - i) % 10) for i in range(length)))
            runs.add(str(start) * length)
    return runs


def build_common_passwords() -> list[str]:
    """Every derived candidate of at least 12 characters, sorted, lower case."""
    common = _django_list()
    candidates = {word for word in common if len(word) >= MINIMUM_LENGTH}
    for word in common[:BASE_WORDS]:
        candidates.add(word * 2)
        candidates.update(word + suffix for suffix in SUFFIXES)
    candidates |= _digit_runs()
    return sorted(word.lower() for word in candidates if len(word) >= MINIMUM_LENGTH)


def write_list(path: Path = LIST_PATH) -> int:
    """Write the list gzipped with a fixed timestamp, so rebuilding is a no-op."""
    words = build_common_passwords()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{word}\n" for word in words).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0))
    return len(words)
