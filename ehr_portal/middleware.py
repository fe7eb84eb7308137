"""Cross-cutting middleware: request context for the audit trail, and no-store."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.shortcuts import render
from django.utils import timezone

from ehr_portal import request_context
from ehr_portal.failure_pages import API_PREFIX


class RequestContextMiddleware:
    """Give each request an id, its socket address and a device fingerprint."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        context = request_context.from_request(request)
        request.audit_context = context
        token = request_context.activate(context)
        try:
            response = self.get_response(request)
        finally:
            request_context.deactivate(token)
        response["X-Request-ID"] = context.request_id
        return response


class NoStoreMiddleware:
    """Tell browsers and proxies to keep no copy of any page but static files.

    Every page past sign-in may show PHI, and a shared workstation's cache or
    back button must not bring a chart back after sign-out.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith("/static/"):
            response["Cache-Control"] = "no-store, max-age=0"
            response["Pragma"] = "no-cache"
        return response


class DisplayTimeZoneMiddleware:
    """Show dates in the hospital's zone, so a 2 a.m. visit keeps its own date."""

    def __init__(self, get_response):
        self.get_response = get_response
        try:
            self.zone = zoneinfo.ZoneInfo(settings.PORTAL_TIME_ZONE)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ImproperlyConfigured(
                f"PORTAL_TIME_ZONE is not a known time zone: {error}"
            ) from error

    def __call__(self, request):
        timezone.activate(self.zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


class MethodNotAllowedPageMiddleware:
    """Give a browser a readable page instead of an empty 405."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code == 405
            and not response.content
            and not request.path.startswith(API_PREFIX)
        ):
            page = render(request, "405.html", status=405)
            page["Allow"] = response.get("Allow", "")
            return page
        return response
