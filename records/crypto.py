"""Field encryption and blind indexes: the only module that touches PHI keys.

A sealed value is bytes: a format byte (2: AES-256-GCM), the data key's
version (two bytes, big-endian), the 96-bit nonce, fresh for every value, and
the ciphertext with its tag. The associated data binds the value to its table,
column and row (``table.column:`` and the row id, ``row_id``), so a ciphertext
copied to another row fails to open (45 CFR 164.312(a)(2)(iv), encryption;
164.312(c)(1), integrity).

Values sealed before it, text of the form ``a1.<version>.<base64(nonce || ct)>``
bound to the row id as text, still open (``open_stored``); ``rotate_keys``
seals them again in the binary format.

Envelope encryption: the keyring file (PORTAL_KEYRING_FILE) holds the data
keys and blind-index keys only wrapped by a master key, which lives in a
separate file or in a PKCS#11 token (``records.keyproviders``). A keyring in
the first format (raw keys) is still read, and is upgraded by ``rotate_keys``.
"""

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ehr_portal.logging import error_kind
from records import keyproviders

logger = logging.getLogger(__name__)

FORMAT_AES_GCM = 2
HEADER_BYTES = 3
# Two bytes name the version in a sealed value's header.
MAX_KEY_VERSION = 0xFFFF
# The earlier text format's name for AES-256-GCM.
ALGORITHM_AES_GCM = "a1"
NONCE_BYTES = 12
KEY_BYTES = 32
KEYRING_FORMAT = 2


class IntegrityError(Exception):
    """A sealed value failed authentication: tampered, moved, or wrong key."""


class UnknownAlgorithm(IntegrityError):
    """A sealed value names an algorithm this portal does not implement."""


class KeyringSuperseded(Exception):
    """The keyring was re-wrapped under a new master key; the copy is in force."""


class KeyringUnavailable(ImproperlyConfigured):
    """The keyring or its master key is missing; no PHI can be read or written."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


@dataclass(frozen=True)
class Keyring:
    """Unwrapped keys in memory. Versions are whole numbers, newest highest.

    ``index_keys`` may hold two versions while ``rotate_keys`` rebuilds the
    blind indexes: writes use the current one, searches try both.
    """

    data_keys: dict[int, bytes] = field(repr=False)
    current_version: int
    index_keys: dict[int, bytes] = field(repr=False)
    current_index_version: int
    dedupe_key: bytes = field(repr=False)
    created: dict[int, datetime.datetime | None] = field(default_factory=dict)
    rotation: dict | None = None
    # Set on a keyring copied by rewrap_keyring under a new master key: the
    # copy is the one to use, and this one must not change any more.
    superseded: dict | None = None
    wrapped: bool = True
    ciphers: dict[int, AESGCM] = field(init=False, repr=False, compare=False)
    ciphers_by_header: dict[bytes, AESGCM] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self):
        ciphers = {version: AESGCM(key) for version, key in self.data_keys.items()}
        object.__setattr__(self, "ciphers", ciphers)
        # Keyed by the header exactly as seal() writes it, so opening a value
        # finds its key without parsing the version.
        headers = {
            _header(version): cipher
            for version, cipher in ciphers.items()
            if 0 < version <= MAX_KEY_VERSION
        }
        object.__setattr__(self, "ciphers_by_header", headers)

    def cipher(self, version: int) -> AESGCM:
        try:
            return self.ciphers[version]
        except KeyError:
            raise IntegrityError(f"no data key with version {version}") from None

    @property
    def index_key(self) -> bytes:
        return self.index_keys[self.current_index_version]

    def current_key_age(self) -> datetime.timedelta | None:
        created = self.created.get(self.current_version)
        return None if created is None else _now() - created


_lock = threading.RLock()
_keyring: Keyring | None = None
_keyring_signature: tuple | None = None
_checked_at = 0.0
_refresh_seconds = 0.0


def _header(version: int) -> bytes:
    return bytes((FORMAT_AES_GCM, version >> 8, version & 0xFF))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _wrap_context(kind: str, version: int | str) -> bytes:
    # Bound into each wrapped key, so a wrapped key moved to another slot
    # (a data key posing as the index key, or as another version) fails.
    return f"ehr-portal:{kind}:{version}".encode()


def _wrap_entry(provider, kind: str, version, key: bytes, created) -> dict:
    return {
        "wrapped": _b64(provider.wrap(key, _wrap_context(kind, version))),
        "created": created.isoformat() if created else None,
    }


def keyring_document(ring: Keyring, provider) -> dict:
    """The keyring as stored: every key wrapped by the provider's master key."""
    return {
        "format": KEYRING_FORMAT,
        "master_key": provider.key_id,
        "current": ring.current_version,
        "data_keys": {
            str(version): _wrap_entry(
                provider, "data", version, key, ring.created.get(version)
            )
            for version, key in ring.data_keys.items()
        },
        "index_current": ring.current_index_version,
        "index_keys": {
            str(version): _wrap_entry(provider, "index", version, key, None)
            for version, key in ring.index_keys.items()
        },
        "dedupe_key": _wrap_entry(provider, "dedupe", 1, ring.dedupe_key, None),
        "rotation": ring.rotation,
        "superseded": ring.superseded,
    }


def new_keyring() -> Keyring:
    index_key = secrets.token_bytes(KEY_BYTES)
    return Keyring(
        data_keys={1: secrets.token_bytes(KEY_BYTES)},
        current_version=1,
        index_keys={1: index_key},
        current_index_version=1,
        dedupe_key=secrets.token_bytes(KEY_BYTES),
        created={1: _now()},
    )


def write_keyring(ring: Keyring, provider, path: Path | None = None) -> None:
    """Replace the keyring file atomically (mode 0600): readers see old or new."""
    path = Path(path or settings.PORTAL_KEYRING_FILE)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    document = keyring_document(ring, provider)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    reset_keyring_cache()


def create_keyring_file(path: Path, provider) -> None:
    """Write a fresh keyring wrapped by ``provider``, refusing to overwrite one."""
    if path.exists():
        raise KeyringUnavailable(f"a keyring already exists at {path}")
    write_keyring(new_keyring(), provider, path)
    logger.warning("Created a keyring at %s", path)


def _parse_created(text) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def _unwrap_all(document: dict, provider) -> Keyring:
    entries = [
        ("data", int(version), entry)
        for version, entry in document["data_keys"].items()
    ]
    entries += [
        ("index", int(version), entry)
        for version, entry in document["index_keys"].items()
    ]
    entries.append(("dedupe", 1, document["dedupe_key"]))

    keys, refused = {}, []
    for kind, version, entry in entries:
        raw = base64.b64decode(entry["wrapped"])
        try:
            keys[kind, version] = provider.unwrap(raw, _wrap_context(kind, version))
        except keyproviders.UnwrapFailed as error:
            refused.append((kind, version, error))
    if refused and not keys:
        raise refused[0][2]
    if refused:
        # The master key opens the keyring's other keys: the file, not the
        # master key, is what is wrong.
        kind, version, _error = refused[0]
        raise KeyringUnavailable(
            f"the keyring's {kind} key {version} does not open with the master "
            "key that opens its other keys: the keyring file is damaged or was "
            "edited; restore it from a backup"
        )

    return Keyring(
        data_keys={v: key for (kind, v), key in keys.items() if kind == "data"},
        current_version=int(document["current"]),
        index_keys={v: key for (kind, v), key in keys.items() if kind == "index"},
        current_index_version=int(document["index_current"]),
        dedupe_key=keys["dedupe", 1],
        created={
            int(version): _parse_created(entry.get("created"))
            for version, entry in document["data_keys"].items()
        },
        rotation=document.get("rotation"),
        superseded=document.get("superseded"),
    )


def _legacy_keyring(document: dict, path: Path) -> Keyring:
    """Read the first format (raw keys) so values sealed under it stay readable."""
    logger.warning(
        "The keyring at %s holds unwrapped keys (format 1): run manage.py "
        "rotate_keys to wrap them with the master key",
        path,
    )
    index_key = base64.b64decode(document["index_key"])
    # Its file time is the best record of when these keys were made.
    made = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC)
    data_keys = {
        int(version): base64.b64decode(key)
        for version, key in document["data_keys"].items()
    }
    return Keyring(
        data_keys=data_keys,
        current_version=int(document["current"]),
        index_keys={1: index_key},
        current_index_version=1,
        # Import tags made under format 1 used the index key; keeping it as
        # the dedupe key lets those imports stay idempotent.
        dedupe_key=index_key,
        created=dict.fromkeys(data_keys, made),
        wrapped=False,
    )


def _check(ring: Keyring) -> Keyring:
    if ring.current_version not in ring.data_keys:
        raise KeyringUnavailable("the keyring's current version has no key")
    if ring.current_index_version not in ring.index_keys:
        raise KeyringUnavailable("the keyring's current index version has no key")
    if not 0 < ring.current_version <= MAX_KEY_VERSION:
        raise KeyringUnavailable(
            f"data key versions run from 1 to {MAX_KEY_VERSION}, not "
            f"{ring.current_version}"
        )
    keys = [*ring.data_keys.values(), *ring.index_keys.values(), ring.dedupe_key]
    if any(len(key) != KEY_BYTES for key in keys):
        raise KeyringUnavailable("every key must be 256 bits")
    return ring


def parse_keyring(document: dict, path: Path, provider_factory) -> Keyring:
    try:
        if document.get("format") == 1:
            return _check(_legacy_keyring(document, path))
        if document.get("format") != KEYRING_FORMAT:
            raise KeyringUnavailable("the keyring file has an unknown format")
        return _check(_unwrap_all(document, provider_factory()))
    except keyproviders.UnwrapFailed as error:
        raise KeyringUnavailable(
            "the keyring does not open with the configured master key "
            f"(it was wrapped by {document.get('master_key')!r})"
        ) from error
    except keyproviders.MasterKeyUnavailable as error:
        raise KeyringUnavailable(str(error)) from error
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise KeyringUnavailable(
            f"the keyring file is malformed ({error_kind(error)})"
        ) from error


def may_create_keyring() -> bool:
    """Development, with the keyring at the path it chose itself (settings)."""
    return settings.DEVELOPMENT and settings.PORTAL_DEVELOPMENT_KEYRING


def load_keyring(*, create_if_missing: bool) -> Keyring:
    """Read and unwrap the keyring; development creates a missing one at its path.

    With a new keyring comes a new master key, made only where development
    chose its path (settings.PORTAL_DEVELOPMENT_MASTER_KEY). Raises
    KeyringUnavailable when the keyring or its master key is missing or wrong:
    the portal then refuses to work, and never falls back to plaintext.
    """
    path = Path(settings.PORTAL_KEYRING_FILE)
    if not path.exists():
        if not create_if_missing:
            raise KeyringUnavailable(
                f"no keyring at {path}: check PORTAL_KEYRING_FILE, or make one "
                "with manage.py create_master_key (see README)"
            )
        master_key = Path(settings.PORTAL_MASTER_KEY_FILE)
        if settings.PORTAL_MASTER_KEY_PROVIDER == "file" and master_key.exists():
            # A master key is made only with a keyring: this keyring went
            # missing, and new data keys would not open what it sealed.
            raise KeyringUnavailable(
                f"no keyring at {path}, but its master key is at {master_key}: "
                "restore the keyring from its backup (delete both only to start "
                "again with no data)"
            )
        try:
            provider = keyproviders.master_key_provider(create_if_missing=True)
            create_keyring_file(path, provider)
        except keyproviders.MasterKeyUnavailable as error:
            raise KeyringUnavailable(str(error)) from error

    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KeyringUnavailable(
            f"the keyring at {path} cannot be read ({error_kind(error)})"
        ) from error
    # A master key is made only with a new keyring: a new one could never
    # open a keyring that an earlier key wrapped.
    return parse_keyring(
        document,
        path,
        lambda: keyproviders.master_key_provider(create_if_missing=False),
    )


def _file_signature() -> tuple | None:
    try:
        stat = os.stat(settings.PORTAL_KEYRING_FILE)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def keyring() -> Keyring:
    """The keyring in force, reloaded when ``rotate_keys`` has replaced the file.

    The file is looked at no more than once per PORTAL_KEYRING_REFRESH_SECONDS,
    so a running portal picks up a new key version within that time. A
    replaced file that does not open, or that lacks a data key the loaded one
    holds, leaves the keys already loaded in force (logged as an error at each
    look): a running portal keeps one behaviour instead of failing at each
    look and serving from memory in between.
    """
    global _keyring, _keyring_signature, _checked_at
    if _keyring is not None:
        if time.monotonic() - _checked_at < _refresh_seconds:
            return _keyring
        _checked_at = time.monotonic()
        if _file_signature() == _keyring_signature:
            return _keyring

    with _lock:
        _remember_refresh_interval()
        signature = _file_signature()
        if _keyring is None or signature != _keyring_signature:
            try:
                loaded = load_keyring(create_if_missing=may_create_keyring())
            except KeyringUnavailable as error:
                if _keyring is None:
                    raise
                logger.error(
                    "The replaced keyring does not open (%s); the keys already "
                    "loaded stay in force",
                    error_kind(error),
                )
                return _keyring
            held = set(_keyring.data_keys) if _keyring is not None else set()
            dropped = sorted(held - set(loaded.data_keys))
            if dropped:
                # Data keys are never retired, so this is an older copy (a
                # backup put back): taken up, it would fail every value sealed
                # since as if it had been tampered with.
                logger.error(
                    "The replaced keyring lacks data key version(s) %s in use; "
                    "the keys already loaded stay in force",
                    ", ".join(map(str, dropped)),
                )
                return _keyring
            _keyring = loaded
            _keyring_signature = signature
            _checked_at = time.monotonic()
    return _keyring


def _remember_refresh_interval() -> None:
    # Read once per reload: a settings lookup on every seal costs more than
    # the AES-GCM operation itself.
    global _refresh_seconds
    _refresh_seconds = settings.PORTAL_KEYRING_REFRESH_SECONDS


def reset_keyring_cache() -> None:
    """Forget the loaded keyring (tests and key rotation reload it)."""
    global _keyring, _keyring_signature
    with _lock:
        _keyring = None
        _keyring_signature = None


def row_id(pk) -> bytes:
    """A row's primary key as the associated data names it: a UUID's 16 bytes."""
    if isinstance(pk, uuid.UUID):
        return pk.bytes
    return str(pk).encode()


def associated_data_of(prefix: bytes, pk) -> bytes:
    """What a binary-format value is bound to: ``table.column:`` and its row."""
    return prefix + row_id(pk)


def seal(plaintext: str, associated_data: bytes) -> bytes:
    ring = keyring()
    version = ring.current_version
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = ring.cipher(version).encrypt(
        nonce, plaintext.encode("utf-8"), associated_data
    )
    return _header(version) + nonce + ciphertext


def sealed_version(token) -> int:
    """The data-key version a sealed value names, without opening it."""
    token = _as_stored(token)
    if isinstance(token, bytes):
        return _binary_version(token)
    _algorithm, version, _payload = _split(token)
    return version


def _binary_version(token: bytes) -> int:
    _check_header(token)
    return int.from_bytes(token[1:HEADER_BYTES], "big")


def is_current(token) -> bool:
    """Whether a value is sealed in the binary format under the current key."""
    header = (
        bytes(token[:HEADER_BYTES]) if isinstance(token, bytes | memoryview) else b""
    )
    return header == _header(keyring().current_version)


def _as_stored(token):
    """Bytes for the binary format, text for the earlier one, as either arrives.

    PostgreSQL gives a value of the earlier format, stored before its column
    became binary, as the ASCII bytes of its text; SQLite gives it as text.
    """
    if isinstance(token, memoryview):
        token = token.tobytes()
    if isinstance(token, bytes) and token[:1].isalpha():
        try:
            return token.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError("the stored value is not a sealed value") from None
    if not isinstance(token, bytes | str):
        raise IntegrityError("the stored value is not a sealed value")
    return token


def _check_header(token: bytes) -> None:
    if not token:
        raise IntegrityError("the stored value is not a sealed value")
    if token[0] != FORMAT_AES_GCM:
        raise UnknownAlgorithm(
            f"unknown sealed-value format {token[0]}: this portal reads only "
            f"format {FORMAT_AES_GCM} (AES-256-GCM)"
        )
    if len(token) <= HEADER_BYTES + NONCE_BYTES:
        raise IntegrityError("the stored value is not a sealed value")


def _split(token: str) -> tuple[str, int, str]:
    try:
        algorithm, version, payload = token.split(".", 2)
        version_number = int(version)
    except (ValueError, AttributeError) as error:
        raise IntegrityError("the stored value is not a sealed value") from error
    if algorithm != ALGORITHM_AES_GCM:
        raise UnknownAlgorithm(
            f"unknown encryption algorithm {algorithm!r}: this portal reads only "
            f"{ALGORITHM_AES_GCM!r} (AES-256-GCM)"
        )
    return algorithm, version_number, payload


def open_stored(token, prefix: bytes, pk) -> str:
    """The plaintext of a value as the database gave it, for ``prefix`` and row ``pk``.

    Opens either format, each with its own associated data; IntegrityError
    (UnknownAlgorithm for a format or algorithm it does not know) unless the
    value authenticates.
    """
    token = _as_stored(token)
    if isinstance(token, bytes):
        return open_sealed(token, associated_data_of(prefix, pk))
    _algorithm, version, payload = _split(token)
    return _decrypt(_cipher_for(version), payload, prefix + str(pk).encode())


def open_sealed(token: bytes, associated_data: bytes) -> str:
    """The plaintext of a value in the binary format; IntegrityError unless it
    authenticates.

    A well-formed value under a key this process holds takes one short path;
    anything else (another format, a damaged header, a version written after
    a rotation this process has not seen yet) goes through the careful one.
    """
    cipher = keyring().ciphers_by_header.get(token[:HEADER_BYTES])
    if cipher is None or len(token) <= HEADER_BYTES + NONCE_BYTES:
        cipher = _cipher_for(_binary_version(token))
    return _authenticated_text(
        cipher,
        token[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES],
        token[HEADER_BYTES + NONCE_BYTES :],
        associated_data,
    )


def _authenticated_text(cipher: AESGCM, nonce, ciphertext, associated_data) -> str:
    try:
        plaintext = cipher.decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        raise IntegrityError(
            "a sealed value failed its integrity check (tampered, or moved "
            "from another row or column)"
        ) from None
    return plaintext.decode("utf-8")


def open_sealed_column(
    prefix: bytes, tokens: list, row_ids: list[bytes]
) -> list[str | None]:
    """The plaintexts of one column's sealed values, for many rows at once.

    Each value is opened with its own associated data, ``prefix`` (the
    table and column) followed by its row's id. For a page of rows: the
    keyring is looked up once and the AES-GCM work runs in one tight loop,
    which costs far less than the same openings spread among template
    rendering. A value that does not open on this path (damaged, moved,
    the earlier format, a key version not loaded yet) gives None: the
    caller opens it with ``open_stored``, which raises its own error or
    takes the careful path.
    """
    ciphers = keyring().ciphers_by_header
    start, end = HEADER_BYTES, HEADER_BYTES + NONCE_BYTES
    opened = []
    keep = opened.append
    for token, row in zip(tokens, row_ids, strict=True):
        try:
            plaintext = ciphers[token[:start]].decrypt(
                token[start:end], token[end:], prefix + row
            )
            keep(plaintext.decode())
        except (ValueError, TypeError, KeyError, InvalidTag):
            # ValueError covers a nonce too short and UnicodeDecodeError;
            # TypeError a value that is not bytes (None, the earlier format).
            keep(None)
    return opened


def _cipher_for(version: int) -> AESGCM:
    ring = keyring()
    if version not in ring.data_keys:
        # A newer version may have been written by a process that saw the
        # rotated keyring first: look at the file once more before failing.
        reset_keyring_cache()
        ring = keyring()
    return ring.cipher(version)


def _decrypt(cipher: AESGCM, payload: str, associated_data: bytes) -> str:
    """Open a value of the earlier text format, from its base64 payload."""
    try:
        raw = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError as error:  # binascii.Error is one
        raise IntegrityError("the stored value is not a sealed value") from error
    if len(raw) <= NONCE_BYTES:
        # Too short to hold a nonce: AES-GCM would call that a bad argument
        # (ValueError), but to the reader it is a damaged value like any other.
        raise IntegrityError("the stored value is not a sealed value")
    return _authenticated_text(
        cipher, raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data
    )


def normalise_for_index(value: str) -> str:
    """Fold case, accents and spacing so 'Zoë  O'Neil' finds 'zoe o'neil'."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _tag(key: bytes, purpose: str, value: str) -> str:
    message = f"{purpose}\x00{normalise_for_index(value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def blind_index(purpose: str, value: str) -> str:
    """A keyed, deterministic tag for exact search; reveals nothing without the key.

    The purpose separates index spaces, so equal values in two different
    columns (a family name that is also a given name) give different tags.
    """
    return _tag(keyring().index_key, purpose, value)


def blind_index_candidates(purpose: str, value: str) -> list[str]:
    """Tags under every index key in use: two while the indexes are rebuilt."""
    ring = keyring()
    versions = sorted(ring.index_keys, reverse=True)
    return [_tag(ring.index_keys[version], purpose, value) for version in versions]


def dedupe_tag(purpose: str, value: str) -> str:
    """A keyed tag for values that are never searched and cannot be recomputed.

    Import source ids are not kept, so their tags could not be rebuilt under
    a new index key; they use a key of their own that does not rotate.
    """
    return _tag(keyring().dedupe_key, purpose, value)


def reseal(token, prefix: bytes, pk) -> bytes | None:
    """The value sealed again under the current key in the binary format, or
    None if it already is."""
    if is_current(token):
        return None
    return seal(open_stored(token, prefix, pk), associated_data_of(prefix, pk))


def start_rotation(*, index_key: bool) -> dict:
    """Make a new data key (and index key) current, or return the rotation under way.

    The keyring records the rotation until ``finish_rotation``, so a run that
    was killed resumes the same rotation instead of starting another.
    """
    ring = keyring()
    if ring.rotation:
        return ring.rotation
    if ring.superseded:
        # A key added here would be missing from the re-wrapped copy, and
        # every value sealed under it unreadable once the portal switches.
        raise KeyringSuperseded(
            f"this keyring was re-wrapped into {ring.superseded['keyring']} "
            f"under master key {ring.superseded['master_key']}: point "
            "PORTAL_KEYRING_FILE and the master key settings at that pair "
            "(README, Replacing the master key) before rotating keys"
        )

    version = max(ring.data_keys) + 1
    if version > MAX_KEY_VERSION:
        raise KeyringUnavailable(
            f"the keyring has used all {MAX_KEY_VERSION} data key versions"
        )
    index_keys = dict(ring.index_keys)
    index_version = None
    if index_key:
        index_version = max(index_keys) + 1
        index_keys[index_version] = secrets.token_bytes(KEY_BYTES)
    rotation = {"data": version, "index": index_version, "started": _now().isoformat()}
    rotated = Keyring(
        data_keys={**ring.data_keys, version: secrets.token_bytes(KEY_BYTES)},
        current_version=version,
        index_keys=index_keys,
        current_index_version=index_version or ring.current_index_version,
        dedupe_key=ring.dedupe_key,
        created={**ring.created, version: _now()},
        rotation=rotation,
    )
    write_keyring(rotated, keyproviders.master_key_provider(create_if_missing=False))
    logger.info("Key rotation started: data key version %d is current", version)
    return rotation


def finish_rotation() -> None:
    """Close the rotation; index keys other than the current one are destroyed.

    Old data keys stay: backups sealed under them must remain readable.
    """
    ring = keyring()
    finished = Keyring(
        data_keys=ring.data_keys,
        current_version=ring.current_version,
        index_keys={ring.current_index_version: ring.index_key},
        current_index_version=ring.current_index_version,
        dedupe_key=ring.dedupe_key,
        created=ring.created,
        rotation=None,
    )
    write_keyring(finished, keyproviders.master_key_provider(create_if_missing=False))
    logger.info("Key rotation finished at data key version %d", ring.current_version)
