"""Fail closed: when the audit trail cannot be written, no page is shown."""

import logging

from django.http import JsonResponse
from django.shortcuts import render

from audit.services import AuditUnavailable
from ehr_portal import request_context

logger = logging.getLogger(__name__)


class AuditFailClosedMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, AuditUnavailable):
            logger.error("Request refused: the audit trail is unavailable")
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {"detail": "Records are unavailable: the audit trail cannot "
                     "be written. Try again shortly."},
                    status=503,
                )  # fmt: skip
            return render(
                request,
                "audit_unavailable.html",
                {"request_id": request_context.current_request_id()},
                status=503,
            )
        return None
