"""Cross-cutting middleware: request context for the audit trail, and no-store."""

from ehr_portal import request_context


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
