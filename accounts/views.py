"""Sign-in in two steps (password, then one-time code), enrolment and sign-out."""

import logging
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
)

from accounts.decorators import step_up_required
from accounts.forms import (
    EnrolmentCodeForm,
    OneTimeCodeForm,
    PasswordChangeWithCodeForm,
    SignInForm,
)
from accounts.models import Refusal
from accounts.services import (
    change_password,
    confirm_enrolment,
    end_session,
    fold_username,
    has_confirmed_device,
    idle_seconds,
    is_locked_out,
    lockout_ends_at,
    pending_authenticator,
    refuse_password_change,
    report_client_activity,
    verify_second_factor,
)
from audit.models import AuditAction
from ehr_portal.digits import is_ascii_digits

logger = logging.getLogger(__name__)


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def locked_out(request, original_response=None, credentials=None):
    """The page a locked account gets (HTTP 429), saying when to try again.

    django-axes calls this (AXES_LOCKOUT_CALLABLE); the OTP step calls it too.
    """
    username = fold_username(request, credentials)
    return render(
        request,
        "accounts/locked_out.html",
        {
            "unlocks_at": lockout_ends_at(username) if username else None,
            "lock_minutes": settings.PORTAL_LOCKOUT_MINUTES,
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )


def _end_locked_session(request):
    credentials = {"username": request.user.get_username()}
    end_session(request, None)
    return locked_out(request, credentials=credentials)


class SignInView(LoginView):
    template_name = "accounts/login.html"
    authentication_form = SignInForm
    redirect_authenticated_user = False

    def get_success_url(self):
        target = _safe_next(self.request, reverse("home"))
        return f"{reverse('accounts:verify')}?{urlencode({'next': target})}"


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def verify_code(request):
    if request.user.is_verified():
        return redirect(_safe_next(request, reverse("home")))
    if not has_confirmed_device(request.user):
        return redirect(f"{reverse('accounts:enrol')}?{request.GET.urlencode()}")
    return _code_page(request, "accounts/verify.html", step_up=False)


def _code_page(request, template: str, *, step_up: bool):
    """Ask for a one-time code; on success go on, on a lock end the session."""
    if is_locked_out(request, request.user):
        return _end_locked_session(request)

    form = OneTimeCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        token = form.cleaned_data["token"]
        if verify_second_factor(request, token, step_up=step_up):
            return redirect(_safe_next(request, reverse("home")))
        if getattr(request, "axes_locked_out", False):
            return _end_locked_session(request)
        form.add_error("token", _refusal_message(request))

    return render(request, template, {"form": form, "next": _safe_next(request, "")})


def _refusal_message(request) -> str:
    refusal = getattr(request, "otp_refusal", None)
    if refusal == Refusal.THROTTLED:
        return (
            "Too many wrong codes in a row: wait a few seconds, then enter the "
            "code your app shows. Each try counts toward the account lock."
        )
    if refusal == Refusal.REPLAYED:
        # A code works once: signing in twice within its 30 seconds needs
        # the next one, which retyping the same code will never give.
        return "That code was already used: wait for the next code in your app."
    return "That code was not accepted. Try the current one."


def _qr_data_uri(uri: str) -> str:
    # Made here, as SVG: the secret never leaves the portal for a QR service.
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def enrol(request):
    """First sign-in without an authenticator: scan, confirm with a code."""
    if has_confirmed_device(request.user):
        return redirect(f"{reverse('accounts:verify')}?{request.GET.urlencode()}")
    if is_locked_out(request, request.user):
        return _end_locked_session(request)

    device = pending_authenticator(request.user)
    form = EnrolmentCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        enrolment = confirm_enrolment(request, form.cleaned_data["token"])
        if enrolment.confirmed:
            return render(
                request,
                "accounts/backup_codes.html",
                {
                    "backup_codes": enrolment.backup_codes,
                    "next": _safe_next(request, reverse("home")),
                },
            )
        if getattr(request, "axes_locked_out", False):
            return _end_locked_session(request)
        form.add_error("token", "That code was not accepted. Try the current one.")

    uri = device.provisioning_uri()
    return render(
        request,
        "accounts/enrol.html",
        {
            "form": form,
            "qr_data_uri": _qr_data_uri(uri),
            "secret": device.base32_secret(),
            "next": _safe_next(request, ""),
        },
    )


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def step_up(request):
    """Enter a current code again before a sensitive action (exports, break-glass)."""
    return _code_page(request, "accounts/step_up.html", step_up=True)


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def password_change(request):
    """Change the password: needs the current one and a current code."""
    form = PasswordChangeWithCodeForm(request.user, request.POST or None)
    if (
        request.method == "POST"
        and not form.is_valid()
        and "old_password" in form.errors
    ):
        refuse_password_change(request)
        if getattr(request, "axes_locked_out", False):
            return _end_locked_session(request)
    elif request.method == "POST" and form.is_valid():
        if change_password(request, form, form.cleaned_data["token"]):
            messages.success(request, "Your password has been changed.")
            return redirect("home")
        if getattr(request, "axes_locked_out", False):
            return _end_locked_session(request)
        form.add_error("token", "That code was not accepted. Try the current one.")

    return render(request, "accounts/password_change.html", {"form": form})


@never_cache
@require_GET
@step_up_required
def passkeys(request):
    """Add a passkey; the page needs a code from the last five minutes."""
    return render(request, "accounts/passkeys.html")


@require_POST
@csrf_protect
def sign_out(request):
    end_session(request, AuditAction.LOGOUT)
    messages.info(request, "You have signed out.")
    response = redirect("accounts:login")
    # Ask the browser to drop anything it kept from the session's pages.
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response


@never_cache
@require_GET
def idle_ping(request):
    """How long the session has been idle, for django-session-security's script.

    ``idleFor`` is the page's own count since the user last moved or typed:
    it is how "Stay signed in" and activity in another tab reach the server.
    The ping itself is passive and counts as no activity.
    """
    if not request.user.is_authenticated:
        return JsonResponse("logout", safe=False)
    idle_for = request.GET.get("idleFor", "")
    # ASCII digits only (str.isdigit also takes "²"), and no more than a
    # session could ever be idle: anything else is ignored, not an error.
    if is_ascii_digits(idle_for) and len(idle_for) <= 7:
        report_client_activity(request.session, int(idle_for))
    return JsonResponse(idle_seconds(request.session) or 0, safe=False)
