"""A process given another chain key writes nothing to the trail.

Events sealed under a wrong key (a mistyped PORTAL_AUDIT_CHAIN_KEY, a key
file from another deployment) could never be verified with the right one:
the evidence of every access they record would be lost. The first writer
records the key's fingerprint; any later writer must hold the same key.
"""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import DatabaseError, connections, transaction

from audit.chain import chain_key, key_fingerprint
from audit.models import (
    AuditAction,
    AuditEvent,
    AuditOutcome,
    ChainKeyFingerprint,
    WriteOnceError,
)
from audit.services import AuditUnavailable, record_event
from tests.conftest import add_to_care_team, audit_triggers_lifted, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

ANOTHER_KEY = "another-deployments-chain-key-" + "x" * 30


def _view(reason: str = "on care team"):
    return record_event(
        actor="system:test",
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
        patient_ref="patient-1",
        reason=reason,
    )


def test_the_first_event_records_the_fingerprint_of_the_chain_key(settings):
    _view()

    recorded = ChainKeyFingerprint.objects.get()
    assert recorded.fingerprint == key_fingerprint(chain_key())
    assert settings.AUDIT_CHAIN_KEY not in recorded.fingerprint
    assert key_fingerprint(ANOTHER_KEY.encode()) != recorded.fingerprint


def test_a_process_with_another_chain_key_writes_nothing(settings, caplog):
    _view()

    settings.AUDIT_CHAIN_KEY = ANOTHER_KEY
    with pytest.raises(AuditUnavailable):
        _view("written with the wrong key")

    assert AuditEvent.objects.count() == 1
    assert ChainKeyFingerprint.objects.count() == 1
    assert "not the one the trail is sealed with" in caplog.text
    assert ANOTHER_KEY not in caplog.text


def test_a_chart_opened_through_a_process_with_another_key_is_not_shown(
    settings, physician, marker_patient
):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    assert client.get(f"/patients/{marker_patient.pk}/").status_code == 200

    settings.AUDIT_CHAIN_KEY = ANOTHER_KEY
    response = client.get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    assert marker_patient.family_name not in response.content.decode()


def test_a_trail_without_a_fingerprint_takes_the_key_its_newest_event_verifies_under(
    settings,
):
    _view()
    _view()
    # A trail written before fingerprints were recorded.
    with audit_triggers_lifted() as connection, connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_chainkeyfingerprint")
    right_key = settings.AUDIT_CHAIN_KEY

    settings.AUDIT_CHAIN_KEY = ANOTHER_KEY
    with pytest.raises(SystemCheckError, match="hipaa.E302"):
        call_command("check", "--database", "audit", "--tag", "hipaa")
    with pytest.raises(AuditUnavailable):
        _view("written with the wrong key")
    assert not ChainKeyFingerprint.objects.exists()

    settings.AUDIT_CHAIN_KEY = right_key
    event = _view("written with the right key")
    assert event.sequence == 3
    assert ChainKeyFingerprint.objects.get().fingerprint == key_fingerprint(
        right_key.encode()
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_chainkeyfingerprint SET fingerprint = 'another'",
        "DELETE FROM audit_chainkeyfingerprint",
    ],
)
def test_the_recorded_key_cannot_be_changed_or_removed(statement):
    _view()

    with (
        pytest.raises(DatabaseError, match="write-once"),
        transaction.atomic(using="audit"),
        connections["audit"].cursor() as cursor,
    ):
        cursor.execute(statement)

    recorded = ChainKeyFingerprint.objects.get()
    with pytest.raises(WriteOnceError):
        ChainKeyFingerprint.objects.update(fingerprint="another")
    with pytest.raises(WriteOnceError):
        recorded.delete()
    assert recorded.fingerprint == key_fingerprint(chain_key())


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_outside_a_transaction_another_key_is_refused_and_the_trail_still_takes_events(
    settings,
):
    # As web requests write: no transaction open on the audit database.
    right_key = settings.AUDIT_CHAIN_KEY
    _view()

    settings.AUDIT_CHAIN_KEY = ANOTHER_KEY
    with pytest.raises(AuditUnavailable):
        _view("written with the wrong key")

    settings.AUDIT_CHAIN_KEY = right_key
    assert _view("written with the right key").sequence == 2
    assert list(AuditEvent.objects.values_list("reason", flat=True).order_by("id")) == [
        "on care team",
        "written with the right key",
    ]


def test_the_system_check_names_a_chain_key_the_trail_was_not_sealed_with(settings):
    call_command("check", "--database", "audit", "--tag", "hipaa")
    _view()
    call_command("check", "--database", "audit", "--tag", "hipaa")

    settings.AUDIT_CHAIN_KEY = ANOTHER_KEY
    with pytest.raises(SystemCheckError, match="hipaa.E302"):
        call_command("check", "--database", "audit", "--tag", "hipaa")


@pytest.mark.parametrize("slot", [1, 2])
def test_a_second_key_cannot_be_recorded_beside_the_first(slot):
    # What the writer role could try: it may INSERT into the table.
    _view()
    another = key_fingerprint(ANOTHER_KEY.encode())

    with (
        pytest.raises(DatabaseError),
        transaction.atomic(using="audit"),
        connections["audit"].cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO audit_chainkeyfingerprint (slot, fingerprint, recorded_at) "
            "VALUES (%s, %s, CURRENT_TIMESTAMP)",
            [slot, another],
        )

    assert list(ChainKeyFingerprint.objects.values_list("fingerprint", flat=True)) == [
        key_fingerprint(chain_key())
    ]
