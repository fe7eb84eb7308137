"""Sign-in in two steps (password, then one-time code) and sign-out."""

import logging
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import LoginView
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import OneTimeCodeForm, SignInForm
from accounts.services import has_confirmed_device, verify_second_factor

logger = logging.getLogger(__name__)


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


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
        return render(request, "accounts/no_device.html", status=403)

    form = OneTimeCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if verify_second_factor(request, form.cleaned_data["token"]):
            return redirect(_safe_next(request, reverse("home")))
        form.add_error("token", "That code was not accepted. Try the current one.")

    return render(
        request,
        "accounts/verify.html",
        {"form": form, "next": _safe_next(request, "")},
    )


@require_POST
@csrf_protect
def sign_out(request):
    logout(request)
    messages.info(request, "You have signed out.")
    response = redirect("accounts:login")
    # Ask the browser to drop anything it kept from the session's pages.
    response["Clear-Site-Data"] = '"cache", "storage"'
    return response
