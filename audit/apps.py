import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from audit import checks  # noqa: F401 (registers the audit checks)

        if settings.CELERY_TASK_ALWAYS_EAGER:
            logger.info("CELERY_BROKER_URL is not set: background tasks run in-process")
