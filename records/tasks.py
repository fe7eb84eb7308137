"""Background work for records; payloads are opaque ids, never PHI."""

import logging

from celery import shared_task
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import reverse

from accounts.roles import Role
from records.models import BreakGlassAccess

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=10, default_retry_delay=30)
def alert_compliance_of_break_glass(self, access_id: str) -> int:
    """E-mail every compliance officer that a break-the-glass access needs review.

    The message names the clinician and links to the review queue; it carries
    no patient identity, since e-mail leaves the portal's protection.
    """
    access = BreakGlassAccess.objects.select_related("clinician").get(pk=access_id)
    recipients = list(
        get_user_model()
        .objects.filter(groups__name=Role.COMPLIANCE_OFFICER.value, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if not recipients:
        logger.warning(
            "No compliance officer has an e-mail address for alert %s", access_id
        )
        return 0

    send_mail(
        subject="EHR Portal: break-the-glass access to review",
        message=(
            f"User {access.clinician.get_username()} used break-the-glass access at "
            f"{access.started_at:%Y-%m-%d %H:%M} UTC. Review it in the portal: "
            f"{reverse('review:break_glass_queue')}"
        ),
        from_email=None,
        recipient_list=recipients,
    )
    return len(recipients)
