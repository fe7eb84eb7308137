from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "ehr_portal"
    verbose_name = "EHR Portal"

    def ready(self):
        from django.db.backends.signals import connection_created

        from ehr_portal import checks  # noqa: F401 (registers the hipaa checks)
        from ehr_portal.database_files import keep_sqlite_file_private

        connection_created.connect(keep_sqlite_file_private)
