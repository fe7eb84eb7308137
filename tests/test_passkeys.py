"""Passkeys follow the same rules as codes: after the password, counted, audited."""

import json

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory
from freezegun import freeze_time

from accounts.services import record_passkey_added
from audit.models import AuditAction, AuditEvent
from tests.conftest import verified_client
from tests.test_mfa import START, sign_in_with_password

pytestmark = pytest.mark.django_db(databases="__all__")
BEGIN_REGISTRATION = "/webauthn/registration/begin/"
BEGIN_AUTHENTICATION = "/webauthn/authentication/begin/"
COMPLETE_AUTHENTICATION = "/webauthn/authentication/complete/"


def post_json(client, url, body=None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def test_nobody_signs_in_with_a_passkey_alone(client, nurse):
    response = post_json(client, BEGIN_AUTHENTICATION)

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_adding_a_passkey_needs_a_fresh_code(nurse):
    response = post_json(verified_client(nurse, fresh_code=False), BEGIN_REGISTRATION)

    assert response.status_code == 403
    assert response.json()["code"] == "step_up_required"


def test_a_password_only_session_cannot_add_a_passkey(client, nurse):
    sign_in_with_password(client, "nurse.jones")

    response = post_json(client, BEGIN_REGISTRATION)

    assert response.status_code == 302
    assert response.url.startswith("/accounts/verify/")


def test_a_refused_passkey_is_audited_and_counted(client, nurse):
    sign_in_with_password(client, "nurse.jones")
    assert post_json(client, BEGIN_AUTHENTICATION).status_code == 200

    response = post_json(client, COMPLETE_AUTHENTICATION, {"id": "forged"})

    assert response.status_code >= 400
    event = AuditEvent.objects.get(action=AuditAction.OTP_FAILED)
    assert (event.actor_id, event.purpose) == (nurse.pk, "passkey")
    assert AccessAttempt.objects.get(username="nurse.jones").failures_since_start == 1
    assert client.get("/patients/").status_code == 302


def test_a_locked_account_cannot_start_a_passkey_check(client, nurse):
    with freeze_time(START):
        sign_in_with_password(client, "nurse.jones")
        for _ in range(5):
            post_json(client, BEGIN_AUTHENTICATION)
            post_json(client, COMPLETE_AUTHENTICATION, {"id": "forged"})
        response = post_json(client, BEGIN_AUTHENTICATION)

    assert response.status_code == 429
    assert response.json()["code"] == "account_locked"
    assert AuditEvent.objects.filter(action=AuditAction.LOCKOUT).exists()


def test_adding_a_passkey_ends_the_other_sessions_only(nurse):
    this_one, other = verified_client(nurse), verified_client(nurse)
    request = RequestFactory().post(BEGIN_REGISTRATION)
    request.user, request.session = nurse, this_one.session

    record_passkey_added(request)
    request.session.save()
    this_one.cookies["sessionid"] = request.session.session_key

    assert this_one.get("/patients/").status_code == 200
    assert other.get("/patients/").url.startswith("/accounts/login/")
    event = AuditEvent.objects.get(action=AuditAction.MFA_ENROLLED)
    assert event.purpose == "passkey"


def test_a_passkey_body_nested_too_deeply_is_refused_and_counted(client, nurse):
    sign_in_with_password(client, "nurse.jones")
    assert post_json(client, BEGIN_AUTHENTICATION).status_code == 200

    response = client.post(
        COMPLETE_AUTHENTICATION, "[" * 100_000 + "]" * 100_000,
        content_type="application/json",
    )  # fmt: skip

    assert response.status_code == 400
    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).exists()
