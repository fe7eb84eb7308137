"""Background work for records; payloads are opaque ids, never PHI."""

import logging

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import reverse

from accounts.roles import Role
from records import services
from records.key_rotation import sealed_models
from records.models import BreakGlassAccess, Patient

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
            f"{settings.PORTAL_PUBLIC_URL.rstrip('/')}"
            f"{reverse('review:break_glass_queue')}"
        ),
        from_email=None,
        recipient_list=recipients,
    )
    return len(recipients)


@shared_task(name="records.verify_chart_encryption")
def verify_chart_encryption(patient_id: str) -> dict:
    """Open every sealed value of one chart; report how many opened and failed.

    An integrity sweep after a restore or a rotation (45 CFR 164.312(c)(1)):
    the result names the patient by opaque id and holds counts only.
    """
    opened = failed = 0
    for model, fields in sealed_models():
        if model is Patient:
            rows = model._base_manager.filter(pk=patient_id)
        elif any(f.name == "patient" for f in model._meta.concrete_fields):
            rows = model._base_manager.filter(patient_id=patient_id)
        else:
            continue
        for row in rows:
            for field in fields:
                try:
                    getattr(row, field.attname)
                    opened += 1
                except Exception:  # noqa: BLE001 (any failure is counted, not shown)
                    failed += 1
    if failed:
        logger.warning(
            "Chart %s: %d sealed value(s) failed to open", patient_id, failed
        )
    return {"patient_id": str(patient_id), "opened": opened, "failed": failed}


@shared_task(name="records.purge_lapsed_note_drafts")
def purge_lapsed_note_drafts() -> int:
    """Scheduled daily by Celery beat (CELERY_BEAT_SCHEDULE); returns a count."""
    return services.purge_lapsed_note_drafts()
