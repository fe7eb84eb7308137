"""The withheld notice counts every sensitive record, however it was written."""

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command

from records.models import (
    ClinicalNote,
    Patient,
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


def test_a_note_written_and_removed_moves_the_withheld_count(
    physician, nurse, marker_patient
):
    add_to_care_team(physician, marker_patient)
    add_to_care_team(nurse, marker_patient)
    physician.user_permissions.add(
        Permission.objects.get(codename="view_psychotherapy")
    )
    therapist = verified_client(type(physician).objects.get(pk=physician.pk))
    colleague = verified_client(nurse)
    before = _withheld_on_the_summary(colleague, marker_patient)

    therapist.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "psychotherapy", "title": "Session 1", "body": "Coping plan."},
    )
    after_note = _withheld_on_the_summary(colleague, marker_patient)
    ClinicalNote.objects.get().delete()
    after_removal = _withheld_on_the_summary(colleague, marker_patient)

    assert (before, after_note, after_removal) == (0, 1, 0)
