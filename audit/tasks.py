"""Celery tasks of the audit trail."""

import logging

from celery import shared_task

from audit.checkpoints import write_checkpoint

logger = logging.getLogger(__name__)


@shared_task(name="audit.tasks.write_audit_checkpoint")
def write_audit_checkpoint() -> int | None:
    """Scheduled by Celery beat (CELERY_BEAT_SCHEDULE); returns the event recorded."""
    path = write_checkpoint()
    if path is None:
        return None
    return int(path.stem.removeprefix("checkpoint-"))
