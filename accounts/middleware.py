"""Deny by default: every page past sign-in needs a second factor.

A view that forgets a decorator still cannot be reached with a password
alone, because the check runs here for every path but the few listed.
"""

from urllib.parse import quote

from django.shortcuts import redirect
from django.urls import reverse

OPEN_PATH_PREFIXES = ("/static/", "/accounts/login/", "/favicon.ico")
PASSWORD_STEP_PATHS = ("/accounts/verify/", "/accounts/logout/")


class VerifiedSessionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        if path.startswith(OPEN_PATH_PREFIXES):
            return self.get_response(request)

        user = request.user
        if not user.is_authenticated:
            return redirect(f"{reverse('accounts:login')}?next={quote(path)}")

        if path.startswith(PASSWORD_STEP_PATHS) or user.is_verified():
            return self.get_response(request)
        return redirect(f"{reverse('accounts:verify')}?next={quote(path)}")
