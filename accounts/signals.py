"""Sign-in and sign-out leave audit events, whichever view caused them."""

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.dispatch import receiver

from accounts.services import fold_username
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event

UNKNOWN_USERNAME = "(unknown username)"


@receiver(user_logged_in)
def record_password_sign_in(sender, request, user, **kwargs):
    record_event(
        actor=user,
        action=AuditAction.LOGIN,
        outcome=AuditOutcome.SUCCESS,
        purpose="password",
    )


@receiver(user_login_failed)
def record_failed_sign_in(sender, credentials, request=None, **kwargs):
    # Only a username that names an account is kept: people type passwords
    # into the username box, and the audit trail must not collect them.
    username = fold_username(request, credentials)
    if not get_user_model().objects.filter(username=username).exists():
        username = UNKNOWN_USERNAME
    record_event(
        actor=None,
        action=AuditAction.LOGIN_FAILED,
        outcome=AuditOutcome.FAILURE,
        username=username,
        purpose="password",
    )


@receiver(user_logged_out)
def record_sign_out(sender, request, user, **kwargs):
    if user is not None:
        record_event(
            actor=user, action=AuditAction.LOGOUT, outcome=AuditOutcome.SUCCESS
        )


@receiver(user_locked_out)
def record_lockout(sender, request, username, ip_address, **kwargs):
    record_event(
        actor=None,
        action=AuditAction.LOCKOUT,
        outcome=AuditOutcome.DENIED,
        username=(username or "").strip().casefold(),
    )
