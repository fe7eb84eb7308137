"""Landing page and error pages that carry a request id and nothing else."""

import sys

from django.contrib.sessions.exceptions import SessionInterrupted
from django.db import InterfaceError, OperationalError
from django.shortcuts import redirect, render

from accounts.middleware import typed_text_given_back
from accounts.roles import Role
from ehr_portal import request_context
from ehr_portal.failure_pages import stopped_response


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
# The view may have saved before the failure came (a note, then the session
# save): a retry must not be told nothing was kept, or it writes twice.
MAY_HAVE_BEEN_SAVED = (
    " If you were saving something (a note, a change), it may have been saved "
    "before this happened: check before sending it again."
)


def server_error(request):
    # Django calls this while handling the exception, so it can be read here.
    # A lost or refused database connection (a restart, a failover) is not a
    # fault in the portal: the next request reconnects.
    exception = sys.exc_info()[1]
    if isinstance(exception, OperationalError | InterfaceError):
        return _without_the_database(request)
    return _error_page(request, "500.html", 500)


def _without_the_database(request):
    """The 503 answer, made without a query: the connection is the problem."""
    return _stopped_midway(
        request,
        status=503,
        template="database_unavailable.html",
        detail=DATABASE_UNAVAILABLE,
        ask_database=False,
    )


def _stopped_midway(request, *, status, template, detail, ask_database=True):
    """A request stopped after its view may have run: for one that sent a
    change (a POST), the answer adds that the change may have been saved."""
    sent_changes = request.method not in ("GET", "HEAD", "OPTIONS")
    return stopped_response(
        request,
        status=status,
        template=template,
        detail=detail + (MAY_HAVE_BEEN_SAVED if sent_changes else ""),
        context={"sent_changes": sent_changes},
        ask_database=ask_database,
    )


SESSION_INTERRUPTED = (
    "Your session ended while this request was being answered (signed out in "
    "another tab or window, or by an administrator). Sign in again."
)


def bad_request(request, exception=None):
    if isinstance(exception, SessionInterrupted):
        # Django's word for it: the session row went away before this
        # response could save it. Not the user's mistake; say what happened.
        # The view has run by then: a note it saved stays saved. 403, as for
        # any request of a session that is gone: API clients sign in again
        # on it, where a 400 would say their request was malformed.
        return _stopped_midway(
            request,
            status=403,
            template="session_interrupted.html",
            detail=SESSION_INTERRUPTED,
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
