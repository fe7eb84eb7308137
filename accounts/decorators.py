"""Role gates for pages that are not about one patient (audit screens, exports)."""

from functools import wraps

from django.core.exceptions import PermissionDenied

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
