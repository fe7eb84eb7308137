"""Sealed data that cannot be opened stops the request visibly, and on the record.

A stored value that fails its integrity check (tampered, or moved from another
row) and a keyring that cannot be loaded are failures of a security control:
each ends the request with a page that names the request id and shows no
patient data, an ERROR log line, and an audit event where the trail can be
written (ASVS V16.3.4).
"""

import logging

from audit.models import AuditAction, AuditOutcome
from audit.services import AuditUnavailable, record_event
from ehr_portal.failure_pages import stopped_response
from ehr_portal.logging import error_kind
from records import crypto

logger = logging.getLogger(__name__)

# exception -> (audit action, HTTP status, page, what the user is told)
FAILURES = (
    (
        crypto.KeyringUnavailable,
        AuditAction.KEYS_UNAVAILABLE,
        503,
        "records/keys_unavailable.html",
        "Records are unavailable: the encryption keys cannot be loaded.",
    ),
    (
        crypto.IntegrityError,
        AuditAction.INTEGRITY_FAILURE,
        500,
        "records/integrity_failure.html",
        "A stored record failed its integrity check and was not shown.",
    ),
)


class SealedDataFailureMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        failure = next((f for f in FAILURES if isinstance(exception, f[0])), None)
        if failure is None:
            return None
        _kind, action, status, template, message = failure

        # The exception's own message never reaches the log: it names no PHI
        # today, but a log line is no place to find out otherwise.
        logger.error("Request stopped: %s", error_kind(exception))
        _record(request, action)

        return stopped_response(
            request, status=status, template=template, detail=message
        )


def _record(request, action: AuditAction) -> None:
    match = getattr(request, "resolver_match", None)
    patient_ref = str(match.kwargs.get("patient_id", "")) if match else ""
    try:
        record_event(
            actor=getattr(request, "user", None),
            action=action,
            outcome=AuditOutcome.FAILURE,
            patient_ref=patient_ref,
            record_type=match.view_name if match else "",
            reason=f"{request.method} request stopped",
        )
    except AuditUnavailable:
        logger.error("The failure could not be recorded: the audit trail is down")
