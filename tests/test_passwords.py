"""Passwords: 12 characters at least, not common, changed only with a code."""

import gzip
import random

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from freezegun import freeze_time

from accounts.common_passwords import LIST_PATH, build_common_passwords
from audit.models import AuditAction, AuditEvent
from tests.conftest import current_code
from tests.test_mfa import PASSWORD, START, sign_in_with_password, submit_code

NEW_PASSWORD = "violet kestrel 48 marrow"


def shipped_list() -> list[str]:
    with gzip.open(LIST_PATH, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle]


def test_the_shipped_list_holds_3000_entries_of_12_characters_or_more():
    words = shipped_list()

    assert len(words) >= 3000
    assert min(len(word) for word in words) >= 12


def test_the_shipped_list_is_what_the_generator_builds():
    assert shipped_list() == build_common_passwords()


def common_message(password) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        validate_password(password)
    return [error.code for error in refused.value.error_list]


@pytest.mark.parametrize(
    "password", ["passwordpassword", "123456789012", "Qwertyqwerty", "iloveyou2024"]
)
def test_well_known_long_passwords_are_refused(password):
    assert "password_too_common" in common_message(password)


def test_twenty_random_entries_of_the_list_are_refused():
    for password in random.Random(12).sample(shipped_list(), 20):
        assert "password_too_common" in common_message(password)


def test_eleven_characters_are_too_few_and_twelve_are_enough():
    assert "password_too_short" in common_message("Tr0ub4dor&3")

    validate_password("Tr0ub4dor&3x")


@pytest.mark.django_db(databases="__all__")
class TestPasswordChange:
    def signed_in(self, client, user):
        sign_in_with_password(client, user.get_username())
        submit_code(client, current_code(user))
        return client

    def post_change(self, client, *, old=PASSWORD, token):
        return client.post(
            "/accounts/password/",
            {
                "old_password": old,
                "new_password1": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
                "token": token,
            },
        )

    def test_current_password_and_code_change_it_and_it_is_audited(self, client, nurse):
        with freeze_time(START) as clock:
            self.signed_in(client, nurse)
            clock.tick(31)
            response = self.post_change(client, token=current_code(nurse))
            still_signed_in = client.get("/patients/")

        assert response.status_code == 302
        assert get_user_model().objects.get(pk=nurse.pk).check_password(NEW_PASSWORD)
        assert still_signed_in.status_code == 200
        assert AuditEvent.objects.filter(action=AuditAction.PASSWORD_CHANGED).exists()

    def test_a_wrong_code_changes_nothing(self, client, nurse):
        with freeze_time(START) as clock:
            self.signed_in(client, nurse)
            clock.tick(31)
            wrong = "000000" if current_code(nurse) != "000000" else "111111"
            response = self.post_change(client, token=wrong)

        assert response.status_code == 200
        assert get_user_model().objects.get(pk=nurse.pk).check_password(PASSWORD)
        assert AuditEvent.objects.filter(
            action=AuditAction.PASSWORD_CHANGE_FAILED
        ).exists()

    def test_a_wrong_current_password_changes_nothing(self, client, nurse):
        with freeze_time(START) as clock:
            self.signed_in(client, nurse)
            clock.tick(31)
            response = self.post_change(
                client, old="not my password 1", token=current_code(nurse)
            )

        assert response.status_code == 200
        assert get_user_model().objects.get(pk=nurse.pk).check_password(PASSWORD)
        refusal = AuditEvent.objects.get(action=AuditAction.PASSWORD_CHANGE_FAILED)
        assert refusal.reason == "current password wrong"

    def test_guessing_the_current_password_meets_the_lockout(self, client, nurse):
        with freeze_time(START) as clock:
            self.signed_in(client, nurse)
            clock.tick(31)
            responses = [
                self.post_change(client, old=f"guess number {n}", token="000000")
                for n in range(5)
            ]
            after = client.get("/patients/")

        assert responses[-1].status_code != 200
        assert after.status_code == 302, "the locked session is ended"
        assert (
            AuditEvent.objects.filter(action=AuditAction.PASSWORD_CHANGE_FAILED).count()
            == 5
        )

    def test_other_sessions_end_when_the_password_changes(self, client, nurse):
        other = type(client)()
        with freeze_time(START) as clock:
            self.signed_in(other, nurse)
            clock.tick(31)
            self.signed_in(client, nurse)
            clock.tick(31)
            self.post_change(client, token=current_code(nurse))

            assert other.get("/patients/").url.startswith("/accounts/login/")
            assert client.get("/patients/").status_code == 200

    def test_an_audit_outage_keeps_the_old_password(self, client, nurse, monkeypatch):
        from audit import services as audit_services

        write = audit_services._append

        def refuse_the_change(events, action):
            # The code is accepted and recorded; only the change's own event fails.
            if action == AuditAction.PASSWORD_CHANGED:
                raise audit_services.AuditUnavailable("audit database unreachable")
            return write(events, action)

        with freeze_time(START) as clock:
            self.signed_in(client, nurse)
            clock.tick(31)
            monkeypatch.setattr(audit_services, "_append", refuse_the_change)
            response = self.post_change(client, token=current_code(nurse))

        assert response.status_code == 503
        assert get_user_model().objects.get(pk=nurse.pk).check_password(PASSWORD)
