"""Field encryption and blind indexes: the only module that touches PHI keys.

Sealed values are text of the form ``a1.<key version>.<base64(nonce || ct)>``:
``a1`` names AES-256-GCM, the version names the data key, and the 96-bit nonce
is fresh for every value. The associated data binds the value to its table,
column and row, so a ciphertext copied to another row fails to open
(45 CFR 164.312(a)(2)(iv), encryption; 164.312(c)(1), integrity).
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

ALGORITHM_AES_GCM = "a1"
NONCE_BYTES = 12
KEY_BYTES = 32


class IntegrityError(Exception):
    """A sealed value failed authentication: tampered, moved, or wrong key."""


class KeyringUnavailable(ImproperlyConfigured):
    """The keyring is missing or unreadable; no PHI can be read or written."""


@dataclass(frozen=True)
class Keyring:
    data_keys: dict[int, bytes] = field(repr=False)
    current_version: int
    index_key: bytes = field(repr=False)
    ciphers: dict[int, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        ciphers = {version: AESGCM(key) for version, key in self.data_keys.items()}
        object.__setattr__(self, "ciphers", ciphers)

    def cipher(self, version: int) -> AESGCM:
        try:
            return self.ciphers[version]
        except KeyError:
            raise IntegrityError(f"no data key with version {version}") from None


_lock = threading.Lock()
_keyring: Keyring | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def new_keyring_document() -> dict:
    return {
        "format": 1,
        "current": 1,
        "data_keys": {"1": _b64(secrets.token_bytes(KEY_BYTES))},
        "index_key": _b64(secrets.token_bytes(KEY_BYTES)),
    }


def create_keyring_file(path: Path) -> None:
    """Write a fresh keyring readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(new_keyring_document(), handle)
    logger.warning("Created a development keyring at %s", path)


def _parse_keyring(document: dict) -> Keyring:
    try:
        data_keys = {
            int(version): base64.b64decode(key)
            for version, key in document["data_keys"].items()
        }
        keyring = Keyring(
            data_keys=data_keys,
            current_version=int(document["current"]),
            index_key=base64.b64decode(document["index_key"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise KeyringUnavailable(f"the keyring file is malformed: {error}") from error

    if keyring.current_version not in data_keys:
        raise KeyringUnavailable("the keyring's current version has no key")
    if any(len(key) != KEY_BYTES for key in data_keys.values()):
        raise KeyringUnavailable("every data key must be 256 bits")
    return keyring


def load_keyring(*, create_if_missing: bool) -> Keyring:
    path = Path(settings.PORTAL_KEYRING_FILE)
    if not path.exists():
        if not create_if_missing:
            raise KeyringUnavailable(
                f"no keyring at {path}: set PORTAL_KEYRING_FILE (see README)"
            )
        create_keyring_file(path)

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KeyringUnavailable(f"the keyring cannot be read: {error}") from error
    return _parse_keyring(document)


def keyring() -> Keyring:
    global _keyring
    if _keyring is None:
        with _lock:
            if _keyring is None:
                _keyring = load_keyring(create_if_missing=settings.DEVELOPMENT)
    return _keyring


def reset_keyring_cache() -> None:
    """Forget the loaded keyring (tests and key rotation reload it)."""
    global _keyring
    with _lock:
        _keyring = None


def seal(plaintext: str, associated_data: bytes) -> str:
    ring = keyring()
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = ring.cipher(ring.current_version).encrypt(
        nonce, plaintext.encode("utf-8"), associated_data
    )
    return f"{ALGORITHM_AES_GCM}.{ring.current_version}.{_b64(nonce + ciphertext)}"


def open_sealed(token: str, associated_data: bytes) -> str:
    try:
        algorithm, version, payload = token.split(".", 2)
        raw = base64.b64decode(payload, validate=True)
        version_number = int(version)
    except ValueError as error:
        raise IntegrityError("the stored value is not a sealed value") from error

    if algorithm != ALGORITHM_AES_GCM:
        raise IntegrityError(f"unknown encryption algorithm {algorithm!r}")

    cipher = keyring().cipher(version_number)
    try:
        plaintext = cipher.decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data
        )
    except InvalidTag:
        raise IntegrityError(
            "a sealed value failed its integrity check (tampered, or moved "
            "from another row or column)"
        ) from None
    return plaintext.decode("utf-8")


def normalise_for_index(value: str) -> str:
    """Fold case, accents and spacing so 'Zoë  O'Neil' finds 'zoe o'neil'."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def blind_index(purpose: str, value: str) -> str:
    """A keyed, deterministic tag for exact search; reveals nothing without the key.

    The purpose separates index spaces, so equal values in two different
    columns (a family name that is also a given name) give different tags.
    """
    message = f"{purpose}\x00{normalise_for_index(value)}".encode()
    return hmac.new(keyring().index_key, message, hashlib.sha256).hexdigest()
