"""Gates for pages that are not about one patient: roles, and a fresh code."""

from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse

from accounts.services import seconds_since_otp
from audit.models import AuditAction, AuditOutcome
from audit.services import record_event


def refuse(request, *, record_type: str, reason: str):
    """Audit a refusal that is not about one patient, then raise 403."""
    record_event(
        actor=request.user,
        action=AuditAction.ACCESS_DENIED,
        outcome=AuditOutcome.DENIED,
        record_type=record_type,
        reason=reason,
    )
    raise PermissionDenied(reason)


def role_required(role, *, record_type: str):
    """Allow only users holding ``role``; refusals are audited like chart denials."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.user.is_authenticated and request.user.has_role(role):
                return view(request, *args, **kwargs)
            refuse(
                request, record_type=record_type, reason=f"requires role {role.value}"
            )

        return wrapped

    return decorator


def clinician_required(*, record_type: str):
    """Allow physicians and nurses only; refusals are audited."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.user.is_authenticated and request.user.is_clinician:
                return view(request, *args, **kwargs)
            refuse(request, record_type=record_type, reason="requires a clinical role")

        return wrapped

    return decorator


STEP_UP_WINDOW_SECONDS = 5 * 60


STEP_UP_NOTHING_DONE = (
    "Nothing was done yet: this needs a one-time code from the last five "
    "minutes. After the code, fill in the form again and send it; what you "
    "had entered was not kept."
)


def step_up_required(
    view=None, *, within: int = STEP_UP_WINDOW_SECONDS, return_to: str | None = None
):
    """Require a one-time code entered in the last ``within`` seconds.

    For exports and break-the-glass: a session left open on a ward computer
    is not enough to take records away. Anyone else is sent to
    ``/accounts/step-up/`` and back to this page (as a GET) afterwards, or to
    the page named ``return_to`` when this one only takes POSTs.
    """

    def decorator(view_function):
        @wraps(view_function)
        def wrapped(request, *args, **kwargs):
            age = seconds_since_otp(request.session)
            if age is not None and 0 <= age <= within:
                return view_function(request, *args, **kwargs)
            if return_to:
                # The form sent cannot be replayed after the code: say so on
                # the page the user comes back to, rather than leave them to
                # think it went through (or to send it again half empty).
                messages.warning(request, STEP_UP_NOTHING_DONE)
            target = reverse(return_to) if return_to else request.get_full_path()
            query = urlencode({"next": target})
            return redirect(f"{reverse('accounts:step_up')}?{query}")

        return wrapped

    return decorator(view) if view is not None else decorator
