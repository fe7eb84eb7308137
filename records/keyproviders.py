"""Master-key providers: the key that wraps the data keys, kept out of the keyring.

Two providers share one small interface (``wrap``/``unwrap`` of a data key):
a local key file, and a PKCS#11 token (an HSM, or SoftHSM2 in tests) where the
master key is generated non-extractable and never leaves the token. Only
``records.crypto`` calls them.
"""

import base64
import hashlib
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ehr_portal import environment
from ehr_portal.logging import error_kind

logger = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12


class MasterKeyUnavailable(ImproperlyConfigured):
    """The master key cannot be reached, so no data key can be unwrapped."""


class UnwrapFailed(Exception):
    """A wrapped data key did not authenticate under this master key."""


class MasterKeyProvider(Protocol):
    name: str

    @property
    def key_id(self) -> str:
        """A non-secret name for the master key, recorded in the keyring."""

    def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        """Encrypt a data key; the result is nonce || ciphertext || tag."""

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Decrypt a wrapped data key, or raise UnwrapFailed."""


class FileMasterKey:
    """A 256-bit master key in a local file (base64), readable by its owner only."""

    name = "file"

    def __init__(self, path: Path, *, require_private: bool):
        self.path = Path(path)
        if not self.path.exists():
            raise MasterKeyUnavailable(
                f"no master key at {self.path}: check PORTAL_MASTER_KEY_FILE "
                "(see README)"
            )
        if not self.path.is_file():
            raise MasterKeyUnavailable(
                f"PORTAL_MASTER_KEY_FILE names {self.path}, which is not a file"
            )
        if require_private and self.path.stat().st_mode & 0o077:
            raise MasterKeyUnavailable(
                f"the master key file {self.path} is readable by others: chmod 600"
            )
        try:
            key = base64.b64decode(self.path.read_text().strip(), validate=True)
        except (OSError, ValueError) as error:
            raise MasterKeyUnavailable(
                f"the master key file {self.path} cannot be read"
            ) from error
        if len(key) != KEY_BYTES:
            raise MasterKeyUnavailable("the master key must be 256 bits")
        self._cipher = AESGCM(key)
        # A fingerprint names the key without revealing it.
        self._key_id = "file:" + hashlib.sha256(b"key-id\x00" + key).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, data_key, associated_data)

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        try:
            return self._cipher.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], associated_data
            )
        except InvalidTag:
            raise UnwrapFailed(
                "a data key does not open with this master key"
            ) from None


def create_master_key_file(path: Path) -> None:
    """Write a fresh random master key, mode 0600, refusing to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii"))
    logger.warning("Created a master key file at %s", path)


class Pkcs11MasterKey:
    """An AES-256 master key inside a PKCS#11 token; wrapping happens in the token.

    A token allows one logged-in session per process (a second login raises
    UserAlreadyLoggedIn), so the session is shared and serialised by a lock,
    and opened again after a fork, where the parent's session is not valid.
    """

    name = "pkcs11"

    def __init__(self, *, library: str, token_label: str, key_label: str, pin: str):
        if not (library and token_label and pin):
            raise MasterKeyUnavailable(
                "PKCS#11 needs PORTAL_PKCS11_LIBRARY, PORTAL_PKCS11_TOKEN and "
                "PORTAL_PKCS11_PIN (see README)"
            )
        self.library = library
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin
        self._lock = _token_lock

    @property
    def key_id(self) -> str:
        return f"pkcs11:{self.token_label}/{self.key_label}"

    def _open_session(self):
        return _token_session(self.library, self.token_label, self._pin)

    def _key(self):
        import pkcs11
        from pkcs11 import KeyType

        try:
            return self._open_session().get_key(
                label=self.key_label, key_type=KeyType.AES
            )
        except pkcs11.NoSuchKey:
            raise MasterKeyUnavailable(
                f"no AES key labelled {self.key_label!r} in the token: run "
                "manage.py create_master_key"
            ) from None

    def has_key(self) -> bool:
        """Whether the token holds an AES key with this provider's label."""
        with self._lock:
            try:
                self._key()
            except MasterKeyUnavailable:
                return False
        return True

    def create_key(self) -> None:
        """Generate the master key in the token: sensitive and never extractable."""
        import pkcs11
        from pkcs11 import Attribute, KeyType

        with self._lock:
            session = self._open_session()
            try:
                session.get_key(label=self.key_label, key_type=KeyType.AES)
            except pkcs11.NoSuchKey:
                pass
            else:
                raise MasterKeyUnavailable(
                    f"the token already holds a key labelled {self.key_label!r}"
                )
            session.generate_key(
                KeyType.AES,
                KEY_BYTES * 8,
                label=self.key_label,
                store=True,
                template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
            )
        logger.warning("Created a master key in PKCS#11 token %s", self.token_label)

    def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            sealed = self._key().encrypt(
                data_key,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, associated_data, 128),
            )
        return nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock:
            key = self._key()
            try:
                return bytes(
                    key.decrypt(
                        wrapped[NONCE_BYTES:],
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(
                            wrapped[:NONCE_BYTES], associated_data, 128
                        ),
                    )
                )
            except pkcs11.PKCS11Error:
                # SoftHSM reports a failed GCM tag as a general error.
                raise UnwrapFailed(
                    "a data key does not open with this master key"
                ) from None


# One logged-in session per token and process, shared by every key label.
_token_lock = threading.RLock()
_sessions: dict[tuple[str, str], tuple[int, object]] = {}


def _token_session(library_path: str, token_label: str, pin: str):
    import pkcs11

    with _token_lock:
        opened = _sessions.get((library_path, token_label))
        if opened is not None and opened[0] == os.getpid():
            return opened[1]
        try:
            library = _pkcs11_library(library_path)
            token = library.get_token(token_label=token_label)
            session = token.open(user_pin=pin, rw=True)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            raise MasterKeyUnavailable(
                "the PKCS#11 token is already logged in by this process"
            ) from None
        except (pkcs11.PKCS11Error, OSError, RuntimeError) as error:
            raise MasterKeyUnavailable(
                f"the PKCS#11 token cannot be opened: {error_kind(error)}"
            ) from error
        _sessions[(library_path, token_label)] = (os.getpid(), session)
        return session


_libraries: dict[str, tuple[int, object]] = {}


def _pkcs11_library(path: str):
    """The module at ``path``: initialised once per process, again after a fork."""
    import pkcs11

    loaded = _libraries.get(path)
    if loaded is None:
        try:
            library = pkcs11.lib(path)
        except (pkcs11.PKCS11Error, OSError, RuntimeError) as error:
            # Reported above as a bare PKCS11Error, which names nothing.
            raise MasterKeyUnavailable(
                f"the PKCS#11 library {path} cannot be loaded: check "
                "PORTAL_PKCS11_LIBRARY"
            ) from error
    else:
        pid, library = loaded
        if pid != os.getpid():
            library.reinitialize()
    _libraries[path] = (os.getpid(), library)
    return library


_providers: dict[tuple, MasterKeyProvider] = {}
_providers_lock = threading.Lock()


def master_key_provider(*, create_if_missing: bool) -> MasterKeyProvider:
    """The configured provider (PORTAL_MASTER_KEY_PROVIDER), one per process."""
    choice = settings.PORTAL_MASTER_KEY_PROVIDER
    if choice == "file":
        if not settings.PORTAL_MASTER_KEY_FILE:
            raise MasterKeyUnavailable(
                "PORTAL_MASTER_KEY_FILE is required in production (see README)"
            )
        path = Path(settings.PORTAL_MASTER_KEY_FILE)
        if create_if_missing and not path.exists():
            if not settings.PORTAL_DEVELOPMENT_MASTER_KEY:
                raise MasterKeyUnavailable(
                    f"PORTAL_MASTER_KEY_FILE names {path}, where there is no master "
                    "key: correct the setting, or make a new key there with "
                    "manage.py create_master_key"
                )
            create_master_key_file(path)
        return FileMasterKey(path, require_private=not settings.DEVELOPMENT)

    if choice == "pkcs11":
        identity = (
            settings.PORTAL_PKCS11_LIBRARY,
            settings.PORTAL_PKCS11_TOKEN,
            settings.PORTAL_PKCS11_KEY_LABEL,
        )
        with _providers_lock:
            if identity not in _providers:
                _providers[identity] = Pkcs11MasterKey(
                    library=identity[0],
                    token_label=identity[1],
                    key_label=identity[2],
                    pin=environment.read("PORTAL_PKCS11_PIN") or "",
                )
            return _providers[identity]

    raise MasterKeyUnavailable(
        f"PORTAL_MASTER_KEY_PROVIDER must be 'file' or 'pkcs11', not {choice!r}"
    )
