"""Sign-in and sign-out leave audit events, whichever view caused them."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.dispatch import receiver

from accounts.services import (
    OTP_FAILURE_SENDER,
    SESSION_END_ATTRIBUTE,
    fold_username,
    record_failed_password_sign_in,
    start_session_clock,
)
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event


def _refused_while_locked(request) -> bool:
    # axes marks a request it refused because the account was already
    # locked, and counts no new failure for it (axes_failures_since_start
    # stays None); the LOCKOUT receiver records that attempt.
    return bool(getattr(request, "axes_locked_out", False)) and (
        getattr(request, "axes_failures_since_start", None) is None
    )


@receiver(user_logged_in)
def record_password_sign_in(sender, request, user, **kwargs):
    start_session_clock(request)
    record_event(
        actor=user,
        action=AuditAction.LOGIN,
        outcome=AuditOutcome.SUCCESS,
        purpose="password",
    )


@receiver(user_login_failed)
def record_failed_sign_in(sender, credentials, request=None, **kwargs):
    # Wrong one-time codes are audited as OTP events by the service that
    # checked them; they come through here only to reach the lockout count.
    if sender == OTP_FAILURE_SENDER or _refused_while_locked(request):
        return

    record_failed_password_sign_in(fold_username(request, credentials))


@receiver(user_logged_out)
def record_sign_out(sender, request, user, **kwargs):
    action = getattr(request, SESSION_END_ATTRIBUTE, AuditAction.LOGOUT)
    if user is not None and action is not None:
        record_event(actor=user, action=action, outcome=AuditOutcome.SUCCESS)


@receiver(user_locked_out)
def record_lockout(sender, request, username, ip_address, **kwargs):
    newly_locked = getattr(request, "axes_failures_since_start", None) is not None
    record_event(
        actor=None,
        action=AuditAction.LOCKOUT,
        outcome=AuditOutcome.DENIED,
        username=(username or "").strip().casefold(),
        reason="locked after repeated failures"
        if newly_locked
        else "sign-in refused while locked",
    )
