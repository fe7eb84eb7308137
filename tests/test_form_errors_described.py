"""A field with an error names it for screen readers: the text must be there.

Django marks an invalid field with ``aria-describedby="<id>_error"``; a page
that shows the error without that id leaves the reader pointed at nothing.
"""

import re

import pytest

from records.models import BreakGlassAccess
from tests.conftest import add_to_care_team, current_code, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")
# The password conftest.make_user gives every test user.
NURSE_PASSWORD = "correct horse battery 9"


def _described_by(page: str) -> list[str]:
    return [
        name
        for names in re.findall(r'aria-describedby="([^"]+)"', page)
        for name in names.split()
    ]


def _assert_errors_described(response) -> None:
    page = response.content.decode()
    described = _described_by(page)
    assert described, "the invalid form marks no field"
    for name in described:
        assert f'id="{name}"' in page, f"{name} is named but not on the page"


def test_patient_search(physician):
    response = verified_client(physician).post("/patients/", {"mrn": "12345678"})

    _assert_errors_described(response)


def test_who_viewed_report(compliance_officer):
    response = verified_client(compliance_officer).post(
        "/compliance/patient-access/", {"mrn": "12"}
    )

    _assert_errors_described(response)


def test_audit_trail_filter(compliance_officer):
    response = verified_client(compliance_officer).post(
        "/compliance/audit/", {"patient_mrn": "12345678"}
    )

    _assert_errors_described(response)


def test_emergency_access_request(nurse, marker_patient):
    response = verified_client(nurse).post(
        f"/patients/{marker_patient.pk}/emergency-access/",
        {"reason": "emergency", "justification": "too short", "one_time_code": ""},
    )

    _assert_errors_described(response)


def test_clinical_note(physician, marker_patient):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "", "body": ""},
    )

    _assert_errors_described(response)


def test_break_glass_review(nurse, compliance_officer, marker_patient):
    verified_client(nurse).post(
        f"/patients/{marker_patient.pk}/emergency-access/",
        {
            "reason": "emergency",
            "justification": "Unconscious in the emergency department, no ID.",
            "one_time_code": current_code(nurse),
        },
    )
    access = BreakGlassAccess.objects.get()

    response = verified_client(compliance_officer).post(
        f"/compliance/break-glass/{access.pk}/review/", {"note": "x" * 2001}
    )

    _assert_errors_described(response)


def test_password_change(physician):
    response = verified_client(physician).post(
        "/accounts/password/",
        {"old_password": "not it", "new_password1": "a", "new_password2": "b"},
    )

    _assert_errors_described(response)


def test_sign_in_code(client, nurse):
    client.post(
        "/accounts/login/", {"username": nurse.username, "password": NURSE_PASSWORD}
    )

    response = client.post("/accounts/verify/", {"token": "12"})

    _assert_errors_described(response)
