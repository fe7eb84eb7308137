"""The audit trail exported as FHIR R4 AuditEvent resources, for compliance only."""

import json

import pytest
from fhir.resources.R4B.bundle import Bundle

from audit.models import AuditAction, AuditEvent
from tests.conftest import add_to_care_team, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


def _write_views(count: int) -> None:
    """``count`` chart views by a system actor, numbered in their reason."""
    from audit.models import AuditOutcome
    from audit.services import record_event

    for number in range(count):
        record_event(
            actor="system:test", action=AuditAction.VIEWED,
            outcome=AuditOutcome.SUCCESS, reason=f"event {number}",
        )  # fmt: skip


@pytest.fixture
def opened_and_refused(physician, nurse, marker_patient):
    add_to_care_team(physician, marker_patient)
    verified_client(physician).get(f"/patients/{marker_patient.pk}/")
    verified_client(nurse).get(f"/patients/{marker_patient.pk}/")


def test_export_is_a_valid_fhir_bundle_of_the_filtered_events(
    opened_and_refused, compliance_officer, marker_patient
):
    client = verified_client(compliance_officer)

    response = client.post(
        "/compliance/audit/export/", {"patient_mrn": marker_patient.mrn}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    assert response["Content-Disposition"].startswith("attachment;")
    bundle = Bundle.model_validate(json.loads(response.content))
    events = [entry.resource for entry in bundle.entry]
    assert bundle.total == 2
    assert {event.outcome for event in events} == {"0", "4"}
    assert {event.agent[0].who.display for event in events} == {
        "dr.house",
        "nurse.jones",
    }
    patients = {event.entity[0].what.identifier.value for event in events}
    assert patients == {str(marker_patient.pk)}
    assert marker_patient.family_name not in response.content.decode()


def test_the_export_is_itself_audited(opened_and_refused, compliance_officer):
    verified_client(compliance_officer).post(
        "/compliance/audit/export/", {"action": AuditAction.VIEWED}
    )

    export = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORT)
    assert export.actor_username == "compliance.lee"
    assert export.fields == ["action"]
    assert export.reason.startswith("1 of 1 event(s)")


def test_clinicians_cannot_export_the_audit_trail(opened_and_refused, physician):
    response = verified_client(physician).post("/compliance/audit/export/", {})

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).exists()


def test_export_is_post_only(compliance_officer):
    response = verified_client(compliance_officer).get("/compliance/audit/export/")

    assert response.status_code == 405


def test_the_audit_screen_offers_the_export(compliance_officer):
    body = verified_client(compliance_officer).get("/compliance/audit/").content

    assert b'formaction="/compliance/audit/export/"' in body


def test_export_asks_for_a_fresh_code_after_five_minutes(compliance_officer):
    import datetime

    from django.utils import timezone

    from tests.conftest import verified_client

    stale = timezone.now() - datetime.timedelta(minutes=6)
    client = verified_client(compliance_officer, code_entered_at=stale)

    response = client.post("/compliance/audit/export/", {})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/step-up/")
    assert "next=%2Fcompliance%2Faudit%2F" in response["Location"]
    # The filter cannot come along: the page asking for the code says so.
    step_up = client.get(response["Location"]).content.decode()
    assert "Nothing was done yet" in step_up
    assert "what you had entered was not kept" in step_up
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).exists()


def test_an_invalid_filter_on_export_shows_the_trail_with_its_errors(
    compliance_officer,
):
    response = verified_client(compliance_officer).post(
        "/compliance/audit/export/",
        {"occurred_from": "2027-01-01", "occurred_to": "2020-01-01"},
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert "<form" in body and "later than" in body
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).exists()


@pytest.mark.parametrize("field", ["username", "patient_mrn"])
def test_an_over_long_filter_is_refused_as_too_long(compliance_officer, field):
    response = verified_client(compliance_officer).post(
        "/compliance/audit/", {field: "a" * 60_000}
    )

    assert response.status_code == 200
    assert "Ensure this value has at most" in response.content.decode()


def test_filters_in_the_address_are_said_to_be_ignored(compliance_officer):
    client = verified_client(compliance_officer)

    plain = client.get("/compliance/audit/").content.decode()
    addressed = client.get(
        "/compliance/audit/", {"patient_mrn": "1234-5678", "action": "VIEWED"}
    ).content.decode()

    notice = "Filters in the page's address are ignored"
    assert notice not in plain
    assert notice in addressed


def test_a_trail_longer_than_one_export_is_exported_in_parts(
    compliance_officer, monkeypatch
):
    from audit import views

    monkeypatch.setattr(views, "EXPORT_LIMIT", 2)
    _write_views(5)
    client = verified_client(compliance_officer)

    screen = client.post("/compliance/audit/", {}).content.decode()
    first = client.post("/compliance/audit/export/", {"action": "VIEWED"})
    third = client.post("/compliance/audit/export/", {"action": "VIEWED", "part": "3"})
    past = client.post("/compliance/audit/export/", {"action": "VIEWED", "part": "4"})
    odd = client.post("/compliance/audit/export/", {"action": "VIEWED", "part": "x"})

    assert "an export holds at most 2 events" in " ".join(screen.split())
    newest = AuditEvent.objects.filter(action="VIEWED").order_by("-sequence")[:2]
    assert [e["resource"]["id"] for e in json.loads(first.content)["entry"]] == [
        f"audit-{event.sequence}" for event in newest
    ]
    assert "part-1-of-3" in first["Content-Disposition"]
    assert len(json.loads(third.content)["entry"]) == 1
    assert json.loads(third.content)["total"] == 5
    assert past.status_code == 400 and "part 4" in past.content.decode()
    assert odd.status_code == 400
    exports = AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT)
    assert [e.reason for e in exports.order_by("sequence")] == [
        "2 of 5 event(s) exported as FHIR AuditEvent (part 1 of 3)",
        "1 of 5 event(s) exported as FHIR AuditEvent (part 3 of 3)",
    ]


def test_parts_of_one_export_stay_apart_while_the_trail_grows(
    compliance_officer, monkeypatch
):
    import re

    from audit import views

    monkeypatch.setattr(views, "EXPORT_LIMIT", 3)
    _write_views(5)
    client = verified_client(compliance_officer)
    screen = client.post("/compliance/audit/", {"action": "VIEWED"}).content.decode()
    up_to = re.search(r'name="up_to"[^>]* value="(\d+)"', screen).group(1)

    first = client.post(
        "/compliance/audit/export/", {"action": "VIEWED", "up_to": up_to, "part": "1"}
    )
    _write_views(2)  # clinicians keep working between the two downloads
    second = client.post(
        "/compliance/audit/export/", {"action": "VIEWED", "up_to": up_to, "part": "2"}
    )

    ids = [
        [entry["resource"]["id"] for entry in json.loads(part.content)["entry"]]
        for part in (first, second)
    ]
    shown = AuditEvent.objects.filter(action="VIEWED", sequence__lte=int(up_to))
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(f"audit-{e.sequence}" for e in shown)
    assert [json.loads(part.content)["total"] for part in (first, second)] == [5, 5]
    export = AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).latest("id")
    assert export.reason.endswith(f"(part 2 of 2, events up to {up_to})")
    assert f"-to-{up_to}-part-2-of-2" in second["Content-Disposition"]


def test_the_screen_counts_what_its_export_holds(compliance_officer):
    _write_views(3)
    client = verified_client(compliance_officer)

    screen = client.post("/compliance/audit/", {})
    counted = screen.context["page"].paginator.count
    up_to = screen.context["trail_head"]
    export = client.post("/compliance/audit/export/", {"up_to": str(up_to)})

    # The screen's own AUDIT_QUERY event came after the trail it shows.
    assert json.loads(export.content)["total"] == counted


def test_date_filters_take_whole_days_in_utc_as_the_screen_shows_them(
    settings, compliance_officer
):
    from freezegun import freeze_time

    from audit.models import AuditOutcome
    from audit.services import record_event

    # Brisbane is UTC+10: 15:00 UTC on the 1st is already the 2nd there.
    settings.PORTAL_TIME_ZONE = "Australia/Brisbane"
    for moment in ("2026-03-01 00:00:00", "2026-03-01 15:00:00", "2026-03-02 00:00:00"):
        with freeze_time(moment):
            record_event(
                actor="system:test", action=AuditAction.VIEWED,
                outcome=AuditOutcome.SUCCESS, reason=moment,
            )  # fmt: skip
    client = verified_client(compliance_officer)

    response = client.post(
        "/compliance/audit/",
        {
            "action": "VIEWED",
            "occurred_from": "2026-03-01",
            "occurred_to": "2026-03-01",
        },
    )

    shown = sorted(event.reason for event in response.context["page"])
    assert shown == ["2026-03-01 00:00:00", "2026-03-01 15:00:00"]


@pytest.mark.parametrize(
    "up_to", ["abc", "0", "-5", "1e3", "99999999999999999999", "²", "٠"]
)
def test_an_export_end_that_is_no_event_is_refused_not_ignored(
    compliance_officer, up_to
):
    client = verified_client(compliance_officer)

    response = client.post("/compliance/audit/export/", {"up_to": up_to})

    assert response.status_code == 400
    assert "must be the number of an event already in the trail" in " ".join(
        response.content.decode().split()
    )
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).exists()


def test_the_last_day_there_is_can_be_a_filters_end(compliance_officer):
    client = verified_client(compliance_officer)

    screen = client.post("/compliance/audit/", {"occurred_to": "9999-12-31"})
    export = client.post("/compliance/audit/export/", {"occurred_to": "9999-12-31"})

    assert screen.status_code == 200 and export.status_code == 200


@pytest.mark.parametrize(
    "address, action",
    [
        ("/compliance/audit/", AuditAction.AUDIT_QUERY),
        ("/compliance/audit/export/", AuditAction.AUDIT_EXPORT),
    ],
    ids=["screen", "export"],
)
def test_a_review_of_one_patients_trail_names_that_patient(
    compliance_officer, marker_patient, address, action
):
    officer = verified_client(compliance_officer)

    officer.post(address, {"patient_mrn": marker_patient.mrn})

    review = AuditEvent.objects.get(action=action)
    assert review.patient_ref == str(marker_patient.pk)


def test_an_export_number_is_read_as_typed_elsewhere(compliance_officer):
    _write_views(3)
    client = verified_client(compliance_officer)

    typed = client.post(
        "/compliance/audit/export/",
        {"action": "VIEWED", "up_to": " 3 ", "part": "\u0661"},  # Arabic-Indic 1
    )

    assert typed.status_code == 200
    assert json.loads(typed.content)["total"] == 3
