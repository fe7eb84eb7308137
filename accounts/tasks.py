"""Celery tasks of accounts and sessions."""

import logging

from celery import shared_task

from accounts.services import end_abandoned_sessions

logger = logging.getLogger(__name__)


@shared_task(name="accounts.end_abandoned_sessions")
def end_abandoned_sessions_task() -> int:
    """Scheduled by Celery beat (CELERY_BEAT_SCHEDULE); returns how many ended."""
    return end_abandoned_sessions()
