"""Exports and break-glass need a code entered within the last five minutes."""

import datetime

import pytest
from freezegun import freeze_time

from audit.models import AuditAction, AuditEvent
from tests.conftest import current_code, verified_client
from tests.test_mfa import START, sign_in_with_password, submit_code

pytestmark = [
    pytest.mark.django_db(databases="__all__"),
    pytest.mark.urls("tests.step_up_urls"),
]
FIVE_MINUTES = datetime.timedelta(minutes=5)


def signed_in(client, user):
    sign_in_with_password(client, user.get_username())
    submit_code(client, current_code(user))
    return client


def test_a_code_from_sign_in_counts_for_five_minutes(client, nurse):
    with freeze_time(START) as clock:
        signed_in(client, nurse)
        clock.tick(FIVE_MINUTES)

        assert client.get("/guarded-export/").content == b"export prepared"


def test_an_older_code_sends_the_user_to_step_up(client, nurse):
    with freeze_time(START) as clock:
        signed_in(client, nurse)
        clock.tick(FIVE_MINUTES + datetime.timedelta(seconds=1))
        response = client.get("/guarded-export/")

    assert response.status_code == 302
    assert response.url == "/accounts/step-up/?next=%2Fguarded-export%2F"


def test_a_session_verified_without_a_recorded_time_must_step_up(nurse):
    response = verified_client(nurse, fresh_code=False).get("/guarded-export/")

    assert response.url.startswith("/accounts/step-up/")


def test_stepping_up_opens_the_page_cycles_the_key_and_is_audited(client, nurse):
    with freeze_time(START) as clock:
        signed_in(client, nurse)
        clock.tick(datetime.timedelta(minutes=10))
        before = client.cookies["sessionid"].value

        response = client.post(
            "/accounts/step-up/",
            {"token": current_code(nurse), "next": "/guarded-export/"},
        )
        after = client.get("/guarded-export/")

    assert response.url == "/guarded-export/"
    assert after.content == b"export prepared"
    assert client.cookies["sessionid"].value != before
    assert AuditEvent.objects.filter(
        actor_id=nurse.pk, action=AuditAction.STEP_UP
    ).exists()


def test_a_wrong_step_up_code_is_refused_and_audited(client, nurse):
    with freeze_time(START) as clock:
        signed_in(client, nurse)
        clock.tick(datetime.timedelta(minutes=10))
        wrong = "000000" if current_code(nurse) != "000000" else "111111"
        refused = client.post("/accounts/step-up/", {"token": wrong})
        still_guarded = client.get("/guarded-export/")

    assert refused.status_code == 200
    assert still_guarded.status_code == 302
    event = AuditEvent.objects.get(actor_id=nurse.pk, action=AuditAction.OTP_FAILED)
    assert event.reason == "wrong (step-up)"


def test_the_step_up_page_needs_a_signed_in_user(client):
    response = client.get("/accounts/step-up/")

    assert response.url.startswith("/accounts/login/")
