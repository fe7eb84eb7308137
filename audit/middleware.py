"""Fail closed: when the audit trail cannot be written, no page is shown."""

import logging

from audit.services import AuditUnavailable
from ehr_portal.failure_pages import stopped_response

logger = logging.getLogger(__name__)


class AuditFailClosedMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, AuditUnavailable):
            return None
        logger.error("Request refused: the audit trail is unavailable")
        return stopped_response(
            request,
            status=503,
            template="audit_unavailable.html",
            detail="Records are unavailable: the audit trail cannot be written. "
            "Try again shortly.",
        )
