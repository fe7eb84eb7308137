"""Deny by default: every page past sign-in needs a second factor.

A view that forgets a decorator still cannot be reached with a password
alone, because the check runs here for every path but the few listed.
"""

from urllib.parse import quote

from django.shortcuts import redirect
from django.urls import reverse

from accounts.decorators import refuse

OPEN_PATH_PREFIXES = ("/static/", "/accounts/login/", "/favicon.ico")
# The API answers for itself (401/403 as JSON, from DRF's default permission
# class, which demands the same verified second factor), never a redirect.
API_PREFIX = "/api/"
PASSWORD_STEP_PATHS = ("/accounts/verify/", "/accounts/enrol/", "/accounts/logout/")
ADMIN_PREFIX = "/admin/"


class VerifiedSessionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        if path.startswith(OPEN_PATH_PREFIXES) or path.startswith(API_PREFIX):
            return self.get_response(request)

        user = request.user
        if not user.is_authenticated:
            return redirect(f"{reverse('accounts:login')}?next={quote(path)}")

        if path.startswith(PASSWORD_STEP_PATHS):
            return self.get_response(request)
        if not user.is_verified():
            return redirect(f"{reverse('accounts:verify')}?next={quote(path)}")
        if path.startswith(ADMIN_PREFIX) and not user.is_staff:
            # Django's admin would send a non-staff user to a second sign-in
            # form; a plain, audited refusal is what the rule says.
            refuse(request, record_type="Admin", reason="requires staff status")
        return self.get_response(request)
