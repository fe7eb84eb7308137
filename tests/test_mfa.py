"""TOTP codes work once, within one step of drift, throttled, sealed at rest."""

import datetime

import pytest
from django.core.management import call_command
from django.db import connection
from freezegun import freeze_time

from accounts.models import TOTPAuthenticator
from audit.models import AuditAction, AuditEvent
from records import crypto
from tests.conftest import current_code

pytestmark = pytest.mark.django_db(databases="__all__")
PASSWORD = "correct horse battery 9"
START = datetime.datetime(2026, 3, 2, 9, 0, 5, tzinfo=datetime.UTC)


def sign_in_with_password(client, username, password=PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def submit_code(client, code):
    return client.post("/accounts/verify/", {"token": code})


def actions_for(user):
    return list(
        AuditEvent.objects.filter(actor_id=user.pk)
        .order_by("occurred_at", "id")
        .values_list("action", flat=True)
    )


def test_password_then_code_reaches_the_patient_list(client, nurse):
    sign_in_with_password(client, "nurse.jones")

    response = submit_code(client, current_code(nurse))

    assert response.status_code == 302
    assert client.get("/patients/").status_code == 200
    assert actions_for(nurse)[-2:] == [AuditAction.OTP_VERIFIED, "PATIENT_LIST"]


def test_a_used_code_is_refused_in_a_second_sign_in_and_audited(client, nurse):
    with freeze_time(START):
        code = current_code(nurse)
        sign_in_with_password(client, "nurse.jones")
        assert submit_code(client, code).status_code == 302

        second = type(client)()
        sign_in_with_password(second, "nurse.jones")
        response = submit_code(second, code)

    assert response.status_code == 200
    assert "already used: wait for the next code" in response.content.decode()
    assert second.get("/patients/").status_code == 302
    assert actions_for(nurse)[-1] == AuditAction.OTP_REPLAYED


def test_the_last_used_step_survives_a_reload_from_the_database(nurse):
    with freeze_time(START):
        device = TOTPAuthenticator.objects.get(user=nurse)
        code = device.current_code()
        assert device.verify_token(code)

        fresh = TOTPAuthenticator.objects.get(pk=device.pk)
        assert fresh.last_t == device.last_t
        assert not fresh.verify_token(code)


@pytest.mark.parametrize(
    ("offset_steps", "accepted"),
    [(0, True), (-1, True), (1, True), (-2, False), (2, False)],
)
def test_drift_tolerance_is_one_step_either_side(nurse, offset_steps, accepted):
    with freeze_time(START):
        device = TOTPAuthenticator.objects.get(user=nurse)
        code = device.code_at(device.current_step() + offset_steps)

        assert device.verify_token(code) is accepted


def test_wrong_codes_wait_longer_and_longer(nurse):
    with freeze_time(START) as clock:
        device = TOTPAuthenticator.objects.get(user=nurse)
        assert not device.verify_token(
            "000000" if device.current_code() != "000000" else "111111"
        )
        assert not device.verify_token(device.current_code()), "within 1 s"

        clock.tick(1.1)
        wrong = "123456" if device.current_code() != "123456" else "654321"
        assert not device.verify_token(wrong)
        clock.tick(1.1)
        assert not device.verify_token(device.current_code()), "the wait is now 2 s"

        clock.tick(1)
        assert device.verify_token(device.current_code())
        assert device.throttling_failure_count == 0


def test_a_throttled_attempt_is_audited_as_a_failure(client, nurse):
    with freeze_time(START):
        sign_in_with_password(client, "nurse.jones")
        wrong = "000000" if current_code(nurse) != "000000" else "111111"
        submit_code(client, wrong)
        throttled = submit_code(client, current_code(nurse))

    assert "wait a few seconds" in throttled.content.decode()
    failures = AuditEvent.objects.filter(
        actor_id=nurse.pk, action=AuditAction.OTP_FAILED
    ).values_list("reason", flat=True)
    assert sorted(failures) == ["throttled", "wrong"]


def test_the_session_key_changes_after_the_code(client, nurse):
    sign_in_with_password(client, "nurse.jones")
    after_password = client.cookies["sessionid"].value

    submit_code(client, current_code(nurse))

    assert client.cookies["sessionid"].value != after_password
    replay = type(client)()
    replay.cookies["sessionid"] = after_password
    assert replay.get("/patients/").status_code == 302


def test_the_seed_is_sealed_and_bound_to_its_row(nurse, physician):
    device = TOTPAuthenticator.objects.get(user=nurse)
    other = TOTPAuthenticator.objects.get(user=physician)
    table = TOTPAuthenticator._meta.db_table

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, key FROM {table}")  # noqa: S608
        stored = dict(cursor.fetchall())

    sealed = bytes(stored[device.pk])
    assert sealed[:3] == bytes((2, 0, 1))
    assert device.key.encode() not in sealed
    assert bytes.fromhex(device.key) not in sealed
    assert device.base32_secret().encode() not in sealed
    assert crypto.open_sealed(sealed, f"{table}.key:{device.pk}".encode()) == device.key
    with pytest.raises(crypto.IntegrityError):
        crypto.open_sealed(sealed, f"{table}.key:{other.pk}".encode())


def test_demo_code_prints_a_code_the_device_accepts(nurse, capsys):
    with freeze_time(START):
        call_command("demo_code", "Nurse.Jones")
        code = capsys.readouterr().out.strip()

        assert TOTPAuthenticator.objects.get(user=nurse).verify_token(code)


def _in_script(code: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(digit)) for digit in code)


@pytest.mark.parametrize(
    "zero", ["\u0660", "\uff10"], ids=["arabic-indic", "full-width"]
)
def test_a_code_typed_in_another_scripts_digits_is_the_same_code(client, nurse, zero):
    sign_in_with_password(client, "nurse.jones")

    response = submit_code(client, _in_script(current_code(nurse), zero))

    assert response.status_code == 302
    assert actions_for(nurse)[-1] == AuditAction.OTP_VERIFIED


def test_characters_that_are_only_like_digits_are_refused_not_a_500(client, nurse):
    sign_in_with_password(client, "nurse.jones")

    response = submit_code(client, "²³⁴⁵⁶⁷")

    assert response.status_code == 200
    assert "Enter the six digits" in response.content.decode()
    assert client.get("/patients/").status_code == 302


@pytest.mark.parametrize("typed", ["abcdef", "12345", "ab12"])
def test_what_is_no_code_at_all_is_refused_as_such_and_not_counted(
    client, nurse, typed
):
    sign_in_with_password(client, "nurse.jones")

    response = submit_code(client, typed)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Enter the six digits" in page and "Ensure this value" not in page
    assert AuditAction.OTP_FAILED not in actions_for(nurse)
    # Not a wrong code: the right one is taken at once, with no wait.
    assert submit_code(client, current_code(nurse)).status_code == 302
