"""The /api/v1/ doors: same factors, same decision, same audit as the pages."""

import base64
import re

import pytest
from django.test import Client

from audit.models import AuditAction, AuditEvent
from records.models import ClinicalNote
from tests.conftest import add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


def test_anonymous_and_password_only_get_403_json_not_a_redirect(
    physician, marker_patient
):
    add_to_care_team(physician, marker_patient)
    password_only = Client()
    password_only.post(
        "/accounts/login/",
        {"username": "dr.house", "password": "correct horse battery 9"},
    )

    for client in (Client(), password_only):
        for url in ["/api/v1/patients/", f"/api/v1/patients/{marker_patient.pk}/"]:
            response = client.get(url)

            assert response.status_code == 403, url
            assert response["Content-Type"] == "application/json"
            assert marker_patient.family_name not in response.content.decode()


def test_http_basic_is_not_a_way_in(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    credentials = base64.b64encode(b"dr.house:correct horse battery 9").decode()

    response = Client().get(
        "/api/v1/patients/", HTTP_AUTHORIZATION=f"Basic {credentials}"
    )

    assert response.status_code == 403


def test_schema_and_docs_need_a_verified_session(physician):
    assert Client().get("/api/schema/").status_code == 403
    # The docs are a page people read: sent to sign in, then to the code step.
    anonymous = Client().get("/api/docs/")
    assert (anonymous.status_code, anonymous["Location"]) == (
        302,
        "/accounts/login/?next=/api/docs/",
    )
    password_only = Client()
    password_only.post(
        "/accounts/login/",
        {"username": physician.username, "password": "correct horse battery 9"},
    )
    halfway = password_only.get("/api/docs/")
    assert (halfway.status_code, halfway["Location"]) == (
        302,
        "/accounts/verify/?next=/api/docs/",
    )

    docs = verified_client(physician).get("/api/docs/")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.content.decode())
    same_origin = [a for a in assets if a.startswith("/") and not a.startswith("//")]
    assert assets and same_origin == assets, assets


def test_responses_are_json_only(physician, marker_patient):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).get(
        "/api/v1/patients/", HTTP_ACCEPT="text/html"
    )

    assert response.status_code in (200, 406)
    assert b"<html" not in response.content


def test_patient_detail_is_identity_and_audited(physician, marker_patient):
    add_to_care_team(physician, marker_patient)

    data = (
        verified_client(physician).get(f"/api/v1/patients/{marker_patient.pk}/").json()
    )

    assert set(data) == {"id", "mrn", "family_name", "given_name", "birth_date", "sex"}
    assert data["family_name"] == "Zyxwvutmarker"
    assert AuditEvent.objects.filter(
        action=AuditAction.VIEWED, patient_ref=str(marker_patient.pk)
    ).exists()


def test_note_fields_the_server_owns_cannot_be_set(physician, nurse, marker_patient):
    add_to_care_team(physician, marker_patient)
    url = f"/api/v1/patients/{marker_patient.pk}/notes/"
    note = {"kind": "progress", "title": "Ward round", "body": "Comfortable."}
    client = verified_client(physician)

    forged = client.post(
        url, {**note, "author": nurse.pk, "created_at": "2001-01-01"},
        content_type="application/json",
    )  # fmt: skip
    honest = client.post(url, note, content_type="application/json")

    assert forged.status_code == 400 and set(forged.json()) == {"author", "created_at"}
    assert honest.status_code == 201 and honest.json()["author"] == "dr.house"
    assert ClinicalNote.objects.get().author == physician


def test_section_api_withholds_sensitive_records(physician, marker_patient):
    from records.models import Condition

    add_to_care_team(physician, marker_patient)
    Condition.objects.create(
        patient=marker_patient, source_key="x1", code="5602001",
        description="Opioid abuse (disorder)", sensitivity="substance_use",
    )  # fmt: skip

    data = (
        verified_client(physician)
        .get(f"/api/v1/patients/{marker_patient.pk}/conditions/")
        .json()
    )

    assert data["results"] == [] and data["withheld"] == 1


def test_the_61st_search_in_a_minute_is_refused_and_audited(nurse, marker_patient):
    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)

    statuses = [
        client.post(
            "/api/v1/patients/search/", {"family_name": "Zyxwvutmarker"},
            content_type="application/json",
        ).status_code
        for _ in range(60)
    ]  # fmt: skip
    page = client.post("/patients/", {"family_name": "Zyxwvutmarker"})
    api = client.post(
        "/api/v1/patients/search/", {"family_name": "Zyxwvutmarker"},
        content_type="application/json",
    )  # fmt: skip

    assert statuses == [200] * 60
    assert (page.status_code, page["Retry-After"]) == (429, "60")
    assert (api.status_code, api["Retry-After"]) == (429, "60")
    assert (
        AuditEvent.objects.filter(
            action=AuditAction.ACCESS_DENIED, reason="search rate exceeded"
        ).count()
        == 2
    )


def test_a_request_over_the_api_rate_is_refused_and_audited(
    physician, marker_patient, monkeypatch
):
    from ehr_portal.throttling import PortalUserRateThrottle

    monkeypatch.setattr(PortalUserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    url = f"/api/v1/patients/{marker_patient.pk}/"

    statuses = [client.get(url).status_code for _ in range(4)]
    refused = client.get(url)

    assert statuses == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert "Zyxwvutmarker" not in refused.content.decode()
    assert refused.json()["request_id"]
    denied = AuditEvent.objects.filter(
        action=AuditAction.ACCESS_DENIED, reason__startswith="API rate exceeded"
    )
    assert denied.count() == 2
    assert {event.actor_username for event in denied} == {physician.username}
    assert {event.patient_ref for event in denied} == {str(marker_patient.pk)}
    assert AuditEvent.objects.filter(action=AuditAction.VIEWED).count() == 3


def test_an_api_rate_counter_outage_is_a_503_and_audited(
    physician, marker_patient, monkeypatch
):
    from rest_framework.throttling import SimpleRateThrottle

    def counter_down(self, request, view):
        raise ConnectionError("cache down")

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    monkeypatch.setattr(SimpleRateThrottle, "allow_request", counter_down)

    response = client.get(f"/api/v1/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    assert "Zyxwvutmarker" not in response.content.decode()
    denied = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denied.reason.startswith("API rate counter unavailable")
    assert denied.patient_ref == str(marker_patient.pk)
    assert not AuditEvent.objects.filter(action=AuditAction.VIEWED).exists()


def test_unknown_search_fields_are_refused(nurse):
    response = verified_client(nurse).post(
        "/api/v1/patients/search/", {"surname": "x"}, content_type="application/json"
    )

    assert response.status_code == 400
    assert "surname" in response.json()


def test_an_audit_outage_is_a_json_503_with_no_phi(physician, marker_patient, request):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)

    request.getfixturevalue("audit_outage")
    response = client.get(f"/api/v1/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert marker_patient.family_name not in response.content.decode()


@pytest.mark.parametrize(
    "url",
    ["/api/v1/patients/not-a-patient-id/", "/api/v1/no-such-endpoint/"],
)
def test_an_address_no_route_matches_is_a_json_404(physician, url):
    response = verified_client(physician).get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["detail"] == "Not found."
    assert answer["request_id"] == response["X-Request-ID"]


def test_a_page_no_route_matches_is_still_an_html_404(physician):
    response = verified_client(physician).get("/patients/not-a-patient-id/")

    assert response.status_code == 404
    assert b"<html" in response.content


def test_the_notes_section_reads_through_the_api_like_any_other(
    physician, nurse, marker_patient
):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    notes_url = f"/api/v1/patients/{marker_patient.pk}/notes/"
    written = client.post(
        notes_url,
        {"kind": "progress", "title": "Ward round", "body": "Walking unaided."},
        content_type="application/json",
    )

    page = client.get(notes_url)
    off_team = verified_client(nurse).get(notes_url)

    assert page.status_code == 200
    [note] = page.json()["results"]
    assert (note["title"], note["body"]) == ("Ward round", "Walking unaided.")
    assert note == written.json(), "a note reads back as the POST answered it"
    viewed = AuditEvent.objects.filter(action=AuditAction.VIEWED).last()
    assert (viewed.actor_id, viewed.record_type) == (physician.pk, "ClinicalNote")
    assert off_team.status_code == 403
    assert "Walking unaided" not in off_team.content.decode()


@pytest.mark.parametrize("page", ["2", "0", "x"])
def test_a_section_page_that_does_not_exist_shows_nothing_and_records_no_view(
    physician, marker_patient, page
):
    from records.models import Condition

    add_to_care_team(physician, marker_patient)
    Condition.objects.create(
        patient=marker_patient, source_key="p1", description="Markercondition"
    )
    client = verified_client(physician)
    url = f"/api/v1/patients/{marker_patient.pk}/conditions/"

    missing = client.get(url, {"page": page})

    assert missing.status_code == 404
    assert "Markercondition" not in missing.content.decode()
    views = AuditEvent.objects.filter(
        action=AuditAction.VIEWED, patient_ref=str(marker_patient.pk)
    )
    assert not views.exists()

    shown = client.get(url, {"page": "1"})

    assert shown.json()["results"][0]["description"] == "Markercondition"
    assert views.count() == 1


def test_a_page_of_a_chart_out_of_reach_is_refused_before_the_page_is_looked_at(
    physician, marker_patient
):
    response = verified_client(physician).get(
        f"/api/v1/patients/{marker_patient.pk}/conditions/", {"page": "99"}
    )

    assert response.status_code == 403
    assert AuditEvent.objects.filter(
        action=AuditAction.ACCESS_DENIED, patient_ref=str(marker_patient.pk)
    ).exists()


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"kind": ' + "[" * 50_000 + "]" * 50_000 + "}"],
)
def test_json_nested_too_deeply_is_a_400_not_a_crash(physician, marker_patient, body):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).post(
        f"/api/v1/patients/{marker_patient.pk}/notes/",
        body,
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not ClinicalNote.objects.exists()


def test_the_schema_names_sections_pages_and_refusals(physician):
    import yaml

    from records.services import CHART_SECTIONS

    schema = yaml.safe_load(
        verified_client(physician).get("/api/schema/", {"format": "yaml"}).content
    )
    section_page = schema["paths"]["/api/v1/patients/{patient_id}/{section}/"]["get"]
    parameters = {p["name"]: p for p in section_page["parameters"]}

    assert parameters["page"]["in"] == "query"
    assert parameters["page"]["schema"]["type"] == "integer"
    assert parameters["patient_id"]["schema"] == {"type": "string", "format": "uuid"}
    assert set(parameters["section"]["schema"]["enum"]) == set(CHART_SECTIONS) - {
        "notes"
    }
    for operation in (
        section_page,
        schema["paths"]["/api/v1/patients/{patient_id}/"]["get"],
        schema["paths"]["/api/v1/patients/{patient_id}/notes/"]["post"],
    ):
        assert {"403", "404", "429", "503"} <= set(operation["responses"])


def test_an_api_write_takes_the_csrf_token_from_a_page_as_the_readme_says(
    physician, marker_patient
):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    client.handler.enforce_csrf_checks = True
    url = f"/api/v1/patients/{marker_patient.pk}/notes/"
    note = {"kind": "progress", "title": "Round", "body": "Settled."}

    without = client.post(url, note, content_type="application/json")
    page = client.get(f"/patients/{marker_patient.pk}/notes/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    written = client.post(
        url, note, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert without.status_code == 403 and "CSRF" in without.json()["detail"]
    assert written.status_code == 201
    assert ClinicalNote.objects.count() == 1


def test_a_patient_id_in_capitals_reads_the_same_patient(physician, marker_patient):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).get(
        f"/api/v1/patients/{str(marker_patient.pk).upper()}/"
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(marker_patient.pk)
