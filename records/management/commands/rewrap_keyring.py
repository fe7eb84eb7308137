"""python manage.py rewrap_keyring — the keyring wrapped by a new master key."""

import getpass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from records import crypto, keyproviders
from records.master_key import (
    RewrapRefused,
    check_rewrap_possible,
    new_file_master_key,
    new_token_master_key,
    rewrap_keyring,
)


class Command(BaseCommand):
    # The checks would open the keyring this command is about to copy.
    requires_system_checks = []
    help = (
        "Write the keyring in force to a new file, wrapped by a new master key "
        "(a new key file, or a new key in the PKCS#11 token). No sealed value "
        "changes. Then point PORTAL_KEYRING_FILE and the master key settings at "
        "the new pair, restart, and destroy the old master key."
    )

    def add_arguments(self, parser):
        parser.add_argument("keyring", help="path of the new keyring file")
        new_key = parser.add_mutually_exclusive_group(required=True)
        new_key.add_argument(
            "--master-key-file",
            help="the new master key file (made, mode 0600, if it does not exist)",
        )
        new_key.add_argument(
            "--pkcs11-key-label",
            help="label of the new key in the configured token (made if missing)",
        )

    def handle(self, *args, keyring, master_key_file, pkcs11_key_label, **options):
        try:
            check_rewrap_possible(keyring)
            if master_key_file and _same_file(master_key_file, keyring):
                raise RewrapRefused("the master key and the keyring need two files")
            if master_key_file:
                new_master_key = new_file_master_key(master_key_file)
            else:
                new_master_key = new_token_master_key(pkcs11_key_label)
            rewrap_keyring(keyring, new_master_key)
        except (
            RewrapRefused,
            crypto.KeyringUnavailable,
            keyproviders.MasterKeyUnavailable,
        ) as error:
            raise CommandError(str(error)) from error

        # A key change is a security event (45 CFR 164.312(b)); the event names
        # the operator's account and the key's fingerprint, never key material.
        record_event(
            actor=f"system:rewrap_keyring ({getpass.getuser()})",
            action=AuditAction.MASTER_KEY_REPLACED,
            outcome=AuditOutcome.SUCCESS,
            record_type="Keyring",
            reason=f"new master key {new_master_key.key_id}",
        )
        setting = (
            f"PORTAL_MASTER_KEY_FILE={master_key_file}"
            if master_key_file
            else f"PORTAL_PKCS11_KEY_LABEL={pkcs11_key_label}"
        )
        self.stdout.write(
            f"Keyring re-wrapped under {new_master_key.key_id}: {keyring}\n"
            f"Next: set PORTAL_KEYRING_FILE={keyring} and {setting}, restart every "
            "web process and worker, then destroy the old master key. Run no "
            "rotate_keys before the switch."
        )


def _same_file(first: str, second: str) -> bool:
    # Spelled differently ("a/./k", "a/../a/k"), a path can still be the same.
    return Path(first).resolve() == Path(second).resolve()
