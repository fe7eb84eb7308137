"""The page a request ends on when a safeguard stops it: HTML, or JSON for the API.

Either way it names the request id, for support to find the log line and the
audit event, and shows no patient data.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from rest_framework.exceptions import NotAuthenticated
from rest_framework.views import exception_handler

from ehr_portal import request_context

API_PREFIX = "/api/"
SESSION_GONE = (
    "Your session has ended (signed out, or ended after a time). Sign in again to "
    "go on."
)


def stopped_response(
    request,
    *,
    status: int,
    template: str,
    detail: str,
    context: dict | None = None,
    ask_database: bool = True,
):
    """The API's JSON refusal, or ``template`` with the request id and ``context``.

    With ``ask_database=False`` the page is rendered without the request, so
    no context processor runs: the menu's reads the user's roles from the
    database, which may be what failed.
    """
    request_id = request_context.current_request_id()
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": detail, "request_id": request_id}, status=status)
    values = {"request_id": request_id, **(context or {})}
    if not ask_database:
        return HttpResponse(render_to_string(template, values), status=status)
    return render(request, template, values, status=status)


# Kept in the fresh session a sign-out leaves behind: this browser's session
# ended, as opposed to one that never signed in.
SESSION_ENDED_KEY = "_portal_session_ended"


def names_a_lost_session(request) -> bool:
    """True when the browser's session cookie names a session that has ended.

    Either it is gone (ended by the sweep of abandoned sessions, by an
    administrator, or long expired), or it is the one a sign-out left, in
    this tab or another. Not for a live session that never signed in (the
    sign-in page starts one): that visitor has had no session end.
    """
    sent = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not sent:
        return False
    # Loading drops a key that names no live session (deleted or expired).
    ended = request.session.get(SESSION_ENDED_KEY, False)
    return ended or request.session.session_key != sent


def api_exception_handler(exc, context):
    """DRF's error answers, each naming its request id beside its detail.

    Only answers with a ``detail``: a form's field errors keep their shape.
    """
    response = exception_handler(exc, context)
    request = context.get("request")
    reason = getattr(request, "session_end_reason", None)
    if isinstance(exc, NotAuthenticated):
        if reason:
            # The session ended with this request (idle, or its 12 hours):
            # say so, rather than that no credentials came with it.
            response.data["detail"] = reason
        elif request is not None and names_a_lost_session(request):
            # A session cookie came, for a session that is gone: signed out
            # in another tab, ended by an administrator, or long expired.
            response.data["detail"] = SESSION_GONE
    data = response.data if response is not None else None
    if isinstance(data, dict) and "detail" in data:
        data["request_id"] = request_context.current_request_id()
    return response
