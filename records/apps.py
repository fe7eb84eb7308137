import sys

from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Clinical records"

    def ready(self):
        # checks registers the checks; converters the record_id path
        # converter, before any URLconf (the pages' and the API's) is read.
        from records import checks, converters, crypto  # noqa: F401

        # The one command that makes the keys cannot require them first.
        if sys.argv[1:2] == ["create_master_key"]:
            return

        # Production refuses to start without its keys rather than failing
        # on the first chart; development creates them in the data folder.
        crypto.load_keyring(create_if_missing=crypto.may_create_keyring())
