from django.apps import AppConfig
from django.conf import settings


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Clinical records"

    def ready(self):
        from records import crypto

        # Production refuses to start without its keys rather than failing
        # on the first chart; development creates them in the data folder.
        crypto.load_keyring(create_if_missing=settings.DEVELOPMENT)
