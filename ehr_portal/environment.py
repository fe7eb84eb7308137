"""Small typed readers for the environment variables that configure the portal.

Each raises ImproperlyConfigured on a value it cannot use, so a typo stops the
portal at start-up instead of quietly falling back to a weaker default.
"""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

MODES = ("production", "development")


def read(name: str, default: str | None = None) -> str | None:
    """Return NAME, or the contents of the file named by NAME_FILE, or default."""
    value = os.environ.get(name)
    if value is not None:
        return value

    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"{name}_FILE cannot be read: {error}"
            ) from error

    return default


def read_secret(name: str, *, private: bool) -> str | None:
    """As ``read``, for a secret: with ``private``, its file must be the owner's.

    A key file others can read is a key others may have: production refuses
    it, as it refuses a master key file with the same fault.
    """
    file_path = os.environ.get(f"{name}_FILE")
    if private and os.environ.get(name) is None and file_path:
        try:
            mode = Path(file_path).stat().st_mode
        except OSError:
            mode = 0  # read() below says what is wrong with the file
        if mode & 0o077:
            raise ImproperlyConfigured(
                f"{name}_FILE {file_path} can be read by others: chmod 600 it"
            )
    return read(name)


def read_mode() -> str:
    mode = (read("PORTAL_MODE", "production") or "").strip().lower()
    if mode not in MODES:
        raise ImproperlyConfigured(
            f"PORTAL_MODE must be one of {', '.join(MODES)}, not {mode!r}"
        )
    return mode


def read_bool(name: str, default: bool) -> bool:
    value = read(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def read_int(name: str, default: int) -> int:
    value = read(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be a whole number") from error


def read_list(name: str, default: list[str]) -> list[str]:
    value = read(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def development_secret(path: Path) -> str:
    """Return a per-checkout secret, creating it (mode 0600) on first use."""
    if not path.exists():
        # The folder holds keys: nobody else needs to list it either.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()
