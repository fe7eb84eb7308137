"""Passkeys (WebAuthn) as a second factor beside the authenticator app.

django-otp-webauthn does the ceremonies; the portal's subclasses decide who
may use them and leave the same evidence and lockout counts as a code:
a passkey is used after the password, never instead of it, and adding one
needs a code entered in the last five minutes.
"""

import logging

from django.conf import settings
from django.http import HttpRequest
from django_otp_webauthn import exceptions
from django_otp_webauthn.helpers import WebAuthnHelper
from django_otp_webauthn.views import (
    BeginCredentialAuthenticationView,
    BeginCredentialRegistrationView,
    CompleteCredentialAuthenticationView,
    CompleteCredentialRegistrationView,
)

from accounts.decorators import STEP_UP_WINDOW_SECONDS
from accounts.services import (
    is_locked_out,
    record_passkey_added,
    record_passkey_refused,
    record_passkey_verified,
    seconds_since_otp,
)

logger = logging.getLogger(__name__)


def relying_party_id(request: HttpRequest) -> str:
    """The portal's host name (Django has checked it against ALLOWED_HOSTS)."""
    return request.get_host().rsplit(":", 1)[0]


class PortalWebAuthnHelper(WebAuthnHelper):
    def get_allowed_origins(self) -> list[str]:
        # Development also accepts the origin the request came to (a test
        # server's port is random); ALLOWED_HOSTS limits it to loopback there.
        configured = list(settings.OTP_WEBAUTHN_ALLOWED_ORIGINS)
        if settings.DEVELOPMENT:
            configured.append(f"{self.request.scheme}://{self.request.get_host()}")
        return configured


class AccountLocked(exceptions.OTPWebAuthnApiError):
    status_code = 429
    default_detail = "This account is locked after too many failed attempts."
    default_code = "account_locked"


class StepUpRequired(exceptions.OTPWebAuthnApiError):
    status_code = 403
    default_detail = "Enter a one-time code again before adding a passkey."
    default_code = "step_up_required"


class BoundedJSONBody:
    def _parse_request_data(self, request):
        try:
            return super()._parse_request_data(request)
        except RecursionError:
            # Nesting too deep for Python's decoder is a malformed body like
            # any other, not a server error.
            raise exceptions.MalformedRequest() from None


class FreshCodeForRegistration:
    def check_can_register(self):
        age = seconds_since_otp(self.request.session)
        if age is None or not 0 <= age <= STEP_UP_WINDOW_SECONDS:
            raise StepUpRequired()


class UnlockedAccountForAuthentication:
    def check_can_authenticate(self):
        user = self.request.user
        if user.is_authenticated and is_locked_out(self.request, user):
            raise AccountLocked()
        super().check_can_authenticate()


class PasskeyRegistrationBegin(
    BoundedJSONBody, FreshCodeForRegistration, BeginCredentialRegistrationView
):
    pass


class PasskeyRegistrationComplete(
    BoundedJSONBody, FreshCodeForRegistration, CompleteCredentialRegistrationView
):
    def post(self, *args, **kwargs):
        response = super().post(*args, **kwargs)
        record_passkey_added(self.request)
        return response


class PasskeyAuthenticationBegin(
    BoundedJSONBody, UnlockedAccountForAuthentication, BeginCredentialAuthenticationView
):
    pass


class PasskeyAuthenticationComplete(
    BoundedJSONBody,
    UnlockedAccountForAuthentication,
    CompleteCredentialAuthenticationView,
):
    def complete_auth(self, device):
        record_passkey_verified(self.request, device)

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.OTPWebAuthnApiError) and not isinstance(
            exc, AccountLocked
        ):
            record_passkey_refused(self.request, exc.code)
        return super().handle_exception(exc)
