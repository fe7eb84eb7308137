"""Patient search: exact match over blind indexes, terms only in POST bodies."""

import datetime
import re

import pytest

from audit.models import AuditAction, AuditEvent
from records.models import PatientSource
from records.services import register_patient
from tests.conftest import add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def accented_patient(physician):
    patient = register_patient(
        given_name="Zoë Anne", family_name="O'Néill-Brontë",
        birth_date=datetime.date(1977, 7, 7), source=PatientSource.DEMO,
    )  # fmt: skip
    add_to_care_team(physician, patient)
    return patient


@pytest.fixture
def search(physician, marker_patient, accented_patient):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)

    def post(**terms):
        response = client.post("/patients/", terms)
        assert response.status_code == 200
        return response

    post.client = client
    return post


def _found(response) -> list:
    return [patient.pk for patient in response.context["patients"]]


def test_search_by_mrn_as_typed_with_dash_and_spaces(search, marker_patient):
    typed = f" {marker_patient.mrn_display[:4]} - {marker_patient.mrn[4:]} "

    assert _found(search(mrn=typed)) == [marker_patient.pk]


@pytest.mark.parametrize("dash", ["\u2013", "\u2010", "\u2212", "\uff0d"])
def test_search_by_mrn_with_any_dash(search, marker_patient, dash):
    typed = marker_patient.mrn_display.replace("-", dash)

    assert _found(search(mrn=typed)) == [marker_patient.pk]


def _spelled_with(digits: str, mrn: str) -> str:
    """``mrn`` with each ASCII digit replaced by its place in ``digits``."""
    return "".join(digits[int(c)] if c.isdigit() else c for c in mrn)


@pytest.mark.parametrize(
    "digits",
    ["٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９"],
    ids=["arabic-indic", "persian", "devanagari", "full-width"],
)
def test_search_by_mrn_in_another_scripts_digits(search, marker_patient, digits):
    typed = _spelled_with(digits, marker_patient.mrn_display)

    assert _found(search(mrn=typed)) == [marker_patient.pk]


@pytest.mark.parametrize(
    "digits", ["⁰¹²³⁴⁵⁶⁷⁸⁹", "⓪①②③④⑤⑥⑦⑧⑨"], ids=["superscripts", "circled"]
)
def test_an_mrn_in_look_alike_digits_is_refused_as_not_valid(
    search, marker_patient, digits
):
    response = search(mrn=_spelled_with(digits, marker_patient.mrn))

    assert "This is not a valid MRN" in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditAction.PATIENT_SEARCH).exists()


@pytest.mark.parametrize(
    "typed",
    ["O'Néill-Brontë", "o'neill-bronte", "  O'NEILL-BRONTE  ", "ö'nèill-brontë"],
)
def test_search_by_family_name_ignores_case_accents_and_spaces(
    search, accented_patient, typed
):
    assert _found(search(family_name=typed)) == [accented_patient.pk]


@pytest.mark.parametrize("typed", ["Zoë Anne", "zoe   anne", " ZOE ANNE "])
def test_search_by_given_name_ignores_case_accents_and_spaces(
    search, accented_patient, typed
):
    assert _found(search(given_name=typed)) == [accented_patient.pk]


def test_search_by_birth_date(search, marker_patient):
    assert _found(search(birth_date="1961-02-28")) == [marker_patient.pk]


def test_search_is_exact_not_partial(search):
    assert _found(search(family_name="Zyxwvut")) == []
    assert _found(search(family_name="%")) == []


def test_combined_terms_must_all_match(search, marker_patient):
    assert _found(search(family_name="zyxwvutmarker", birth_date="1961-02-28")) == [
        marker_patient.pk
    ]
    assert _found(search(family_name="zyxwvutmarker", birth_date="1977-07-07")) == []


def test_a_patient_outside_the_care_team_is_not_found(search, nurse):
    other = verified_client(nurse)

    response = other.post("/patients/", {"family_name": "Zyxwvutmarker"})

    assert _found(response) == []


def test_search_terms_in_a_query_string_are_ignored(search, physician):
    response = search.client.get("/patients/?family_name=Zyxwvutmarker")

    assert response.context["searched"] is False
    assert not AuditEvent.objects.filter(action=AuditAction.PATIENT_SEARCH).exists()


def test_no_search_term_appears_in_any_url(search, marker_patient):
    response = search(family_name="Zyxwvutmarker", given_name="Quillonemarker")
    body = response.content.decode()

    assert response.request["PATH_INFO"] == "/patients/"
    assert "Location" not in response
    assert re.search(r'<form method="post"', body)
    urls = re.findall(r'(?:href|action|src)="([^"]*)"', body)
    assert urls, "the page links somewhere"
    for url in urls:
        for term in ("Zyxwvutmarker", "Quillonemarker", marker_patient.mrn):
            assert term.casefold() not in url.casefold()
    assert f"/patients/{marker_patient.pk}/" in urls


def test_search_without_its_rate_counter_is_refused_plainly_and_audited(
    physician, marker_patient, settings
):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    # The counter's Redis stopped: nothing listens on this port.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        }
    }

    page = client.post("/patients/", {"family_name": "Zyxwvutmarker"})
    api = client.post(
        "/api/v1/patients/search/", {"family_name": "Zyxwvutmarker"},
        content_type="application/json",
    )  # fmt: skip
    listed = client.get("/patients/")

    assert page.status_code == 503
    assert "Patient search is unavailable for a moment" in page.content.decode()
    assert "Zyxwvutmarker" not in page.content.decode()
    # The API's own brake counts in the same cache: it answers nothing.
    assert api.status_code == 503
    assert api.json()["detail"].startswith("the API is unavailable for a moment")
    assert api.json()["request_id"] == api["X-Request-ID"]
    assert listed.status_code == 200
    assert (
        AuditEvent.objects.filter(
            action=AuditAction.ACCESS_DENIED, reason="search rate counter unavailable"
        ).count()
        == 1
    )


@pytest.mark.parametrize(
    "address, field",
    [("/compliance/patient-access/", "mrn"), ("/compliance/audit/", "patient_mrn")],
    ids=["who-viewed", "audit-trail"],
)
def test_compliance_screens_read_an_mrn_in_another_scripts_digits(
    physician, compliance_officer, marker_patient, address, field
):
    from audit.models import AuditOutcome
    from audit.services import record_event

    record_event(
        actor=physician, action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS,
        patient_ref=marker_patient.pk, record_type="ChartSummary",
    )  # fmt: skip
    officer = verified_client(compliance_officer)
    typed = _spelled_with("٠١٢٣٤٥٦٧٨٩", marker_patient.mrn_display)

    body = officer.post(address, {field: typed}).content.decode()

    assert "not a valid MRN" not in body and "No patient has this MRN" not in body
    assert physician.username in body and "No events match" not in body


@pytest.mark.parametrize("typed, count", [("12", 2), ("1234-567", 7), ("123456789", 9)])
def test_an_mrn_of_the_wrong_length_is_said_to_be_so(search, typed, count):
    page = search(mrn=typed).content.decode()

    assert f"An MRN has 8 digits; this has {count}." in page
    assert 'role="alert"' in page
