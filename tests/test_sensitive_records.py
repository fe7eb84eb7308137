"""Sensitive categories stay hidden from the care team without a matching grant."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from records.fhir_import import FHIR_ID_SYSTEM
from records.models import (
    ClinicalNote,
    Condition,
    MedicationRequest,
    Observation,
    Sensitivity,
)
from records.sensitivity import categories_visible_to
from records.services import find_patient_by_identifier
from tests.conftest import SYNTHEA_DIR, add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

# The Synthea patient with an opioid-use history and buprenorphine treatment.
SUD_BUNDLE = "Judi176_Sawayn19_cd5a6b35-2a1f-1f73-048e-c205f88f61bb.json"


@pytest.fixture
def sud_patient():
    call_command("import_fhir", str(SYNTHEA_DIR / SUD_BUNDLE))
    return find_patient_by_identifier(
        FHIR_ID_SYSTEM, "cd5a6b35-2a1f-1f73-048e-c205f88f61bb"
    )


def _grant(user, codename):
    user.user_permissions.add(Permission.objects.get(codename=codename))
    return type(user).objects.get(pk=user.pk)


def test_import_marks_substance_use_records(sud_patient):
    marked = [
        *Condition.objects.filter(patient=sud_patient, sensitivity="substance_use"),
        *MedicationRequest.objects.filter(
            patient=sud_patient, sensitivity="substance_use"
        ),
        *Observation.objects.filter(patient=sud_patient, sensitivity="substance_use"),
    ]
    descriptions = {record.description for record in marked}
    assert "Opioid abuse (disorder)" in descriptions
    assert any("buprenorphine" in text for text in descriptions)


def test_care_team_without_grant_sees_a_withheld_marker_not_the_record(
    physician, sud_patient
):
    add_to_care_team(physician, sud_patient)
    client = verified_client(physician)

    conditions = client.get(f"/patients/{sud_patient.pk}/conditions/").content.decode()
    medications = client.get(
        f"/patients/{sud_patient.pk}/medications/"
    ).content.decode()
    summary = client.get(f"/patients/{sud_patient.pk}/").content.decode()

    assert "Opioid abuse" not in conditions and "withheld" in conditions
    assert "buprenorphine" not in medications.lower() and "withheld" in medications
    assert "Opioid abuse" not in summary and "withheld" in summary


def test_the_grant_reveals_the_record(physician, sud_patient):
    add_to_care_team(physician, sud_patient)
    physician = _grant(physician, "view_substance_use")

    body = verified_client(physician).get(f"/patients/{sud_patient.pk}/conditions/")

    assert "Opioid abuse (disorder)" in body.content.decode()


def test_a_grant_held_by_a_group_reveals_the_record_to_its_members(
    physician, sud_patient
):
    add_to_care_team(physician, sud_patient)
    addiction_service = Group.objects.create(name="Addiction medicine")
    addiction_service.permissions.add(
        Permission.objects.get(codename="view_substance_use")
    )
    url = f"/patients/{sud_patient.pk}/conditions/"

    before = verified_client(physician).get(url).content.decode()
    physician.groups.add(addiction_service)
    after = verified_client(physician).get(url).content.decode()

    assert "Opioid abuse (disorder)" not in before
    assert "Opioid abuse (disorder)" in after


def test_another_grant_reveals_nothing_and_an_inactive_user_holds_none(
    physician, sud_patient
):
    add_to_care_team(physician, sud_patient)
    hiv_only = _grant(physician, "view_hiv")
    url = f"/patients/{sud_patient.pk}/conditions/"

    body = verified_client(hiv_only).get(url).content.decode()

    assert "Opioid abuse (disorder)" not in body and "withheld" in body
    granted = _grant(physician, "view_substance_use")
    granted.is_active = False
    assert categories_visible_to(granted) == {Sensitivity.ROUTINE.value}


def test_hiv_status_is_withheld_without_grant(physician, synthea_bundles):
    hiv_bundle = next(
        path for path in synthea_bundles if '"55277-8"' in path.read_text()
    )
    call_command("import_fhir", str(hiv_bundle))
    # Codes are sealed, so the test finds the record by reading each one.
    observation = next(o for o in Observation.objects.all() if o.code == "55277-8")
    add_to_care_team(physician, observation.patient)

    body = (
        verified_client(physician)
        .get(f"/patients/{observation.patient_id}/observations/")
        .content.decode()
    )

    assert observation.sensitivity == "hiv"
    assert "HIV status" not in body and "withheld" in body


def test_psychotherapy_notes_need_the_grant_to_write_and_read(
    physician, nurse, marker_patient
):
    add_to_care_team(physician, marker_patient)
    add_to_care_team(nurse, marker_patient)
    note = {
        "kind": "psychotherapy",
        "title": "Session 3",
        "body": "Discussed coping plan.",
    }

    verified_client(nurse).post(f"/patients/{marker_patient.pk}/notes/new/", note)
    assert not ClinicalNote.objects.exists()

    therapist = _grant(physician, "view_psychotherapy")
    verified_client(therapist).post(f"/patients/{marker_patient.pk}/notes/new/", note)
    assert ClinicalNote.objects.get().sensitivity == "psychotherapy"

    nurse_view = verified_client(nurse).get(f"/patients/{marker_patient.pk}/notes/")
    therapist_view = verified_client(therapist).get(
        f"/patients/{marker_patient.pk}/notes/"
    )
    assert "coping plan" not in nurse_view.content.decode()
    assert "1 record withheld" in nurse_view.content.decode()
    assert "coping plan" in therapist_view.content.decode()


def test_progress_notes_are_written_encrypted_and_audited(nurse, marker_patient):
    from audit.models import AuditAction, AuditEvent

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)

    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "nursing", "title": "Night round", "body": "Slept well, pain 2/10."},
    )

    assert response.status_code == 302
    note = ClinicalNote.objects.get()
    assert note.author == nurse and note.body == "Slept well, pain 2/10."
    event = AuditEvent.objects.get(action=AuditAction.NOTE_CREATED)
    assert event.patient_ref == str(marker_patient.pk)
    assert (
        "Slept well"
        in client.get(f"/patients/{marker_patient.pk}/notes/").content.decode()
    )


def test_compliance_officer_sees_identity_and_history_but_no_clinical_content(
    physician, compliance_officer, sud_patient
):
    add_to_care_team(physician, sud_patient)
    verified_client(physician).get(f"/patients/{sud_patient.pk}/conditions/")

    response = verified_client(compliance_officer).post(
        "/compliance/patient-access/", {"mrn": sud_patient.mrn}
    )

    body = response.content.decode()
    assert sud_patient.family_name in body and sud_patient.mrn_display in body
    assert "dr.house" in body
    assert "Opioid" not in body and "Condition" in body


def test_substance_use_in_reasons_results_and_procedures_is_withheld_too(
    physician, sud_patient
):
    from records.models import Encounter, Procedure

    add_to_care_team(physician, sud_patient)
    client = verified_client(physician)

    reasons = [e.reason for e in Encounter.objects.filter(patient=sud_patient)]
    assert "Opioid abuse (disorder)" in reasons, "the bundle has such encounters"
    pages = "".join(
        client.get(
            f"/patients/{sud_patient.pk}/{section}/?page={page}"
        ).content.decode()
        for section in ("encounters", "labs", "procedures")
        for page in (1, 2, 3)
    )
    api = client.get(f"/api/v1/patients/{sud_patient.pk}/encounters/").content.decode()

    for text in ("Opioid abuse", "Drugs of abuse", "Assessment of substance use"):
        assert text not in pages and text not in api, text
    assert Procedure.objects.filter(
        patient=sud_patient, sensitivity="substance_use"
    ).exists()


def test_a_note_that_cannot_be_saved_keeps_what_was_typed(nurse, marker_patient):
    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    typed = "Wound dressing changed at 06:00. " + "x" * 20_000

    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "nursing", "title": "Night round", "body": typed},
    )

    body = response.content.decode()
    assert response.status_code == 400
    assert "Wound dressing changed at 06:00." in body
    assert "at most 20000 characters" in body
    assert not ClinicalNote.objects.exists()


def test_psychotherapy_notes_are_offered_only_with_the_grant(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    url = f"/patients/{marker_patient.pk}/notes/"

    without = verified_client(physician).get(url).content.decode()
    therapist = _grant(physician, "view_psychotherapy")
    with_grant = verified_client(therapist).get(url).content.decode()

    assert 'value="psychotherapy"' not in without
    assert 'value="psychotherapy"' in with_grant
