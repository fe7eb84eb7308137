"""Account state changes and their audit events."""

import logging

import django_otp
from django.contrib.auth import get_user_model

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event

logger = logging.getLogger(__name__)


def fold_username(request, credentials) -> str:
    """The one spelling of a username that lockout counts and sign-in uses.

    ``Nurse.Jones``, ``nurse.jones`` and `` nurse.jones `` are one account, so
    an attacker cannot get fresh failure counters by changing case or spaces.
    """
    username = (credentials or {}).get(get_user_model().USERNAME_FIELD) or ""
    return username.strip().casefold()


def verify_second_factor(request, token: str) -> bool:
    """Check a one-time code for the signed-in user and mark the session verified."""
    user = request.user
    device = django_otp.match_token(user, token.strip())
    if device is None:
        record_event(
            actor=user, action=AuditAction.OTP_FAILED, outcome=AuditOutcome.FAILURE
        )
        return False

    django_otp.login(request, device)
    # django_otp.login() keeps the session key; a new one stops a session id
    # captured before the second factor from inheriting the verified state.
    request.session.cycle_key()
    record_event(
        actor=user,
        action=AuditAction.OTP_VERIFIED,
        outcome=AuditOutcome.SUCCESS,
        purpose="totp",
    )
    return True


def has_confirmed_device(user) -> bool:
    return any(django_otp.devices_for_user(user, confirmed=True))
