"""Appending to the chain as the portal does it, outside any caller's transaction.

Web requests and workers write with no transaction open on the audit
database; on PostgreSQL that append travels in two round trips (lock and head,
then the INSERT with its COMMIT). These tests commit for real, as the portal
does, so that path is the one they exercise.
"""

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections

from audit.chain import CHAIN_LOCK_ID
from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import AuditUnavailable, record_event, record_events
from ehr_portal import request_context
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def checkpoint_dir(settings, tmp_path):
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "checkpoints"


def _view(patient_ref: str, reason: str = "on care team"):
    return record_event(
        actor="system:test",
        action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
        patient_ref=patient_ref,
        fields=["vitals.value", "tab\there", 'quote " and back\\slash'],
        reason=reason,
    )


def test_committed_events_are_stored_as_sealed_and_verify(capsys):
    token = request_context.activate(
        request_context.RequestContext(
            request_id="a" * 32, ip_address="::ffff:10.1.2.3", device_fingerprint="f"
        )
    )
    try:
        single = _view("patient-1", reason="line one\nline two, ünïcode")
        many = record_events(
            actor="system:test",
            action=AuditAction.VIEWED,
            outcome=AuditOutcome.SUCCESS,
            records=[(f"patient-{n}", "Patient", ["name"]) for n in (2, 3, 4)],
        )
    finally:
        request_context.deactivate(token)

    stored = {event.pk: event for event in AuditEvent.objects.all()}
    assert sorted(stored) == sorted(event.pk for event in [single, *many])
    assert [stored[event.pk].sequence for event in [single, *many]] == [1, 2, 3, 4]
    assert stored[single.pk].fields == single.fields
    assert stored[single.pk].reason == "line one\nline two, ünïcode"
    assert stored[single.pk].ip_address == "10.1.2.3"
    assert [stored[event.pk].chain_hash for event in many] == [
        event.chain_hash for event in many
    ]
    call_command("verify_audit")
    assert "intact: 4 event(s)" in capsys.readouterr().out


@pytest.mark.postgresql
def test_a_failed_append_leaves_no_transaction_and_no_lock_behind(capsys):
    _view("patient-1")

    # Longer than the column: the INSERT fails after the lock was taken.
    with pytest.raises(AuditUnavailable):
        _view("p" * 65)

    session = connections["audit"].connection
    assert session.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(database_url("audit"), autocommit=True) as other_writer:
        taken = other_writer.execute(
            "SELECT pg_try_advisory_lock(%s)", [CHAIN_LOCK_ID]
        ).fetchone()[0]
        assert taken, "the chain lock is still held by the failed append"
        other_writer.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_ID])

    _view("patient-2")
    call_command("verify_audit")
    assert "intact: 2 event(s)" in capsys.readouterr().out
