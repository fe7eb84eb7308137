"""A failed integrity check or missing keys: a clear refusal, a log line, an event.

ASVS V16.3.4: failures of a security control are logged with the request id
and recorded in the audit trail, and the reader sees no patient data.
"""

import logging

import pytest
from django.db import connection

from audit.models import AuditAction, AuditEvent, AuditOutcome
from records import crypto, keyproviders
from records.models import Patient
from tests.conftest import add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def tampered_chart(physician, marker_patient):
    from records.models import PatientSource
    from records.services import register_patient

    other = register_patient(
        given_name="Othergiven", family_name="Otherfamilymarker",
        birth_date=marker_patient.birth_date, source=PatientSource.DEMO,
    )  # fmt: skip
    add_to_care_team(physician, marker_patient)
    # What someone with database access might do: copy another row's ciphertext.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE records_patient SET family_name = "
            "(SELECT family_name FROM records_patient WHERE id = %s) WHERE id = %s",
            [
                Patient._meta.pk.get_db_prep_value(other.pk, connection),
                Patient._meta.pk.get_db_prep_value(marker_patient.pk, connection),
            ],
        )
    return marker_patient


@pytest.mark.parametrize(
    "url, content_type",
    [("/patients/{pk}/", "text/html"), ("/api/v1/patients/{pk}/", "application/json")],
)
def test_a_tampered_value_stops_the_page_and_is_recorded(
    physician, tampered_chart, caplog, url, content_type
):
    caplog.set_level(logging.ERROR, logger="records.middleware")

    response = verified_client(physician).get(url.format(pk=tampered_chart.pk))

    body = response.content.decode()
    assert response.status_code == 500
    assert response["Content-Type"].startswith(content_type)
    assert "integrity check" in body
    assert "Otherfamilymarker" not in body and "Zyxwvutmarker" not in body
    event = AuditEvent.objects.get(action=AuditAction.INTEGRITY_FAILURE)
    assert event.outcome == AuditOutcome.FAILURE
    assert event.patient_ref == str(tampered_chart.pk)
    assert event.actor_username == physician.username
    assert event.request_id and event.request_id in body
    logged = [r for r in caplog.records if r.name == "records.middleware"]
    assert [record.getMessage() for record in logged] == [
        "Request stopped: IntegrityError"
    ]


def test_the_integrity_failure_page_leads_back_to_the_portal(physician, tampered_chart):
    response = verified_client(physician).get(f"/patients/{tampered_chart.pk}/")

    assert response.status_code == 500
    assert (
        '<a href="/">Back to the portal\'s start page</a>' in response.content.decode()
    )


def test_keys_that_cannot_be_loaded_refuse_with_503_and_are_recorded(
    physician, marker_patient, isolated_keys, tmp_path, caplog
):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    keyproviders.create_master_key_file(tmp_path / "wrong.key")
    isolated_keys.PORTAL_MASTER_KEY_FILE = tmp_path / "wrong.key"
    crypto.reset_keyring_cache()
    caplog.set_level(logging.ERROR, logger="records.middleware")

    response = client.get(f"/patients/{marker_patient.pk}/")

    body = response.content.decode()
    assert response.status_code == 503
    assert "encryption keys" in body and "Zyxwvutmarker" not in body
    event = AuditEvent.objects.get(action=AuditAction.KEYS_UNAVAILABLE)
    assert event.patient_ref == str(marker_patient.pk)
    assert "Request stopped: KeyringUnavailable" in caplog.text


def test_a_damaged_patient_row_leaves_the_rest_of_the_patient_list(
    physician, tampered_chart, caplog
):
    from records.models import PatientSource
    from records.services import register_patient

    readable = register_patient(
        given_name="Readablegiven", family_name="Readablefamily",
        birth_date=tampered_chart.birth_date, source=PatientSource.DEMO,
    )  # fmt: skip
    add_to_care_team(physician, readable)
    caplog.set_level(logging.ERROR, logger="records.services")

    response = verified_client(physician).get("/patients/")

    body = response.content.decode()
    assert response.status_code == 200
    assert "Readablefamily, Readablegiven" in body
    assert f"/patients/{readable.pk}/" in body
    assert "could not be read" in body
    assert "Otherfamilymarker" not in body and "Zyxwvutmarker" not in body
    assert f"/patients/{tampered_chart.pk}/" not in body
    failure = AuditEvent.objects.get(action=AuditAction.INTEGRITY_FAILURE)
    assert failure.patient_ref == str(tampered_chart.pk)
    assert failure.outcome == AuditOutcome.FAILURE
    assert failure.request_id and failure.request_id in body
    listings = AuditEvent.objects.filter(action=AuditAction.PATIENT_LIST)
    shown = {event.patient_ref: event.fields for event in listings}
    assert shown == {str(readable.pk): ["name", "birth_date", "mrn", "sex"],
                     str(tampered_chart.pk): []}  # fmt: skip
    assert {event.reason for event in listings} == {"1 patient(s) listed, 1 unreadable"}
    assert "Patient record unreadable: IntegrityError" in caplog.text


def test_a_damaged_patient_row_found_by_search_is_named_unreadable(
    physician, tampered_chart
):
    response = verified_client(physician).post(
        "/patients/", {"birth_date": tampered_chart.birth_date.isoformat()}
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert "could not be read" in body
    assert "Zyxwvutmarker" not in body and "Otherfamilymarker" not in body
    assert AuditEvent.objects.filter(
        action=AuditAction.INTEGRITY_FAILURE, patient_ref=str(tampered_chart.pk)
    ).exists()
    search = AuditEvent.objects.get(action=AuditAction.PATIENT_SEARCH)
    assert (search.patient_ref, search.fields) == (str(tampered_chart.pk), [])
    assert search.reason == "0 match(es), 1 unreadable"


def test_the_api_lists_a_damaged_patient_row_as_unreadable(physician, tampered_chart):
    response = verified_client(physician).get("/api/v1/patients/")

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": str(tampered_chart.pk),
            "mrn": None,
            "family_name": None,
            "given_name": None,
            "birth_date": None,
            "sex": None,
            "unreadable": True,
        }
    ]
    assert "Zyxwvutmarker" not in response.content.decode()


def test_djangos_own_error_line_names_the_request_id(physician, tampered_chart):
    # Django logs a 5xx response after every middleware has returned, when
    # the request's context is gone: the filter finds the id on the request.
    from ehr_portal.logging import RequestIdFilter, UTCFormatter

    lines = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(UTCFormatter("%(name)s [%(request_id)s] %(message)s"))
    handler.emit = lambda record: lines.append(handler.format(record))
    django_request = logging.getLogger("django.request")
    django_request.addHandler(handler)
    try:
        response = verified_client(physician).get(f"/patients/{tampered_chart.pk}/")
    finally:
        django_request.removeHandler(handler)

    assert response.status_code == 500
    assert lines == [
        f"django.request [{response['X-Request-ID']}] Internal Server Error: "
        f"/patients/{tampered_chart.pk}/"
    ]


def test_a_sign_in_during_an_audit_outage_is_told_it_did_not_happen(
    physician, audit_outage, client
):
    response = client.post(
        "/accounts/login/",
        {"username": physician.username, "password": "correct horse battery 9"},
    )

    body = response.content.decode()
    assert response.status_code == 503
    assert "The portal is temporarily unavailable" in body
    assert "you are not signed in" in body
    assert "_auth_user_id" not in client.session


def test_who_viewed_a_patient_whose_identity_is_damaged_still_lists_the_views(
    physician, compliance_officer, tampered_chart
):
    from audit.services import record_event

    record_event(
        actor=physician, action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS,
        patient_ref=tampered_chart.pk, record_type="ChartSummary",
        fields=["conditions.description"], purpose="treatment", reason="care team",
    )  # fmt: skip

    response = verified_client(compliance_officer).post(
        "/compliance/patient-access/", {"mrn": tampered_chart.mrn}
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert "identity could not be read" in body
    assert f'Patient with MRN <span class="mono">{tampered_chart.mrn_display}' in body
    assert physician.username in body and "ChartSummary" in body
    assert "Zyxwvutmarker" not in body and "Otherfamilymarker" not in body
    failure = AuditEvent.objects.get(action=AuditAction.INTEGRITY_FAILURE)
    assert failure.patient_ref == str(tampered_chart.pk)
    assert failure.request_id in body
    review = AuditEvent.objects.get(action=AuditAction.IDENTITY_REVIEWED)
    assert (review.patient_ref, review.fields) == (str(tampered_chart.pk), [])


@pytest.mark.parametrize("section", ["encounters", "conditions"])
def test_a_chart_whose_identity_is_damaged_opens_through_no_door(
    physician, tampered_chart, section
):
    # Records shown under a name that cannot be verified may be another
    # patient's: the API refuses them as the chart page does.
    response = verified_client(physician).get(
        f"/api/v1/patients/{tampered_chart.pk}/{section}/"
    )

    assert response.status_code == 500
    assert "integrity check" in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditAction.VIEWED).exists()
    assert AuditEvent.objects.filter(
        action=AuditAction.INTEGRITY_FAILURE, patient_ref=str(tampered_chart.pk)
    ).exists()


@pytest.mark.parametrize("api", [False, True])
def test_a_lost_database_connection_is_a_moment_unavailable_not_a_server_error(
    physician, marker_patient, monkeypatch, api
):
    from django.db import OperationalError

    from records import views

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    client.raise_request_exception = False

    def connection_lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "chart_summary", connection_lost)
    monkeypatch.setattr("records.api.services.open_chart", connection_lost)
    prefix = "/api/v1" if api else ""

    response = client.get(f"{prefix}/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    body = response.content.decode()
    assert marker_patient.family_name not in body
    if api:
        assert response.json()["detail"].startswith("Records are temporarily")
    else:
        assert "records database could not be reached" in body


def test_the_unavailable_page_asks_nothing_more_of_a_lost_database(
    physician, marker_patient, monkeypatch
):
    from django.db import OperationalError

    from accounts.models import User
    from records import views

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    client.raise_request_exception = False

    def connection_lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    # Lost before the user's roles were read: the page's menu would read them.
    monkeypatch.setattr(views, "open_chart", connection_lost)
    monkeypatch.setattr(User, "_roles_and_record_grants", property(connection_lost))

    response = client.get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    assert "records database could not be reached" in response.content.decode()


def test_a_note_whose_request_then_lost_the_database_may_have_been_saved(
    physician, marker_patient, monkeypatch
):
    from django.db import OperationalError

    from records.models import ClinicalNote

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    client.raise_request_exception = False

    def session_save_lost(self, must_create=False):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("accounts.sessions.SessionStore.save", session_save_lost)
    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "Review", "body": "Stable overnight"},
    )

    body = " ".join(response.content.decode().split())
    assert response.status_code == 503
    assert "it may have been saved" in body
    assert ClinicalNote.objects.count() == 1
