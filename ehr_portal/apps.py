from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "ehr_portal"
    verbose_name = "EHR Portal"

    def ready(self):
        from ehr_portal import checks  # noqa: F401 (registers the hipaa checks)
