"""The withheld notice counts every sensitive record, however it was written."""

import threading
import time

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connections, transaction

from records.models import (
    ClinicalNote,
    Patient,
    SensitiveRecordTally,
    Sensitivity,
    clinical_record_models,
)
from tests.conftest import add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


def _counted_from_the_records(patient) -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in clinical_record_models():
        for record in model.objects.filter(patient=patient).exclude(
            sensitivity=Sensitivity.ROUTINE
        ):
            counts[record.sensitivity] = counts.get(record.sensitivity, 0) + 1
    return counts


def _withheld_on_the_summary(client, patient) -> int:
    body = client.get(f"/patients/{patient.pk}/").content.decode()
    if "withheld." not in body:
        return 0
    notice = body.split('<p class="withheld" role="note">', 1)[1]
    return int(notice.split("<strong>", 1)[1].split(" record", 1)[0])


def test_the_summary_withholds_exactly_what_the_records_hold(
    physician, synthea_bundles
):
    call_command("import_fhir", *map(str, synthea_bundles))
    client = verified_client(physician)
    checked = 0

    for patient in Patient.objects.all():
        add_to_care_team(physician, patient)
        expected = sum(_counted_from_the_records(patient).values())
        assert _withheld_on_the_summary(client, patient) == expected
        checked += expected > 0

    assert checked >= 2, "the Synthea set holds patients with sensitive records"


def _therapist_and_colleague(physician, nurse, patient):
    """Clients for a physician granted psychotherapy notes and a nurse without,
    both on the patient's care team."""
    add_to_care_team(physician, patient)
    add_to_care_team(nurse, patient)
    physician.user_permissions.add(
        Permission.objects.get(codename="view_psychotherapy")
    )
    therapist = verified_client(type(physician).objects.get(pk=physician.pk))
    return therapist, verified_client(nurse)


def _write_a_psychotherapy_note(therapist, patient) -> None:
    therapist.post(
        f"/patients/{patient.pk}/notes/new/",
        {"kind": "psychotherapy", "title": "Session 1", "body": "Coping plan."},
    )


def test_a_note_written_and_removed_moves_the_withheld_count(
    physician, nurse, marker_patient
):
    therapist, colleague = _therapist_and_colleague(physician, nurse, marker_patient)
    before = _withheld_on_the_summary(colleague, marker_patient)

    _write_a_psychotherapy_note(therapist, marker_patient)
    after_note = _withheld_on_the_summary(colleague, marker_patient)
    ClinicalNote.objects.get().delete()
    after_removal = _withheld_on_the_summary(colleague, marker_patient)

    assert (before, after_note, after_removal) == (0, 1, 0)


def test_a_reader_with_the_grant_is_not_told_the_record_is_withheld(
    physician, nurse, marker_patient
):
    therapist, colleague = _therapist_and_colleague(physician, nurse, marker_patient)
    _write_a_psychotherapy_note(therapist, marker_patient)

    for_the_therapist = _withheld_on_the_summary(therapist, marker_patient)
    for_the_nurse = _withheld_on_the_summary(colleague, marker_patient)

    assert (for_the_therapist, for_the_nurse) == (0, 1)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_two_sensitive_notes_written_at_once_are_both_counted(
    physician, marker_patient
):
    first_written = threading.Event()
    failures = []

    def write_note(title, hold_open):
        try:
            with transaction.atomic():
                ClinicalNote.objects.create(
                    patient=marker_patient, author=physician, kind="psychotherapy",
                    description=title, body="Session notes.", status="final",
                    sensitivity=Sensitivity.PSYCHOTHERAPY, source_key=title,
                )  # fmt: skip
                if hold_open:
                    # The second note is written while this one is uncommitted.
                    first_written.set()
                    time.sleep(0.5)
        except Exception as error:  # reported below, with its type
            failures.append(type(error).__name__)
        finally:
            connections.close_all()

    first = threading.Thread(target=write_note, args=("first", True))
    second = threading.Thread(target=write_note, args=("second", False))
    first.start()
    assert first_written.wait(10)
    second.start()
    first.join(20)
    second.join(20)

    assert failures == []
    tally = SensitiveRecordTally.objects.get(patient=marker_patient)
    assert tally.records == 2
