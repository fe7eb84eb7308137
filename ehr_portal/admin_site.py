"""The admin site the portal serves: OTP-guarded, with no password form of its own."""

from django.shortcuts import redirect
from django_otp.admin import OTPAdminSite


class PortalAdminSite(OTPAdminSite):
    """django-otp's admin site, sending password changes to the portal's page.

    The admin's own form asks for the current password only and leaves no
    audit event; /accounts/password/ asks for the current password and a
    fresh code and records PASSWORD_CHANGED (SECURITY V7.5.1).
    """

    def password_change(self, request, extra_context=None):
        return redirect("accounts:password_change")

    def password_change_done(self, request, extra_context=None):
        return redirect("home")
