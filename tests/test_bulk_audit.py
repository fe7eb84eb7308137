"""Bulk writes on clinical records leave one audit event per record, or are refused."""

import datetime

import pytest
from django.core.management import call_command

from audit.models import AuditAction, AuditEvent
from records.models import Condition, Observation, Patient, UnauditedBulkWrite

pytestmark = pytest.mark.django_db(databases="__all__")


def conditions_for(patient, count):
    return [
        Condition(
            patient=patient,
            source_key=f"condition-{number}",
            occurred_at=datetime.datetime(2020, 1, number + 1, tzinfo=datetime.UTC),
            description="Hypertension",
        )
        for number in range(count)
    ]


def test_bulk_create_without_an_actor_is_refused(marker_patient):
    with pytest.raises(UnauditedBulkWrite, match="actor"):
        Condition.objects.bulk_create(conditions_for(marker_patient, 2))

    assert not Condition.objects.exists()


def test_bulk_create_records_one_event_per_record(marker_patient, physician):
    Condition.objects.bulk_create(conditions_for(marker_patient, 3), actor=physician)

    events = AuditEvent.objects.filter(action=AuditAction.RECORD_CREATED)
    assert events.count() == 3
    assert {event.patient_ref for event in events} == {str(marker_patient.pk)}
    assert {event.actor_username for event in events} == {"dr.house"}
    assert {event.record_type for event in events} == {"Condition"}
    assert "description" in events.first().fields


def test_queryset_update_on_clinical_records_is_refused(marker_patient, physician):
    Condition.objects.bulk_create(conditions_for(marker_patient, 1), actor=physician)

    with pytest.raises(UnauditedBulkWrite):
        Condition.objects.filter(patient=marker_patient).update(status="resolved")

    assert Condition.objects.get().status == ""


def test_bulk_update_on_clinical_records_is_refused(marker_patient, physician):
    Condition.objects.bulk_create(conditions_for(marker_patient, 1), actor=physician)
    condition = Condition.objects.get()
    condition.status = "resolved"

    with pytest.raises(UnauditedBulkWrite):
        Condition.objects.bulk_update([condition], ["status"])

    assert Condition.objects.get().status == ""


def test_patients_are_guarded_too(marker_patient):
    with pytest.raises(UnauditedBulkWrite):
        Patient.objects.filter(pk=marker_patient.pk).update(source="fhir")


def test_import_audits_every_record_it_creates_by_a_named_actor(synthea_bundles):
    call_command("import_fhir", str(synthea_bundles[0]))

    created = AuditEvent.objects.filter(action=AuditAction.RECORD_CREATED)
    observations = created.filter(record_type="Observation").count()
    assert observations == Observation.objects.count() > 0
    assert created.count() >= observations
    assert not AuditEvent.objects.filter(actor_username__regex=r"^\s*$").exists()
    assert set(created.values_list("actor_username", flat=True)) == {
        AuditEvent.objects.get(action=AuditAction.FHIR_IMPORT).actor_username
    }


def test_demo_seeding_names_its_system_actor():
    call_command("seed_demo")

    seeded = AuditEvent.objects.get(action=AuditAction.DEMO_SEEDED)
    assert seeded.actor_username.startswith("system:")
