"""python manage.py create_master_key — make the master key, then the keyring."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections, router

from ehr_portal.logging import error_kind
from records import crypto, keyproviders
from records.models import Patient


def _sealed_data_exists() -> bool:
    """Whether the database already holds patients sealed under some keyring.

    Raises DatabaseError when the database cannot be asked: an unreachable
    database may well hold them.
    """
    connection = connections[router.db_for_read(Patient)]
    if Patient._meta.db_table not in connection.introspection.table_names():
        # Not migrated yet: a new installation, with nothing sealed.
        return False
    return Patient.objects.exists()


class Command(BaseCommand):
    # The checks need the keys this command is about to make.
    requires_system_checks = []
    help = (
        "Create the master key (a 0600 file, or a non-extractable AES key in the "
        "PKCS#11 token) and a keyring wrapped by it. Refuses to replace either."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--new-installation",
            action="store_true",
            help="make a keyring even when the database cannot be reached to "
            "ask whether it already holds patients (a database not created yet)",
        )

    def handle(self, *args, new_installation=False, **options):
        keyring_path = Path(settings.PORTAL_KEYRING_FILE)
        if not keyring_path.exists():
            self._refuse_beside_sealed_data(keyring_path, new_installation)
        try:
            if settings.PORTAL_MASTER_KEY_PROVIDER == "file":
                path = Path(settings.PORTAL_MASTER_KEY_FILE)
                if not path.exists() and keyring_path.exists():
                    # A new key could never open a keyring another key wraps:
                    # the next command would fail, far from this mistake.
                    raise CommandError(
                        f"a keyring is already at {keyring_path}, wrapped by "
                        f"another master key, and no key file is at {path}: "
                        "check PORTAL_MASTER_KEY_FILE, or move the keyring to a "
                        "new master key with manage.py rewrap_keyring"
                    )
                if not path.exists():
                    keyproviders.create_master_key_file(path)
                    self.stdout.write(f"Master key file created: {path}")
                else:
                    self.stdout.write(f"Master key file already there, kept: {path}")
            elif keyring_path.exists():
                raise CommandError(
                    f"a keyring is already at {keyring_path}: its master key is "
                    "the one in the token that wraps it, and a new one could not "
                    "open it (to move to a new key: manage.py rewrap_keyring)"
                )
            else:
                provider = keyproviders.master_key_provider(create_if_missing=False)
                provider.create_key()
                self.stdout.write(f"Master key created in the token: {provider.key_id}")

            if not keyring_path.exists():
                provider = keyproviders.master_key_provider(create_if_missing=False)
                crypto.create_keyring_file(keyring_path, provider)
                self.stdout.write(f"Keyring created: {keyring_path}")
            else:
                self.stdout.write(
                    f"Keyring already there, left as it is: {keyring_path}"
                )
        except (keyproviders.MasterKeyUnavailable, crypto.KeyringUnavailable) as error:
            raise CommandError(str(error)) from error

    @staticmethod
    def _refuse_beside_sealed_data(keyring_path: Path, new_installation: bool) -> None:
        try:
            sealed = _sealed_data_exists()
        except DatabaseError as error:
            if new_installation:
                # Said so by the operator: the database is not created yet.
                return
            raise CommandError(
                f"no keyring at {keyring_path}, and the database cannot be asked "
                f"whether it already holds patients ({error_kind(error)}): "
                "check DATABASE_URL, or pass --new-installation for a database "
                "not created yet"
            ) from None
        if sealed:
            # Most likely a mistyped path: a fresh keyring beside the real one
            # would seal new records under keys the old ones do not open.
            raise CommandError(
                f"no keyring at {keyring_path}, but the database already holds "
                "patients sealed under another keyring, which a new one could "
                "not open: point PORTAL_KEYRING_FILE at the keyring in use"
            )
