"""Landing page and error pages that carry a request id and nothing else."""

import sys

from django.contrib.sessions.exceptions import SessionInterrupted
from django.db import InterfaceError, OperationalError
from django.shortcuts import redirect, render

from accounts.middleware import typed_text_given_back
from accounts.roles import Role
from ehr_portal import request_context
from ehr_portal.failure_pages import API_PREFIX, stopped_response


def home(request):
    user = request.user
    if user.is_clinician:
        return redirect("records:patient_list")
    if user.has_role(Role.COMPLIANCE_OFFICER):
        return redirect("audit:events")
    return render(request, "home.html")


# What the API says for each, in DRF's words, where a page shows its template.
API_DETAILS = {
    400: "Bad request.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    500: "A server error occurred.",
}


def _error_page(request, template: str, status: int):
    # An address under /api/ that no route matches (a malformed patient id)
    # never reaches DRF: its client still expects JSON.
    return stopped_response(
        request, status=status, template=template, detail=API_DETAILS[status]
    )


def permission_denied(request, exception=None):
    return _error_page(request, "403.html", 403)


def page_not_found(request, exception=None):
    return _error_page(request, "404.html", 404)


DATABASE_UNAVAILABLE = (
    "Records are temporarily unavailable: the database could not be reached. "
    "Try again in a moment."
)


def server_error(request):
    # Django calls this while handling the exception, so it can be read here.
    # A lost or refused database connection (a restart, a failover) is not a
    # fault in the portal: the next request reconnects.
    exception = sys.exc_info()[1]
    if isinstance(exception, OperationalError | InterfaceError):
        return stopped_response(
            request,
            status=503,
            template="database_unavailable.html",
            detail=DATABASE_UNAVAILABLE,
        )
    return _error_page(request, "500.html", 500)


SESSION_INTERRUPTED = (
    "Your session ended while this request was being answered (signed out in "
    "another tab or window, or by an administrator). Sign in again."
)
MAY_HAVE_BEEN_SAVED = (
    " What you sent may have been saved before it ended: check before sending it again."
)


def bad_request(request, exception=None):
    if isinstance(exception, SessionInterrupted):
        # Django's word for it: the session row went away before this
        # response could save it. Not the user's mistake; say what happened.
        # The view has run by then: a note it saved stays saved.
        sent_changes = request.method not in ("GET", "HEAD", "OPTIONS")
        detail = SESSION_INTERRUPTED + (MAY_HAVE_BEEN_SAVED if sent_changes else "")
        if request.path.startswith(API_PREFIX):
            return stopped_response(request, status=400, template="", detail=detail)
        return render(
            request,
            "session_interrupted.html",
            {
                "request_id": request_context.current_request_id(),
                "sent_changes": sent_changes,
            },
            status=400,
        )
    return _error_page(request, "400.html", 400)


def csrf_failure(request, reason=""):
    # A form of typed text from a page of an ended session (signed out and
    # in again in another tab) has a token nothing accepts any more: its
    # text comes back rather than being dropped. Nothing is done with it.
    given_back = typed_text_given_back(request)
    if given_back is not None:
        return given_back
    return render(
        request,
        "403_csrf.html",
        {"request_id": request_context.current_request_id()},
        status=403,
    )
