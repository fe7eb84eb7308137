"""The Celery application; tasks carry opaque ids only, never PHI."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ehr_portal.settings")

app = Celery("ehr_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
