"""The API's request brake, failing closed when its counter cannot be reached."""

import logging
import time

from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.throttling import UserRateThrottle

from audit.models import AuditAction, AuditOutcome
from audit.services import record_event
from ehr_portal.logging import error_kind

logger = logging.getLogger(__name__)


class CounterUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the API is unavailable for a moment; try again shortly"
    default_code = "counter_unavailable"


class PortalUserRateThrottle(UserRateThrottle):
    """DRF's per-user rate, with a plain 503 when the cache is down.

    The counter lives in the cache (Redis in production). Without it the
    brake on bulk reading is gone, so the API answers nothing rather than
    everything, and says so instead of failing with a bare 500.
    """

    def timer(self) -> float:
        # DRF keeps time.time as a class attribute, fixed when its module is
        # first imported; looked up at each call, the clock is whatever
        # time.time is then (a test's frozen clock included, and only then).
        return time.time()

    def allow_request(self, request, view):
        try:
            allowed = super().allow_request(request, view)
        except Exception as error:
            logger.error("API rate counter unavailable (%s)", error_kind(error))
            _record_refusal(request, view, "API rate counter unavailable")
            raise CounterUnavailable from error
        if not allowed:
            # A user at the brake may be harvesting charts: the trail shows
            # each request turned away, as it does for the search page's.
            _record_refusal(request, view, "API rate exceeded")
        return allowed


def _record_refusal(request, view, reason: str) -> None:
    patient_id = getattr(view, "kwargs", {}).get("patient_id")
    match = getattr(request, "resolver_match", None)
    record_event(
        actor=request.user,
        action=AuditAction.ACCESS_DENIED,
        outcome=AuditOutcome.DENIED,
        patient_ref="" if patient_id is None else str(patient_id),
        record_type="API",
        reason=f"{reason} ({match.url_name})" if match else reason,
    )
