"""Replacing the master key: the keyring re-wrapped, no sealed value touched.

The master key only wraps the keyring's keys, so replacing it means writing
the same keys wrapped by the new master key. The new keyring goes to a file
of its own: running processes keep reading the old pair until the operator
points the portal at the new one, and the old master key is destroyed only
after that (README, "Replacing the master key").
"""

import dataclasses
import datetime
import json
import logging
from pathlib import Path

from django.conf import settings

from ehr_portal import environment
from records import crypto, keyproviders

logger = logging.getLogger(__name__)


class RewrapRefused(Exception):
    """The keyring cannot be re-wrapped now; the message says why."""


def new_file_master_key(path: Path) -> keyproviders.FileMasterKey:
    """The master key in ``path``, made there (0600) if the file does not exist."""
    path = Path(path)
    if not path.exists():
        keyproviders.create_master_key_file(path)
    return keyproviders.FileMasterKey(path, require_private=True)


def new_token_master_key(key_label: str) -> keyproviders.Pkcs11MasterKey:
    """A key labelled ``key_label`` in the configured token, generated if missing."""
    provider = keyproviders.Pkcs11MasterKey(
        library=settings.PORTAL_PKCS11_LIBRARY,
        token_label=settings.PORTAL_PKCS11_TOKEN,
        key_label=key_label,
        pin=environment.read("PORTAL_PKCS11_PIN") or "",
    )
    if not provider.has_key():
        provider.create_key()
    return provider


def check_rewrap_possible(target: Path) -> crypto.Keyring:
    """The keyring in force, if it may be re-wrapped into ``target`` now.

    Checked before any new master key is made, so that a refusal leaves
    nothing behind.
    """
    target = Path(target)
    if target.exists():
        raise RewrapRefused(f"a file already exists at {target}")
    ring = crypto.load_keyring(create_if_missing=False)
    if ring.rotation:
        raise RewrapRefused("a key rotation is unfinished: run rotate_keys first")
    return ring


def rewrap_keyring(target: Path, new_master_key) -> crypto.Keyring:
    """Write the keyring in force to ``target``, wrapped by ``new_master_key``.

    Refuses to overwrite a file, to re-wrap under the key already in use and
    to run while a key rotation is unfinished (a data key added after the
    copy would be missing from it). The new file is read back with the new
    master key alone, and the keyring in force is then marked as superseded
    by it, so that rotate_keys refuses to add a key the copy would lack.
    """
    target = Path(target)
    ring = check_rewrap_possible(target)
    current = keyproviders.master_key_provider(create_if_missing=False)
    if ring.wrapped and current.key_id == new_master_key.key_id:
        raise RewrapRefused("that is the master key already in use")

    crypto.write_keyring(ring, new_master_key, target)

    reopened = crypto.parse_keyring(
        json.loads(target.read_text()), target, lambda: new_master_key
    )
    if _keys(reopened) != _keys(ring):
        target.unlink()
        raise RewrapRefused("the re-wrapped keyring did not read back the same")

    superseded = {
        "keyring": str(target),
        "master_key": new_master_key.key_id,
        "at": datetime.datetime.now(tz=datetime.UTC).isoformat(),
    }
    crypto.write_keyring(dataclasses.replace(ring, superseded=superseded), current)
    logger.info("Keyring re-wrapped under master key %s", new_master_key.key_id)
    return reopened


def _keys(ring: crypto.Keyring) -> tuple:
    return (
        ring.data_keys,
        ring.current_version,
        ring.index_keys,
        ring.current_index_version,
        ring.dedupe_key,
    )
