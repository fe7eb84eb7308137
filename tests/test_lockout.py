"""Five failures lock an account for 30 minutes, however the name is typed."""

import datetime

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from freezegun import freeze_time

from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from tests.conftest import current_code, make_user, verified_client
from tests.test_mfa import START, sign_in_with_password, submit_code

pytestmark = pytest.mark.django_db(databases="__all__")
SPELLINGS = [
    "Nurse.Jones",
    "nurse.jones",
    " nurse.jones ",
    "NURSE.JONES",
    "nurse.jones",
]


def wrong_password(client, spelling, **headers):
    return client.post(
        "/accounts/login/",
        {"username": spelling, "password": "not the password 1"},
        **headers,
    )


def lockout_events():
    return AuditEvent.objects.filter(action=AuditAction.LOCKOUT)


def test_five_failures_in_any_spelling_lock_the_account(client, nurse):
    responses = [wrong_password(client, spelling) for spelling in SPELLINGS]

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    right = sign_in_with_password(client, "nurse.jones")
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    assert lockout_events().count() == 2
    assert lockout_events().first().actor_username == "nurse.jones"


def test_the_locked_page_says_when_to_try_again(client, nurse):
    with freeze_time(START):
        for spelling in SPELLINGS:
            wrong_password(client, spelling)
        page = sign_in_with_password(client, "nurse.jones").content.decode()

    assert "Try again after" in page
    assert "(UTC time)" in page, "the unlock time names its zone"
    assert 'datetime="2026-03-02T09:30:05+00:00"' in page


def test_the_lock_lifts_after_30_minutes(client, nurse):
    with freeze_time(START) as clock:
        for spelling in SPELLINGS:
            wrong_password(client, spelling)
        clock.tick(datetime.timedelta(minutes=29, seconds=59))
        assert sign_in_with_password(client, "nurse.jones").status_code == 429

        clock.tick(datetime.timedelta(seconds=2))
        response = sign_in_with_password(client, "nurse.jones")

    assert response.status_code == 302
    assert response.url.startswith("/accounts/verify/")


def test_wrong_codes_count_as_failures(client, nurse):
    with freeze_time(START) as clock:
        for spelling in SPELLINGS[:3]:
            wrong_password(client, spelling)
        sign_in_with_password(client, "nurse.jones")
        wrong = "000000" if current_code(nurse) != "000000" else "111111"
        assert submit_code(client, wrong).status_code == 200
        clock.tick(5)
        locked = submit_code(client, wrong)
        assert "_auth_user_id" not in client.session
        password_again = sign_in_with_password(client, "nurse.jones")

    assert locked.status_code == 429
    assert password_again.status_code == 429


def test_the_right_password_does_not_clear_the_count_before_the_code(client, nurse):
    with freeze_time(START) as clock:
        for _ in range(4):
            wrong_password(client, "nurse.jones")
        sign_in_with_password(client, "nurse.jones")
        wrong = "000000" if current_code(nurse) != "000000" else "111111"
        clock.tick(5)

        assert submit_code(client, wrong).status_code == 429


def test_a_full_sign_in_clears_the_count(client, nurse):
    for _ in range(4):
        wrong_password(client, "nurse.jones")
    sign_in_with_password(client, "nurse.jones")
    submit_code(client, current_code(nurse))

    assert not AccessAttempt.objects.filter(username="nurse.jones").exists()


def test_a_forged_forwarded_for_header_does_not_move_the_count(client, nurse):
    for number, spelling in enumerate(SPELLINGS[:4]):
        wrong_password(client, spelling, HTTP_X_FORWARDED_FOR=f"10.9.9.{number}")

    response = wrong_password(client, "nurse.jones", HTTP_X_FORWARDED_FOR="10.9.9.9")

    assert response.status_code == 429
    addresses = set(AccessAttempt.objects.values_list("ip_address", flat=True))
    assert addresses == {"127.0.0.1"}
    assert set(
        AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).values_list(
            "ip_address", flat=True
        )
    ) == {"127.0.0.1"}


def test_an_administrator_unlocks_and_it_is_audited(client, nurse):
    for spelling in SPELLINGS:
        wrong_password(client, spelling)
    admin_user = make_user("admin.ross", Role.ADMIN)
    get_user_model().objects.filter(pk=admin_user.pk).update(
        is_staff=True, is_superuser=True
    )
    admin_client = verified_client(admin_user)

    admin_client.post(
        "/admin/accounts/user/",
        {"action": "unlock", "_selected_action": [nurse.pk]},
    )

    assert sign_in_with_password(client, "nurse.jones").status_code == 302
    event = AuditEvent.objects.get(action=AuditAction.UNLOCK)
    assert event.actor_id == admin_user.pk
    assert event.reason == "account nurse.jones"


def test_a_wrong_password_says_only_the_password_is_case_sensitive(client, nurse):
    page = wrong_password(client, "NURSE.JONES").content.decode()

    assert "The password is case-sensitive; the username is not." in page
    assert "both fields may be case-sensitive" not in page


@pytest.mark.parametrize(
    "name", ["u" * 150, "u" * 151, "u" * 256, "u" * 5000, "nurse.jones\x00", "\x00"]
)
def test_a_name_no_account_can_have_is_a_wrong_name_not_an_error(client, nurse, name):
    response = wrong_password(client, name)

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    failed = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert failed.actor_username == "(unknown username)"
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    "password, message",
    [("", "Enter your password."), ("x\x00y", "Please enter a correct username")],
)
def test_a_password_no_account_can_have_gets_the_message_and_its_event(
    client, nurse, password, message
):
    response = client.post(
        "/accounts/login/", {"username": "nurse.jones", "password": password}
    )

    assert message in response.content.decode()
    failed = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert failed.actor_username == "nurse.jones"
    assert "_auth_user_id" not in client.session


def test_a_form_sent_empty_asks_for_both_fields(client, nurse):
    response = client.post("/accounts/login/", {"username": " ", "password": ""})

    page = response.content.decode()
    assert "Enter your username and password." in page
    assert "correct username" not in page
    assert AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)


def test_spaces_are_no_name_but_are_a_password(client, nurse):
    response = client.post("/accounts/login/", {"username": " ", "password": "   "})

    page = response.content.decode()
    assert "Enter your username." in page
    assert "Enter your username and password" not in page
