"""Sign-in safeguards in headless Chromium: enrolment, codes, idle sign-out, lockout."""

import base64

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django_otp.oath import TOTP
from playwright.sync_api import Page, expect

from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from tests.conftest import current_code

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

PASSWORD = "correct horse battery 9"


@pytest.fixture
def short_idle_limits(settings):
    # Read per request by the portal's middleware and template, so the live
    # server thread sees them at once.
    settings.SESSION_SECURITY_WARN_AFTER = 3
    settings.SESSION_SECURITY_EXPIRE_AFTER = 6


def enter_password(page: Page, base_url: str, username: str, password=PASSWORD):
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def sign_in(page: Page, base_url: str, user):
    enter_password(page, base_url, user.get_username())
    expect(page.locator("h1")).to_have_text("Enter your one-time code")
    page.fill("#id_token", current_code(user))
    page.click("button[type=submit]")


def test_first_sign_in_enrols_with_the_qr_page(page: Page, live_server):
    user = get_user_model().objects.create_user(username="nurse.new", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=Role.NURSE.value)[0])

    enter_password(page, live_server.url, "nurse.new")

    expect(page.locator("h1")).to_have_text("Set up your authenticator")
    qr_width = page.locator("img.qr").evaluate("image => image.naturalWidth")
    assert qr_width > 0, "the QR code image renders"
    secret = page.locator("#totp-secret").inner_text()
    code = TOTP(base64.b32decode(secret)).token()
    page.fill("#id_token", f"{code:06d}")
    page.click("button[type=submit]")

    expect(page.locator("h1")).to_have_text("Your authenticator is set up")
    expect(page.locator("#backup-codes li")).to_have_count(10)
    page.click("text=I have saved them: continue")
    expect(page).to_have_url(f"{live_server.url}/patients/")
    assert AuditEvent.objects.filter(action=AuditAction.MFA_ENROLLED).count() == 1


def test_sign_in_with_password_and_authenticator_code(page: Page, live_server, nurse):
    sign_in(page, live_server.url, nurse)

    expect(page).to_have_url(f"{live_server.url}/patients/")
    expect(page.locator(".whoami")).to_contain_text("nurse.jones")


def test_a_wrong_code_is_refused_in_the_page(page: Page, live_server, nurse):
    enter_password(page, live_server.url, "nurse.jones")
    wrong = "000000" if current_code(nurse) != "000000" else "111111"
    page.fill("#id_token", wrong)
    page.click("button[type=submit]")

    expect(page.locator(".error-box")).to_contain_text("not accepted")
    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).count() == 1


def test_the_idle_warning_offers_to_stay_signed_in(
    page: Page, live_server, nurse, short_idle_limits
):
    sign_in(page, live_server.url, nurse)
    expect(page).to_have_url(f"{live_server.url}/patients/")

    # The dialog's box is its fixed-position content, so look at that.
    stay = page.locator("#idle-stay-signed-in")
    expect(stay).to_be_visible(timeout=10_000)
    expect(page.locator("#idle-warning-title")).to_contain_text("signed out in")
    # A real pointer would count as activity on its way to the button (any
    # movement does), so the click is dispatched on the button itself.
    with page.expect_response("**/session_security/ping/?idleFor=*"):
        stay.dispatch_event("click")

    expect(stay).to_be_hidden()
    idle = page.evaluate("() => fetch('/session_security/ping/').then(r => r.json())")
    assert idle < 3


def test_an_idle_page_signs_itself_out(
    page: Page, live_server, nurse, short_idle_limits
):
    sign_in(page, live_server.url, nurse)
    expect(page).to_have_url(f"{live_server.url}/patients/")

    expect(page.locator("h1")).to_have_text("Sign in", timeout=15_000)
    assert "/accounts/login/" in page.url
    assert AuditEvent.objects.filter(action=AuditAction.IDLE_LOGOUT).count() == 1
    page.goto(f"{live_server.url}/patients/")
    expect(page.locator("h1")).to_have_text("Sign in")


def test_five_failures_show_the_lockout_page(page: Page, live_server, nurse):
    for spelling in ["Nurse.Jones", "nurse.jones", " nurse.jones ", "NURSE.JONES"]:
        enter_password(page, live_server.url, spelling, password="wrong password 12")
        expect(page.locator(".error-box")).to_be_visible()

    enter_password(page, live_server.url, "nurse.jones", password="wrong password 12")

    expect(page.locator("h1")).to_have_text("Account temporarily locked")
    expect(page.locator("#unlocks-at")).to_contain_text("UTC")
    enter_password(page, live_server.url, "nurse.jones")
    expect(page.locator("h1")).to_have_text("Account temporarily locked")


def test_a_passkey_is_added_and_then_stands_in_for_the_code(
    page: Page, live_server, nurse
):
    # WebAuthn takes a host name, not an address, as its relying party.
    base_url = live_server.url.replace("127.0.0.1", "localhost")
    devtools = page.context.new_cdp_session(page)
    devtools.send("WebAuthn.enable")
    devtools.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    sign_in(page, base_url, nurse)
    expect(page).to_have_url(f"{base_url}/patients/")

    page.goto(f"{base_url}/accounts/passkeys/")
    # The passkey script's messages load separately; its handlers need them.
    page.wait_for_function("() => typeof gettext === 'function'")
    page.click("#passkey-register-button")
    expect(page.locator("#passkey-register-status-message")).to_contain_text(
        "success", ignore_case=True, timeout=20_000
    )
    page.click("text=Sign out")
    enter_password(page, base_url, "nurse.jones")
    page.wait_for_function("() => typeof gettext === 'function'")
    page.click("#passkey-verification-button")

    expect(page).to_have_url(f"{base_url}/patients/", timeout=20_000)
    purposes = set(
        AuditEvent.objects.filter(actor_id=nurse.pk).values_list("action", "purpose")
    )
    assert (AuditAction.MFA_ENROLLED, "passkey") in purposes
    assert (AuditAction.OTP_VERIFIED, "passkey") in purposes


def test_a_note_sent_after_the_session_ended_comes_back_to_copy(
    page: Page, live_server, nurse, marker_patient
):
    from django.contrib.sessions.models import Session

    from records.models import ClinicalNote
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    sign_in(page, live_server.url, nurse)
    page.goto(f"{live_server.url}/patients/{marker_patient.pk}/notes/")
    page.get_by_label("Title").fill("Evening review")
    page.get_by_label("Body").fill("Pain 2/10 after analgesia.\nMobilised to chair.")

    # The session ends while the note is being written (as an idle sign-out
    # or a sign-out elsewhere would end it).
    Session.objects.all().delete()
    page.get_by_role("button", name="Save note").click()

    expect(page.locator("h1")).to_have_text("Your note was not saved")
    expect(page.locator("#unsaved-title")).to_have_value("Evening review")
    expect(page.locator("#unsaved-body")).to_have_value(
        "Pain 2/10 after analgesia.\nMobilised to chair."
    )
    assert not ClinicalNote.objects.exists()

    page.get_by_role("link", name="sign in again").click()
    expect(page.locator("h1")).to_have_text("Sign in")


def test_a_note_typed_before_an_idle_sign_out_is_kept_for_the_next_sign_in(
    page: Page, live_server, nurse, marker_patient, short_idle_limits
):
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    sign_in(page, live_server.url, nurse)
    notes = f"{live_server.url}/patients/{marker_patient.pk}/notes/"
    page.goto(notes)
    page.get_by_label("Title").fill("Night review")
    page.get_by_label("Body").fill("Obs stable overnight.\nFor review at 08:00.")

    # Left alone: the warning shows (and keeps the note), then the page
    # signs itself out. Nothing moves the pointer meanwhile.
    expect(page.locator("h1")).to_have_text("Sign in", timeout=15_000)

    # The next sign-in comes seconds later, inside the same 30-second code:
    # forget that it was used, as the next code would be a new one.
    from accounts.models import TOTPAuthenticator

    TOTPAuthenticator.objects.filter(user=nurse).update(last_t=-1)
    sign_in(page, live_server.url, nurse)
    page.goto(notes)
    expect(page.get_by_text("You had not sent this note")).to_be_visible()
    expect(page.get_by_label("Title")).to_have_value("Night review")
    expect(page.get_by_label("Body")).to_have_value(
        "Obs stable overnight.\nFor review at 08:00."
    )
