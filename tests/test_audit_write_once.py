"""The database itself refuses to change or remove audit events.

Each test goes around the model's own guard (the base QuerySet methods, raw
SQL through the portal's connection) to show the triggers hold on their own.
"""

import pytest
from django.db import DatabaseError, connections, models, transaction

from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import record_event

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def event():
    return record_event(
        actor="system:test", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS
    )


def assert_refused(write, event):
    with (
        pytest.raises(DatabaseError, match="write-once"),
        transaction.atomic(using="audit"),
    ):
        write()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.reason == ""
    assert stored.actor_username == "system:test"


def unguarded():
    """The audit events through Django's own QuerySet, without the model's guard."""
    return models.QuerySet(model=AuditEvent)


def raw_sql(statement, params=()):
    def write():
        with connections["audit"].cursor() as cursor:
            cursor.execute(statement, params)

    return write


def test_queryset_update_is_refused_by_the_database(event):
    events = unguarded().filter(pk=event.pk)

    assert_refused(lambda: events.update(reason="edited"), event)


def test_queryset_delete_is_refused_by_the_database(event):
    events = unguarded().filter(pk=event.pk)

    assert_refused(events.delete, event)


def test_bulk_update_is_refused_by_the_database(event):
    event.reason = "edited"

    assert_refused(lambda: unguarded().bulk_update([event], ["reason"]), event)


def test_raw_update_through_the_portal_connection_is_refused(event):
    statement = "UPDATE audit_auditevent SET reason = 'edited' WHERE id = %s"

    assert_refused(raw_sql(statement, [event.pk]), event)


def test_raw_delete_through_the_portal_connection_is_refused(event):
    assert_refused(raw_sql("DELETE FROM audit_auditevent"), event)


@pytest.mark.postgresql
def test_truncate_is_refused_on_postgresql(event):
    assert_refused(raw_sql("TRUNCATE audit_auditevent"), event)


def test_new_events_can_still_be_written(event):
    second = record_event(
        actor="system:test", action=AuditAction.LOGOUT, outcome=AuditOutcome.SUCCESS
    )

    assert AuditEvent.objects.filter(pk__in=[event.pk, second.pk]).count() == 2


@pytest.mark.parametrize("sequence", [0, -7])
def test_an_event_numbered_outside_the_chain_is_refused_by_the_database(
    event, sequence
):
    forged = AuditEvent(
        sequence=sequence, chain_hash="0" * 64, occurred_at=event.occurred_at,
        actor_username="dr.house", action=AuditAction.VIEWED,
        outcome=AuditOutcome.SUCCESS,
    )  # fmt: skip

    with (
        pytest.raises(DatabaseError, match="outside the chain"),
        transaction.atomic(using="audit"),
    ):
        models.QuerySet(model=AuditEvent).bulk_create([forged])

    assert AuditEvent.objects.count() == 1
