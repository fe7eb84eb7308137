"""Audit events are written once, in their own database, and never changed."""

import pytest
from django.db import connections

from audit.models import AuditAction, AuditEvent, AuditOutcome, WriteOnceError
from audit.services import record_event

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def event():
    return record_event(
        actor="system:test", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS
    )


def test_events_live_in_the_audit_database(event):
    tables = connections["audit"].introspection.table_names()
    assert "audit_auditevent" in tables
    assert "audit_auditevent" not in connections["default"].introspection.table_names()
    assert "records_patient" not in tables


def test_saving_an_existing_event_is_refused(event):
    event.reason = "edited"

    with pytest.raises(WriteOnceError):
        event.save()


def test_deleting_an_event_is_refused(event):
    with pytest.raises(WriteOnceError):
        event.delete()


def test_queryset_update_and_delete_are_refused(event):
    with pytest.raises(WriteOnceError):
        AuditEvent.objects.filter(pk=event.pk).update(reason="edited")
    with pytest.raises(WriteOnceError):
        AuditEvent.objects.all().delete()
    with pytest.raises(WriteOnceError):
        AuditEvent.objects.bulk_update([event], ["reason"])

    assert AuditEvent.objects.get(pk=event.pk).reason == ""


def test_system_actor_is_named(event):
    assert event.actor_username == "system:test"
    assert event.actor_role == "system"
    assert event.occurred_at.tzinfo is not None
