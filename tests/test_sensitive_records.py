"""Sensitive categories stay hidden from the care team without a matching grant."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command

from records.fhir_import import FHIR_ID_SYSTEM
from records.models import (
    ClinicalNote,
    Condition,
    MedicationRequest,
    Observation,
    Patient,
    Procedure,
    Sensitivity,
)
from records.sensitivity import categories_visible_to, sensitivities_of_bundle
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
    # Says how the writer came to the chart, as a view's event does; the
    # chart's recent-access panel shows it.
    assert event.reason == "care team member"
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


def _import_and_open(physician, bundle: str, section: str) -> tuple[Patient, str]:
    call_command("import_fhir", str(SYNTHEA_DIR / bundle))
    patient_id = bundle.rsplit("_", 1)[1].removesuffix(".json")
    patient = find_patient_by_identifier(FHIR_ID_SYSTEM, patient_id)
    add_to_care_team(physician, patient)
    client = verified_client(physician)
    url = f"/patients/{patient.pk}/{section}/"
    pages = [client.get(url).content.decode()]
    for number in range(2, 10):
        page = client.get(f"{url}?page={number}")
        if f"Page {number} of" not in page.content.decode():
            break
        pages.append(page.content.decode())
    return patient, "".join(pages)


def test_drug_rehabilitation_encounters_are_withheld_without_grant(physician):
    _patient, encounters = _import_and_open(
        physician, "Yang129_Eichmann909_6b01025b-43b4-a9e4-525b-872995031987.json",
        "encounters",
    )  # fmt: skip

    assert "Drug rehabilitation" not in encounters and "withheld" in encounters


def test_care_given_for_a_withheld_diagnosis_is_withheld_with_it(physician):
    # The psychosocial care procedures name no substance in their own code;
    # their reasonReference points at the opioid abuse diagnosis.
    _patient, procedures = _import_and_open(physician, SUD_BUNDLE, "procedures")

    assert "Psychosocial care" not in procedures and "withheld" in procedures


def test_alcohol_screening_results_are_withheld_with_the_screening(physician):
    _patient, observations = _import_and_open(
        physician, "Alfonzo975_Hickle134_cd3d3588-94fc-b980-9e94-0390d989d921.json",
        "observations",
    )  # fmt: skip
    _patient, conditions = _import_and_open(
        physician, "Alfonzo975_Hickle134_cd3d3588-94fc-b980-9e94-0390d989d921.json",
        "conditions",
    )  # fmt: skip

    assert "AUDIT-C" not in observations and "DAST-10" not in observations
    assert "Unhealthy alcohol drinking" not in conditions


def test_references_carry_a_category_along_a_chain_but_not_through_the_encounter():
    opioid = {"resourceType": "Condition", "code": {"coding": [{"code": "5602001"}]}}
    care = {
        "resourceType": "Procedure",
        "code": {"coding": [{"code": "408919008"}]},
        "reasonReference": [{"reference": "urn:uuid:opioid"}],
    }
    follow_up = {
        "resourceType": "Procedure",
        "partOf": [{"reference": "Procedure/care"}],
    }
    vitals = {
        "resourceType": "Observation",
        "encounter": {"reference": "urn:uuid:opioid"},
    }

    found = sensitivities_of_bundle([
        ({"urn:uuid:opioid"}, opioid), ({"Procedure/care"}, care),
        ({"Procedure/next"}, follow_up), ({"Observation/vitals"}, vitals),
    ])  # fmt: skip

    assert found == ["substance_use", "substance_use", "substance_use", ""]


def test_a_record_imported_under_older_rules_is_reclassified_at_re_import(
    physician, capsys
):
    from audit.models import AuditAction, AuditEvent

    call_command("import_fhir", str(SYNTHEA_DIR / SUD_BUNDLE))
    procedures = [
        p for p in Procedure.objects.all() if p.description.startswith("Psychosocial")
    ]
    for procedure in procedures:
        procedure.sensitivity = ""
        procedure.save()
    capsys.readouterr()

    call_command("import_fhir", str(SYNTHEA_DIR / SUD_BUNDLE))

    summary = capsys.readouterr().out
    assert f"({len(procedures)} now withheld as sensitive)" in summary
    assert "already present keep what was stored" in summary

    assert procedures
    assert {Procedure.objects.get(pk=p.pk).sensitivity for p in procedures} == {
        "substance_use"
    }
    reclassified = AuditEvent.objects.filter(action=AuditAction.RECORD_RECLASSIFIED)
    assert reclassified.count() == len(procedures)


# A routine code of each terminology, spelled as that terminology writes it.
ROUTINE_CODES = {
    "http://snomed.info/sct": "38341003",  # Hypertension
    "http://loinc.org": "8302-2",  # Body height
    "http://www.nlm.nih.gov/research/umls/rxnorm": "314076",  # lisinopril 10 MG
}


def _without_sensitive_codes(document):
    """The bundle with every listed sensitive code swapped for a routine one."""
    from records.sensitivity import SENSITIVE_CODES

    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("code"), str) and item["code"] in SENSITIVE_CODES:
                item["code"] = ROUTINE_CODES.get(item.get("system"), "38341003")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return document


def test_an_edited_copy_of_a_bundle_cannot_lift_records_out_of_their_category(
    physician, tmp_path
):
    import json

    call_command("import_fhir", str(SYNTHEA_DIR / SUD_BUNDLE))
    withheld = set(
        Procedure.objects.filter(sensitivity="substance_use").values_list(
            "pk", flat=True
        )
    )
    edited = tmp_path / "edited.json"
    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    edited.write_text(json.dumps(_without_sensitive_codes(bundle)))

    call_command("import_fhir", str(edited))

    assert withheld
    still = Procedure.objects.filter(pk__in=withheld)
    assert {procedure.sensitivity for procedure in still} == {"substance_use"}
    assert "substance_use" not in categories_visible_to(physician)


def test_nursing_notes_are_written_by_nurses_only(physician, nurse, marker_patient):
    add_to_care_team(physician, marker_patient)
    add_to_care_team(nurse, marker_patient)
    note = {"kind": "nursing", "title": "Night round", "body": "Slept well."}
    url = f"/patients/{marker_patient.pk}/notes/"

    page = verified_client(physician).get(url).content.decode()
    refused = verified_client(physician).post(f"{url}new/", note)
    api = verified_client(physician).post(
        f"/api/v1/patients/{marker_patient.pk}/notes/", note,
        content_type="application/json",
    )  # fmt: skip

    assert 'value="nursing"' not in page and 'value="progress"' in page
    assert refused.status_code == 403
    assert "Nursing notes are written by nurses." in refused.content.decode()
    assert "Slept well." in refused.content.decode(), "the text is kept"
    assert api.status_code == 403
    assert "nursing notes are written by nurses" in api.json()["detail"]
    assert not ClinicalNote.objects.exists()

    assert 'value="nursing"' in verified_client(nurse).get(url).content.decode()
    written = verified_client(nurse).post(f"{url}new/", note)
    assert written.status_code == 302
    assert ClinicalNote.objects.get().kind == "nursing"


@pytest.mark.parametrize(
    "writer, kind, action",
    [
        ("nurse", "nursing", "NOTE_CREATED"),
        ("physician", "nursing", "ACCESS_DENIED"),
        ("physician", "psychotherapy", "ACCESS_DENIED"),
    ],
)
def test_a_note_sent_through_the_api_leaves_one_event_saying_what_happened(
    request, marker_patient, writer, kind, action
):
    from audit.models import AuditAction, AuditEvent

    author = request.getfixturevalue(writer)
    add_to_care_team(author, marker_patient)

    verified_client(author).post(
        f"/api/v1/patients/{marker_patient.pk}/notes/",
        {"kind": kind, "title": "Round", "body": "Settled."},
        content_type="application/json",
    )

    events = AuditEvent.objects.filter(patient_ref=str(marker_patient.pk))
    assert [event.action for event in events] == [AuditAction[action]]
    assert events.get().actor_username == author.username


def test_who_viewed_says_when_it_shows_only_the_newest_accesses(
    physician, compliance_officer, marker_patient
):
    from audit.models import AuditAction, AuditOutcome
    from audit.services import record_event
    from records import services

    def view(actor, action=AuditAction.VIEWED):
        record_event(
            actor=actor, action=action, outcome=AuditOutcome.SUCCESS,
            patient_ref=marker_patient.pk, record_type="ChartSummary",
        )  # fmt: skip

    view(physician, AuditAction.BREAK_GLASS)
    view(compliance_officer, AuditAction.IDENTITY_REVIEWED)
    for _ in range(4):
        view(physician)
    officer = verified_client(compliance_officer)

    whole = officer.post("/compliance/patient-access/", {"mrn": marker_patient.mrn})
    services.ACCESS_REPORT_ROWS, kept = 3, services.ACCESS_REPORT_ROWS
    try:
        cut = officer.post("/compliance/patient-access/", {"mrn": marker_patient.mrn})
    finally:
        services.ACCESS_REPORT_ROWS = kept

    whole_body, cut_body = whole.content.decode(), cut.content.decode()
    assert "Break-the-glass" in whole_body and "Patient identity reviewed" in whole_body
    assert "Showing the newest" not in whole_body
    # Six accesses, then each report's own identity review.
    assert "Showing the newest 3 of 8 accesses." in " ".join(cut_body.split())
    assert (
        'name="patient_mrn"' in cut_body and 'action="/compliance/audit/"' in cut_body
    )


@pytest.mark.parametrize("written_as", ["urn:uuid:{}", "Condition/{}"])
def test_care_for_a_diagnosis_imported_in_an_earlier_bundle_is_withheld_with_it(
    tmp_path, written_as
):
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    entries = bundle["entry"]
    patient_entry = next(
        e for e in entries if e["resource"]["resourceType"] == "Patient"
    )
    given_for_a_reason = [
        e for e in entries
        if e["resource"]["resourceType"] == "Procedure"
        and "reasonReference" in e["resource"]
    ]  # fmt: skip
    for entry in given_for_a_reason:
        for reason in entry["resource"]["reasonReference"]:
            condition_id = reason["reference"].removeprefix("urn:uuid:")
            reason["reference"] = written_as.format(condition_id)
    earlier = {**bundle, "entry": [e for e in entries if e not in given_for_a_reason]}
    later = {**bundle, "entry": [patient_entry, *given_for_a_reason]}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    (tmp_path / "later.json").write_text(json.dumps(later))

    call_command("import_fhir", str(tmp_path / "earlier.json"))
    call_command("import_fhir", str(tmp_path / "later.json"))

    psychosocial = [
        procedure
        for procedure in Procedure.objects.all()
        if procedure.description.startswith("Psychosocial care")
    ]
    assert psychosocial
    assert {procedure.sensitivity for procedure in psychosocial} == {"substance_use"}


def _one_record_bundle(tmp_path, resource_type: str, coding: dict, **extra):
    """The SUD patient with one record of ``resource_type`` coded ``coding``."""
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    patient = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    record = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    )
    record["resource"]["code"] = {"coding": [coding], "text": "As written"}
    record["resource"].update(extra)
    path = tmp_path / f"one-{resource_type}.json"
    path.write_text(json.dumps({**bundle, "entry": [patient, record]}))
    return path


@pytest.mark.parametrize(
    "coding",
    [
        {"code": "８６４０６００８"},
        {"system": "http://snomed.info/sct/", "code": "086406008"},
        {"code": "٨٦٤٠٦٠٠٨"},
        {"code": "८६४०६००८"},
        {"system": "urn:local", "code": "86406 008"},
        {"system": "urn:local", "code": "86406\u200b008"},
        {"system": "urn:local", "code": "5527\u00a07-8"},
    ],
    ids=[
        "full-width", "snomed-with-slash", "arabic-indic", "devanagari",
        "inner-space", "zero-width-space", "no-break-space",
    ],
)  # fmt: skip
def test_a_listed_code_in_another_spelling_is_withheld(tmp_path, coding):
    call_command("import_fhir", str(_one_record_bundle(tmp_path, "Condition", coding)))

    assert {c.sensitivity for c in Condition.objects.all()} == {"hiv"}


@pytest.mark.parametrize(
    "system",
    [
        "urn:oid:2.16.840.1.113883.6.96",
        "urn:oid:2.16.840.1.113883.6.1",
        "urn:oid:2.16.840.1.113883.6.88",
    ],
    ids=["snomed-oid", "loinc-oid", "rxnorm-oid"],
)
def test_a_terminology_named_by_its_oid_is_held_to_its_spelling(
    tmp_path, capsys, system
):
    coding = {"system": system, "code": "٨٦٤٠٦٠٠٨"}

    with pytest.raises(CommandError):
        call_command(
            "import_fhir", str(_one_record_bundle(tmp_path, "Condition", coding))
        )

    assert "code.coding.0.code: not " in capsys.readouterr().err
    assert not Condition.objects.exists()


def test_a_code_outside_a_codeable_concept_counts(tmp_path):
    routine = {"system": "http://snomed.info/sct", "code": "38341003"}
    extension = [
        {
            "url": "http://example.org/fhir/StructureDefinition/context",
            "valueCoding": {"system": "http://snomed.info/sct", "code": "86406008"},
        }
    ]
    path = _one_record_bundle(tmp_path, "Condition", routine, extension=extension)

    call_command("import_fhir", str(path))

    assert {c.sensitivity for c in Condition.objects.all()} == {"hiv"}


@pytest.mark.parametrize(
    ("label", "category"),
    [("HIV", "hiv"), ("ETH", "substance_use"), ("OPIOIDUD", "substance_use"),
     ("GDIS", "genetic"), ("PSYTHPN", "psychotherapy"),
     ("42CFRPart2", "substance_use")],
)  # fmt: skip
def test_a_security_label_puts_a_record_in_its_category(tmp_path, label, category):
    routine = {"system": "http://snomed.info/sct", "code": "38341003"}
    meta = {
        "security": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": label,
            }
        ]
    }
    path = _one_record_bundle(tmp_path, "Condition", routine, meta=meta)

    call_command("import_fhir", str(path))

    assert {c.sensitivity for c in Condition.objects.all()} == {category}


def test_a_condition_whose_evidence_is_an_hiv_diagnosis_is_withheld_with_it(tmp_path):
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    patient = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    first, second = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
    ][:2]
    first["resource"]["code"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": "86406008"}],
        "text": "Human immunodeficiency virus infection",
    }
    second["resource"]["code"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}],
        "text": "Hypertension",
    }
    second["resource"]["evidence"] = [{"detail": [{"reference": first["fullUrl"]}]}]
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps({**bundle, "entry": [patient, first, second]}))

    call_command("import_fhir", str(path))

    assert {c.description: c.sensitivity for c in Condition.objects.all()} == {
        "Human immunodeficiency virus infection": "hiv",
        "Hypertension": "hiv",
    }


@pytest.mark.parametrize("code", ["055277-8", "55277-08"])
def test_a_loinc_code_with_a_leading_zero_is_refused(tmp_path, capsys, code):
    coding = {"system": "http://loinc.org", "code": code}
    path = _one_record_bundle(tmp_path, "Observation", coding)

    with pytest.raises(CommandError):
        call_command("import_fhir", str(path))

    assert "code.coding.0.code: not a LOINC code" in capsys.readouterr().err
    assert not Observation.objects.exists()


def test_a_version_specific_reason_reference_is_followed(tmp_path):
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    for entry in bundle["entry"]:
        for reason in entry["resource"].get("reasonReference", []):
            condition_id = reason["reference"].removeprefix("urn:uuid:")
            reason["reference"] = f"Condition/{condition_id}/_history/1"
    path = tmp_path / "versioned.json"
    path.write_text(json.dumps(bundle))

    call_command("import_fhir", str(path))

    psychosocial = [
        p for p in Procedure.objects.all() if p.description.startswith("Psychosocial")
    ]
    assert psychosocial
    assert {p.sensitivity for p in psychosocial} == {"substance_use"}


def test_a_reason_not_imported_yet_refuses_the_bundle_until_it_is(tmp_path, capsys):
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    entries = bundle["entry"]
    patient = next(e for e in entries if e["resource"]["resourceType"] == "Patient")
    given_for_a_reason = [
        e for e in entries
        if e["resource"]["resourceType"] == "Procedure"
        and "reasonReference" in e["resource"]
    ]  # fmt: skip
    first = tmp_path / "care-first.json"
    first.write_text(json.dumps({**bundle, "entry": [patient, *given_for_a_reason]}))
    rest = tmp_path / "diagnoses.json"
    rest.write_text(
        json.dumps(
            {**bundle, "entry": [e for e in entries if e not in given_for_a_reason]}
        )
    )

    with pytest.raises(CommandError):
        call_command("import_fhir", str(first))
    refusal = capsys.readouterr().err
    call_command("import_fhir", str(rest))
    call_command("import_fhir", str(first))

    assert "import the bundle that holds it first" in refusal
    psychosocial = [
        p for p in Procedure.objects.all() if p.description.startswith("Psychosocial")
    ]
    assert psychosocial
    assert {p.sensitivity for p in psychosocial} == {"substance_use"}


def _bundle_of(tmp_path, name: str, *resources: dict):
    """A bundle of the SUD patient and ``resources`` (each given a fullUrl)."""
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    patient = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    entries = [patient]
    for resource in resources:
        entries.append({
            "fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        })  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**bundle, "entry": entries}))
    return path, patient["fullUrl"]


def _condition(condition_id: str, patient_url: str, code: str, text: str, **extra):
    return {
        "resourceType": "Condition", "id": condition_id,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active",
        }]},
        "code": {"coding": [{"system": "urn:local", "code": code}], "text": text},
        "subject": {"reference": patient_url},
        "onsetDateTime": "2015-03-01T10:00:00+00:00",
        **extra,
    }  # fmt: skip


HIV_ID = "5f1e8a8e-1111-4c3b-9a55-000000000001"


def _import_hiv_condition_first(tmp_path):
    path, patient_url = _bundle_of(tmp_path, "hiv", _condition(
        HIV_ID, _patient_url(), "86406008", "HIV infection"
    ))  # fmt: skip
    call_command("import_fhir", str(path))
    return patient_url


def _patient_url():
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    return next(
        e["fullUrl"] for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )  # fmt: skip


@pytest.mark.parametrize(
    "code",
    ["55277\u20108", "55277\u22128", "55277\u20138", "55277\u20118",
     "86406\u034f008", "86406\u3164008", "፰፮፬0፮00፰",
     "86406008 |Human immunodeficiency virus infection|"],
    ids=["hyphen", "minus", "en-dash", "non-breaking-hyphen", "grapheme-joiner",
         "hangul-filler", "ethiopic", "snomed-expression"],
)  # fmt: skip
def test_any_spelling_of_a_listed_code_is_withheld(tmp_path, code):
    path, patient_url = _bundle_of(
        tmp_path, "spelling", _condition(HIV_ID, _patient_url(), code, "Coded oddly")
    )

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == "hiv"


ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9_CM = "http://hl7.org/fhir/sid/icd-9-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ROUTINE = Sensitivity.ROUTINE.value


@pytest.mark.parametrize(
    "coding, category",
    [
        ({"system": ICD10_CM, "code": "B20"}, "hiv"),
        ({"system": ICD10_CM, "code": "F11.20"}, "substance_use"),
        ({"system": "urn:oid:2.16.840.1.113883.6.90", "code": "Z21"}, "hiv"),
        ({"system": ICD10, "code": "f10.2"}, "substance_use"),
        ({"system": ICD10_CM, "code": "O98.71"}, "hiv"),
        ({"code": "Ｆ１４．１０"}, "substance_use"),
        ({"system": ICD9_CM, "code": "042"}, "hiv"),
        ({"system": ICD9_CM, "code": "V08"}, "hiv"),
        ({"system": ICD9_CM, "code": "304.01"}, "substance_use"),
        ({"system": ICD10_CM, "code": "\u041220"}, "hiv"),  # Cyrillic B
        ({"system": ICD10_CM, "code": "ICD10CM:F11.20"}, "substance_use"),
        ({"system": ICD10_CM, "code": "F11.20XXX"}, "substance_use"),
        ({"system": ICD10, "code": "F1O.2"}, "substance_use"),
        ({"system": ICD10_CM, "code": "Z20.6"}, "hiv"),
        ({"system": ICD10_CM, "code": "Z15.01"}, "genetic"),
        ({"system": ICD10_CM, "code": "F17.210"}, ROUTINE),
        ({"system": ICD9_CM, "code": "305.1"}, ROUTINE),
    ],
    ids=[
        "hiv-disease", "opioid-dependence", "asymptomatic-hiv-by-oid",
        "alcohol-icd-10-lower-case", "hiv-in-pregnancy", "cocaine-no-system",
        "icd-9-hiv", "icd-9-hiv-status", "icd-9-opioid-dependence",
        "cyrillic-b", "prefixed", "padded", "letter-o-for-zero",
        "hiv-exposure", "genetic-susceptibility",
        "nicotine-dependence", "icd-9-tobacco-use",
    ],
)  # fmt: skip
def test_icd_coded_diagnoses_take_their_category(tmp_path, coding, category):
    condition = _condition(HIV_ID, _patient_url(), "0", "See the coding")
    condition["code"] = {"coding": [coding], "text": "See the coding"}
    path, _ = _bundle_of(tmp_path, "icd", condition)

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == category


def test_a_result_written_out_in_a_value_takes_its_category(tmp_path):
    serology = _observation(
        HIV_ID, _patient_url(),
        code={"text": "Infectious serology"},
        valueString="HIV-1/2 antibody: reactive",
    )  # fmt: skip
    del serology["valueQuantity"]
    path, _ = _bundle_of(tmp_path, "value", serology)

    call_command("import_fhir", str(path))

    assert Observation.objects.get().sensitivity == "hiv"


def test_an_icd_code_in_an_extension_counts(tmp_path):
    condition = _condition(HIV_ID, _patient_url(), "0", "Chronic viral infection")
    condition["code"] = {"text": "Chronic viral infection"}
    condition["extension"] = [{"url": "http://example.org/dx", "valueCode": "B20"}]
    path, _ = _bundle_of(tmp_path, "extension", condition)

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == "hiv"


@pytest.mark.parametrize("where", ["patient", "bundle"])
def test_a_label_on_the_patient_or_the_bundle_covers_every_record(tmp_path, where):
    import json

    label = {"security": [{"code": "HIV"}]}
    condition = _condition(HIV_ID, _patient_url(), "38341003", "Hypertension")
    path, _ = _bundle_of(tmp_path, "whole", condition)
    bundle = json.loads(path.read_text())
    if where == "patient":
        bundle["entry"][0]["resource"]["meta"] = label
    else:
        bundle["meta"] = label
    path.write_text(json.dumps(bundle))

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == "hiv"


@pytest.mark.parametrize(
    "pointing",
    [
        lambda url: {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/condition-dueTo",
            "valueReference": {"reference": url},
        }]},
        lambda url: {"stage": [{"assessment": [{"reference": url}]}]},
    ],
    ids=["due-to-extension", "stage-assessment"],
)  # fmt: skip
def test_a_condition_pointing_at_an_hiv_diagnosis_in_other_ways_is_withheld(
    tmp_path, pointing
):
    hiv = _condition(HIV_ID, _patient_url(), "86406008", "HIV infection")
    pneumonia = _condition(
        "5f1e8a8e-1111-4c3b-9a55-000000000002", _patient_url(), "233604007",
        "Pneumonia", **pointing(f"urn:uuid:{HIV_ID}"),
    )  # fmt: skip
    path, _ = _bundle_of(tmp_path, "pointing", hiv, pneumonia)

    call_command("import_fhir", str(path))

    assert {c.sensitivity for c in Condition.objects.all()} == {"hiv"}


@pytest.mark.parametrize(
    "text, category",
    [
        ("HIV positive", "hiv"),
        ("Human immunodeficiency virus antigen test", "hiv"),
        ("Opioid dependence, uncomplicated", "substance_use"),
        ("Alcohol use disorder, moderate", "substance_use"),
        ("Accidental opioid overdose", "substance_use"),
        ("AIDS", "hiv"),
        ("HIV1 infection", "hiv"),
        ("\u041d\u0406V infection", "hiv"),  # Cyrillic H and I
        ("H\u200bIV infection", "hiv"),  # a zero-width space inside
        ("Opiate addicted", "substance_use"),
        ("Polysubstance abuse", "substance_use"),
        ("Benzodiazepine dependence", "substance_use"),
        ("Alkoholabh\u00e4ngigkeit", "substance_use"),
        ("Methadone 10 MG Oral Tablet", "substance_use"),
        ("Emtricitabine / Tenofovir", "hiv"),
        ("BRCA1 pathogenic variant carrier", "genetic"),
        ("Psychotherapy progress note", "psychotherapy"),
        ("Substance use assessment", "substance_use"),
        ("Drug treatment started for hypertension", ROUTINE),
        ("Nicotine addiction", ROUTINE),
        ("Gambling addiction", ROUTINE),
        ("Accidental insulin overdose", ROUTINE),
        ("Acquired immunodeficiency syndrome", "hiv"),
        ("Acquired immune deficiency syndrome", "hiv"),
        ("Infection par le VIH", "hiv"),
        ("Acquired immunity to measles", ROUTINE),
        ("Hearing aids fitted", ROUTINE),
        ("Alcoholic drinks per day", ROUTINE),
    ],
)
def test_a_record_coded_by_text_alone_takes_the_category_its_words_name(
    tmp_path, text, category
):
    condition = _condition(HIV_ID, _patient_url(), "0", text)
    condition["code"] = {"text": text}
    path, _ = _bundle_of(tmp_path, "text", condition)

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == category


def test_a_code_in_an_extensions_value_code_counts(tmp_path):
    extension = [{"url": "http://example.org/dx", "valueCode": "86406008"}]
    path, _ = _bundle_of(tmp_path, "ext", _condition(
        HIV_ID, _patient_url(), "38341003", "Hypertension", extension=extension
    ))  # fmt: skip

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == "hiv"


def test_a_label_on_a_contained_reason_counts(tmp_path):
    contained = _condition("c1", _patient_url(), "38341003", "Contained")
    contained["meta"] = {"security": [{"code": "HIV"}]}
    path, _ = _bundle_of(tmp_path, "contained", _condition(
        HIV_ID, _patient_url(), "38341003", "Hypertension",
        contained=[contained], evidence=[{"detail": [{"reference": "#c1"}]}],
    ))  # fmt: skip

    call_command("import_fhir", str(path))

    assert Condition.objects.get().sensitivity == "hiv"


@pytest.mark.parametrize(
    "written_as",
    [f"URN:UUID:{HIV_ID.upper()}", f"Condition/{HIV_ID}/", f"condition/{HIV_ID}"],
    ids=["urn-in-capitals", "trailing-slash", "type-in-lower-case"],
)
def test_a_reason_imported_before_is_followed_however_it_is_written(
    tmp_path, written_as
):
    _import_hiv_condition_first(tmp_path)
    path, _ = _bundle_of(tmp_path, "later", _condition(
        "5f1e8a8e-2222-4c3b-9a55-000000000002", _patient_url(), "38341003",
        "Hypertension", evidence=[{"detail": [{"reference": written_as}]}],
    ))  # fmt: skip

    call_command("import_fhir", str(path))

    assert {c.description: c.sensitivity for c in Condition.objects.all()} == {
        "HIV infection": "hiv", "Hypertension": "hiv",
    }  # fmt: skip


def test_a_reason_named_by_an_identifier_alone_refuses_the_bundle(tmp_path, capsys):
    evidence = [{"detail": [{"identifier": {"value": f"urn:uuid:{HIV_ID}"}}]}]
    path, _ = _bundle_of(tmp_path, "logical", _condition(
        HIV_ID, _patient_url(), "38341003", "Hypertension", evidence=evidence
    ))  # fmt: skip

    with pytest.raises(CommandError):
        call_command("import_fhir", str(path))

    assert "by an identifier alone cannot be followed" in capsys.readouterr().err
    assert not Condition.objects.exists()


def test_an_edited_copy_of_a_sensitive_reason_does_not_make_its_care_routine(
    tmp_path,
):
    _import_hiv_condition_first(tmp_path)
    edited = _condition(HIV_ID, _patient_url(), "38341003", "HIV infection")
    path, _ = _bundle_of(tmp_path, "edited", edited, _condition(
        "5f1e8a8e-3333-4c3b-9a55-000000000003", _patient_url(), "38341003",
        "Follow-up", evidence=[{"detail": [{"reference": f"urn:uuid:{HIV_ID}"}]}],
    ))  # fmt: skip

    call_command("import_fhir", str(path))

    assert {c.description: c.sensitivity for c in Condition.objects.all()} == {
        "HIV infection": "hiv", "Follow-up": "hiv",
    }  # fmt: skip


def test_a_report_the_portal_does_not_keep_carries_its_results_category(tmp_path):
    _import_hiv_condition_first(tmp_path)
    report = {
        "resourceType": "DiagnosticReport", "id": "report-1", "status": "final",
        "code": {"coding": [{"system": "urn:local", "code": "panel"}]},
        "subject": {"reference": _patient_url()},
        "result": [{"reference": f"Condition/{HIV_ID}"}],
    }  # fmt: skip
    path, _ = _bundle_of(tmp_path, "report", report, _condition(
        "5f1e8a8e-4444-4c3b-9a55-000000000004", _patient_url(), "38341003",
        "Follow-up", evidence=[{"detail": [{"reference": "urn:uuid:report-1"}]}],
    ))  # fmt: skip

    call_command("import_fhir", str(path))

    follow_up = next(c for c in Condition.objects.all() if c.description == "Follow-up")
    assert follow_up.sensitivity == "hiv"


def test_a_prescription_of_a_listed_medication_by_reference_is_withheld(tmp_path):
    import json

    bundle = json.loads((SYNTHEA_DIR / SUD_BUNDLE).read_text())
    prescription = next(
        e["resource"] for e in bundle["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )  # fmt: skip
    prescription = {**prescription, "id": "5f1e8a8e-5555-4c3b-9a55-000000000005"}
    prescription.pop("medicationCodeableConcept", None)
    prescription.pop("reasonReference", None)
    prescription.pop("encounter", None)
    prescription.pop("requester", None)
    prescription["medicationReference"] = {"reference": "urn:uuid:medication-1"}
    medication = {
        "resourceType": "Medication", "id": "medication-1",
        "code": {"coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1010600",
        }], "text": "buprenorphine 8 MG / naloxone 2 MG Sublingual Film"},
    }  # fmt: skip
    path, _ = _bundle_of(tmp_path, "medication", medication, prescription)

    call_command("import_fhir", str(path))

    assert MedicationRequest.objects.get().sensitivity == "substance_use"


def _observation(observation_id: str, patient_url: str, **extra):
    return {
        "resourceType": "Observation", "id": observation_id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                 "text": "Heart rate"},
        "subject": {"reference": patient_url},
        "effectiveDateTime": "2015-03-01T10:00:00+00:00",
        "valueQuantity": {"value": 70, "unit": "/min"},
        **extra,
    }  # fmt: skip


@pytest.mark.parametrize("shared", ["same-id", "full-url-is-type-and-id"])
def test_a_name_two_entries_share_carries_both_categories(tmp_path, shared):
    import json

    hiv = _condition(HIV_ID, _patient_url(), "86406008", "HIV infection")
    if shared == "same-id":
        # Both answer to urn:uuid:<id>; the twin's own fullUrl differs.
        twin_id, twin_url = HIV_ID, "urn:uuid:5f1e8a8e-8888-4c3b-9a55-000000000008"
        reason = f"urn:uuid:{HIV_ID}"
    else:
        twin_id, twin_url = (
            "5f1e8a8e-6666-4c3b-9a55-000000000006",
            f"Condition/{HIV_ID}",
        )
        reason = f"Condition/{HIV_ID}"
    care = _condition(
        "5f1e8a8e-7777-4c3b-9a55-000000000007", _patient_url(), "38341003",
        "Counselling", evidence=[{"detail": [{"reference": reason}]}],
    )  # fmt: skip
    path, _ = _bundle_of(
        tmp_path, "shared", hiv, _observation(twin_id, _patient_url()), care
    )
    bundle = json.loads(path.read_text())
    bundle["entry"][2]["fullUrl"] = twin_url
    path.write_text(json.dumps(bundle))

    call_command("import_fhir", str(path))

    counselling = next(
        c for c in Condition.objects.all() if c.description == "Counselling"
    )
    assert counselling.sensitivity == "hiv"


@pytest.mark.parametrize(
    "named",
    ["Medication/medication-9", "DiagnosticReport/report-9", "report-9"],
    ids=["medication", "report", "bare-id"],
)
def test_a_reason_outside_the_bundle_the_portal_never_keeps_refuses_it(
    tmp_path, capsys, named
):
    path, _ = _bundle_of(tmp_path, "outside", _condition(
        "5f1e8a8e-9999-4c3b-9a55-000000000009", _patient_url(), "38341003",
        "Counselling", evidence=[{"detail": [{"reference": named}]}],
    ))  # fmt: skip

    with pytest.raises(CommandError):
        call_command("import_fhir", str(path))

    assert "send it in the same bundle" in capsys.readouterr().err
    assert not Condition.objects.exists()
