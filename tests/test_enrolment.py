"""First sign-in without an authenticator enrols one; backup codes work once."""

import datetime
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections
from freezegun import freeze_time

from accounts.models import BackupCode, TOTPAuthenticator
from accounts.roles import Role
from audit.models import AuditAction, AuditEvent
from records.key_rotation import rotate_keys
from tests.conftest import make_user, verified_client
from tests.test_mfa import PASSWORD, START, sign_in_with_password, submit_code

pytestmark = pytest.mark.django_db(databases="__all__")
SECRET_PATTERN = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
BACKUP_PATTERN = re.compile(r"<code>([a-z2-7]{4}(?:-[a-z2-7]{4}){5})</code>")


@pytest.fixture
def newcomer(db):
    user = get_user_model().objects.create_user(username="nurse.new", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=Role.NURSE.value)[0])
    return user


def start_enrolment(client):
    sign_in_with_password(client, "nurse.new")
    response = client.get("/accounts/verify/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/accounts/enrol/")
    return response


def enrol(client, user):
    start_enrolment(client)
    device = TOTPAuthenticator.objects.get(user=user)
    response = client.post("/accounts/enrol/", {"token": device.current_code()})
    return response, BACKUP_PATTERN.findall(response.content.decode())


def test_the_enrolment_page_shows_a_local_qr_code_and_the_secret(client, newcomer):
    page = start_enrolment(client).content.decode()

    device = TOTPAuthenticator.objects.get(user=newcomer)
    assert 'src="data:image/svg+xml' in page
    assert SECRET_PATTERN.search(page).group(1) == device.base32_secret()
    assert not device.confirmed


def test_reloading_the_page_keeps_the_secret_already_scanned(client, newcomer):
    first = SECRET_PATTERN.search(start_enrolment(client).content.decode())
    again = SECRET_PATTERN.search(client.get("/accounts/enrol/").content.decode())

    assert first.group(1) == again.group(1)


def test_an_unconfirmed_authenticator_opens_nothing(client, newcomer):
    start_enrolment(client)

    assert client.get("/patients/").url.startswith("/accounts/verify/")
    assert client.get("/admin/").status_code == 302


def test_a_wrong_code_does_not_confirm_the_device(client, newcomer):
    start_enrolment(client)
    device = TOTPAuthenticator.objects.get(user=newcomer)
    wrong = "000000" if device.current_code() != "000000" else "111111"

    response = client.post("/accounts/enrol/", {"token": wrong})

    assert response.status_code == 200
    assert not TOTPAuthenticator.objects.get(user=newcomer).confirmed
    assert client.get("/patients/").status_code == 302


def test_a_valid_code_confirms_shows_backup_codes_once_and_is_audited(client, newcomer):
    response, codes = enrol(client, newcomer)

    assert len(codes) == 10 and len(set(codes)) == 10
    assert TOTPAuthenticator.objects.get(user=newcomer).confirmed
    assert client.get("/patients/").status_code == 200
    assert AuditEvent.objects.filter(
        actor_id=newcomer.pk, action=AuditAction.MFA_ENROLLED
    ).exists()
    assert client.get("/accounts/enrol/").status_code == 302
    later = client.get("/accounts/verify/", follow=True).content.decode()
    assert not BACKUP_PATTERN.search(later)


def test_backup_codes_carry_at_least_112_bits(client, newcomer):
    _, codes = enrol(client, newcomer)

    for code in codes:
        symbols = code.replace("-", "")
        assert len(symbols) * 5 >= 112


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_no_backup_code_is_stored_in_the_database_bytes(client, newcomer):
    _, codes = enrol(client, newcomer)

    stored = list(BackupCode.objects.values_list("digest", flat=True))
    assert len(stored) == 10
    database = connections["default"]
    if database.vendor == "sqlite":
        raw = Path(database.settings_dict["NAME"]).read_bytes()
        assert stored[0].encode() in raw, "the file holds the committed rows"
        for code in codes:
            assert code.encode() not in raw
            assert code.replace("-", "").encode() not in raw
    for code in codes:
        assert all(code.replace("-", "") not in digest for digest in stored)


def test_a_backup_code_signs_in_once(client, newcomer):
    with freeze_time(START) as clock:
        _, codes = enrol(client, newcomer)
        client.post("/accounts/logout/")

        sign_in_with_password(client, "nurse.new")
        assert submit_code(client, codes[3].upper()).status_code == 302
        assert client.get("/patients/").status_code == 200
        client.post("/accounts/logout/")

        clock.tick(datetime.timedelta(seconds=5))
        sign_in_with_password(client, "nurse.new")
        refused = submit_code(client, codes[3])

    assert refused.status_code == 200
    assert client.get("/patients/").status_code == 302
    last = AuditEvent.objects.filter(actor_id=newcomer.pk).order_by("-id").first()
    assert (last.action, last.purpose) == (AuditAction.OTP_REPLAYED, "backup_code")


def test_only_an_administrator_resets_a_device_and_it_is_audited(client, nurse):
    admin_user = make_user("admin.ross", Role.ADMIN)
    get_user_model().objects.filter(pk=admin_user.pk).update(
        is_staff=True, is_superuser=True
    )
    nurse_session = verified_client(nurse)
    assert nurse_session.get("/patients/").status_code == 200

    verified_client(admin_user).post(
        "/admin/accounts/user/",
        {"action": "reset_authenticator", "_selected_action": [nurse.pk]},
    )

    assert not TOTPAuthenticator.objects.filter(user=nurse).exists()
    assert nurse_session.get("/patients/").url.startswith("/accounts/login/")
    event = AuditEvent.objects.get(action=AuditAction.MFA_RESET)
    assert (event.actor_id, event.reason) == (admin_user.pk, "account nurse.jones")


def test_seeds_and_backup_codes_survive_a_key_rotation(client, newcomer, isolated_keys):
    with freeze_time(START) as clock:
        _, codes = enrol(client, newcomer)
        client.post("/accounts/logout/")
        rotate_keys(index_key=True)

        clock.tick(datetime.timedelta(seconds=31))
        sign_in_with_password(client, "nurse.new")
        device = TOTPAuthenticator.objects.get(user=newcomer)
        assert submit_code(client, device.current_code()).status_code == 302
        client.post("/accounts/logout/")
        sign_in_with_password(client, "nurse.new")
        assert submit_code(client, codes[0]).status_code == 302
