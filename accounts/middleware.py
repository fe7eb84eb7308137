"""Deny by default, and end sessions that sit idle or run too long.

A view that forgets a decorator still cannot be reached with a password
alone, because the check runs here for every path but the few listed.
"""

import logging
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from session_security.middleware import SessionSecurityMiddleware

from accounts.decorators import refuse
from accounts.services import (
    SESSION_END_ATTRIBUTE,
    end_session,
    last_activity,
    record_activity,
    session_end_due,
)
from audit.models import AuditAction
from ehr_portal.failure_pages import (
    API_PREFIX,
    SESSION_ENDED_KEY,
    SESSION_GONE,
    names_a_lost_session,
)

logger = logging.getLogger(__name__)

API_DOCS_PATH = "/api/docs/"
OPEN_PATH_PREFIXES = (
    "/static/",
    "/accounts/login/",
    "/favicon.ico",
    "/session_security/ping/",
)
PASSWORD_STEP_PATHS = (
    "/accounts/verify/",
    "/accounts/enrol/",
    "/accounts/logout/",
    # A passkey can stand in for the code, so its ceremony sits at this step.
    "/webauthn/authentication/",
    "/webauthn/jsi18n/",
)
ADMIN_PREFIX = "/admin/"
SIGNED_OUT_IDLE = (
    "You were signed out because nothing happened for a while. Sign in again to go on."
)
SESSION_LIMIT_REACHED = (
    "Your session reached its time limit and was ended. Sign in again to go on."
)


def _return_to(request) -> str:
    """Where to go once signed in: this page, or for a form sent, its page.

    A form posted after the session ended (say, a note after an idle
    sign-out) cannot be replayed: signing in and then asking for its address
    would meet "not available this way". The page it was sent from, when it
    is one of the portal's own, is where the user picks up again.
    """
    if request.method in ("GET", "HEAD"):
        return request.get_full_path()
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        parts = urlsplit(referer)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return reverse("home")


def typed_text_given_back(request):
    """For text typed on one of the portal's pages and sent after the session
    it was opened in ended: the page its view gives back
    (``view.when_signed_out``), else None.

    Asked when nobody is signed in, when a new sign-in still waits for its
    code, and when the form's CSRF token belonged to an ended session. Only
    for a post the browser says came from the portal itself (Origin): a page
    elsewhere could otherwise post any text and have it shown under the
    portal's name.
    """
    if request.method != "POST":
        return None
    if request.headers.get("Origin") != f"{request.scheme}://{request.get_host()}":
        return None
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    give_back = getattr(match.func, "when_signed_out", None)
    if give_back is None:
        return None
    return give_back(request, *match.args, **match.kwargs)


def _session_gone_unexplained(request) -> bool:
    # The browser names a session that no longer exists (ended by the sweep
    # of abandoned sessions, by an administrator, or long expired), and this
    # request did not end it itself, which says why on its own.
    return not hasattr(request, SESSION_END_ATTRIBUTE) and names_a_lost_session(request)


class VerifiedSessionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        # The API answers for itself (403 as JSON, from DRF's default
        # permission class, which demands the same verified second factor),
        # never a redirect. Its documentation is a page people read, and is
        # signed in to as every other page is.
        if path.startswith(OPEN_PATH_PREFIXES) or (
            path.startswith(API_PREFIX) and not path.startswith(API_DOCS_PATH)
        ):
            return self.get_response(request)

        user = request.user
        if not user.is_authenticated:
            given_back = typed_text_given_back(request)
            if given_back is not None:
                return given_back
            if _session_gone_unexplained(request):
                messages.info(request, SESSION_GONE)
                # Said once: the next page a signed-out visitor opens is not
                # told again.
                request.session.pop(SESSION_ENDED_KEY, None)
            return redirect(
                f"{reverse('accounts:login')}?next={quote(_return_to(request))}"
            )

        if path.startswith(PASSWORD_STEP_PATHS):
            return self.get_response(request)
        if not user.is_verified():
            given_back = typed_text_given_back(request)
            if given_back is not None:
                return given_back
            return redirect(
                f"{reverse('accounts:verify')}?next={quote(_return_to(request))}"
            )
        if path.startswith(ADMIN_PREFIX) and not user.is_staff:
            # Django's admin would send a non-staff user to a second sign-in
            # form; a plain, audited refusal is what the rule says.
            refuse(request, record_type="Admin", reason="requires staff status")
        return self.get_response(request)


class SessionTimeoutMiddleware(SessionSecurityMiddleware):
    """Idle sign-out and an absolute lifetime, decided on the server.

    45 CFR 164.312(a)(2)(iii), automatic logoff. django-session-security's
    script only warns and reloads the page; this middleware is what ends the
    session, so it holds with JavaScript off and against scripts. Unlike the
    library's own middleware it reads its settings on each request and uses
    aware UTC times, and it ends a session 12 hours after sign-in however
    active it is (saving the session on each request slides Django's own
    expiry, so that cannot do it).
    """

    def process_request(self, request):
        if not request.user.is_authenticated:
            return

        now = timezone.now()
        ending = session_end_due(request.session, now)
        if ending is not None:
            end_session(request, ending)
            self._tell_why(
                request,
                SESSION_LIMIT_REACHED
                if ending == AuditAction.SESSION_EXPIRED
                else SIGNED_OUT_IDLE,
            )
            return

        if last_activity(request.session) is None or not self.is_passive_request(
            request
        ):
            record_activity(request.session, now)

    def process_response(self, request, response):
        ended_by = getattr(request, SESSION_END_ATTRIBUTE, None)
        if ended_by in (AuditAction.IDLE_LOGOUT, AuditAction.SESSION_EXPIRED):
            # As at sign-out: the browser drops what it kept from the pages
            # of a session that has just ended.
            response["Clear-Site-Data"] = '"cache", "storage"'
        return response

    @staticmethod
    def _tell_why(request, text: str) -> None:
        # Shown on the sign-in page the request is sent to, so that being
        # asked to sign in again mid-task is not a mystery; the API gives it
        # as its refusal's detail (ehr_portal.failure_pages).
        if request.path.startswith(API_PREFIX):
            request.session_end_reason = text
        else:
            messages.info(request, text)

    def is_passive_request(self, request) -> bool:
        # Background requests (the idle ping, alert counters) are not the
        # user at the keyboard and must not keep the session alive.
        if request.path in getattr(settings, "SESSION_SECURITY_PASSIVE_URLS", ()):
            return True
        try:
            match = resolve(request.path)
        except Resolver404:
            return False
        return match.url_name in settings.SESSION_SECURITY_PASSIVE_URL_NAMES
