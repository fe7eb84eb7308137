import sys

from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Clinical records"

    def ready(self):
        from records import checks, crypto  # noqa: F401 (registers the checks)

        # The one command that makes the keys cannot require them first.
        if sys.argv[1:2] == ["create_master_key"]:
            return

        # Production refuses to start without its keys rather than failing
        # on the first chart; development creates them in the data folder.
        crypto.load_keyring(create_if_missing=crypto.may_create_keyring())
