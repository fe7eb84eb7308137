"""Break-the-glass: emergency access to one chart, visible to everyone afterwards."""

import datetime
import re
import time
import zoneinfo
from html.parser import HTMLParser
from unittest import mock

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditAction, AuditEvent, AuditOutcome
from records.models import BreakGlassAccess
from tests.conftest import current_code, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")

JUSTIFICATION = "Unresponsive in the emergency department, no relatives present"


def _another_patient(family_name: str):
    """A second patient, on no one's care team."""
    from records.models import PatientSource
    from records.services import register_patient

    return register_patient(
        given_name="Another", family_name=family_name,
        birth_date=datetime.date(1980, 5, 5), source=PatientSource.DEMO,
    )  # fmt: skip


def _request(client, patient, **overrides):
    form = {"reason": "emergency", "justification": JUSTIFICATION, "one_time_code": ""}
    form.update(overrides)
    return client.post(f"/patients/{patient.pk}/emergency-access/", form)


def test_off_team_clinician_is_offered_break_the_glass(nurse, marker_patient):
    response = verified_client(nurse).get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 403
    assert (
        f"/patients/{marker_patient.pk}/emergency-access/" in response.content.decode()
    )
    assert re.search(r"Reference: [0-9a-f]{32}", response.content.decode())


def test_break_the_glass_opens_the_chart_with_a_banner_and_alerts_compliance(
    nurse,
    compliance_officer,
    marker_patient,
    django_capture_on_commit_callbacks,
    settings,
):
    settings.PORTAL_PUBLIC_URL = "https://ehr.hospital.test/"
    compliance_officer.email = "privacy@hospital.test"
    compliance_officer.save()
    client = verified_client(nurse)

    with django_capture_on_commit_callbacks(execute=True):
        response = _request(client, marker_patient, one_time_code=current_code(nurse))

    assert response.status_code == 302
    chart = client.get(f"/patients/{marker_patient.pk}/")
    assert chart.status_code == 200
    assert "Emergency access (break-the-glass)" in chart.content.decode()
    section = client.get(f"/patients/{marker_patient.pk}/vitals/")
    assert "Emergency access (break-the-glass)" in section.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS)
    assert event.patient_ref == str(marker_patient.pk) and event.actor_id == nurse.pk
    viewed = AuditEvent.objects.filter(action=AuditAction.VIEWED).first()
    assert viewed.purpose == "emergency"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["privacy@hospital.test"]
    assert marker_patient.family_name not in mail.outbox[0].body
    assert "https://ehr.hospital.test/compliance/break-glass/" in mail.outbox[0].body


def test_an_alert_sent_in_process_leaves_no_broker_warning(
    nurse,
    compliance_officer,
    marker_patient,
    django_capture_on_commit_callbacks,
    caplog,
):
    compliance_officer.email = "privacy@hospital.test"
    compliance_officer.save()

    with django_capture_on_commit_callbacks(execute=True):
        _request(
            verified_client(nurse), marker_patient, one_time_code=current_code(nurse)
        )

    assert len(mail.outbox) == 1
    # Tasks run in-process here: no broker is missing, and none is named.
    assert "No hostname was supplied" not in caplog.text


def test_access_lasts_sixty_minutes(nurse, marker_patient):
    client = verified_client(nurse)
    _request(client, marker_patient, one_time_code=current_code(nurse))
    start = timezone.now()

    # A request every ten minutes keeps the session inside its idle limit.
    for minutes in (10, 20, 30, 40, 50, 61):
        later = start + datetime.timedelta(minutes=minutes)
        with mock.patch("django.utils.timezone.now", return_value=later):
            response = client.get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 403


def test_the_banner_gives_the_end_of_access_with_its_date_and_zone(
    nurse, marker_patient, settings
):
    settings.PORTAL_TIME_ZONE = "Australia/Brisbane"
    client = verified_client(nurse)
    _request(client, marker_patient, one_time_code=current_code(nurse))
    ends = BreakGlassAccess.objects.get().expires_at.astimezone(
        zoneinfo.ZoneInfo("Australia/Brisbane")
    )

    page = client.get(f"/patients/{marker_patient.pk}/").text
    page = " ".join(re.sub(r"<[^>]+>", "", page).split())

    assert (
        f"until {ends:%H:%M} on {ends.day} {ends:%B %Y} (Australia/Brisbane time)"
    ) in page


def test_the_queue_gives_the_end_of_access_with_its_date_in_utc(
    nurse, compliance_officer, marker_patient, settings
):
    settings.PORTAL_TIME_ZONE = "Australia/Brisbane"
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    ends = BreakGlassAccess.objects.get().expires_at.astimezone(datetime.UTC)

    queue = verified_client(compliance_officer).get("/compliance/break-glass/").text

    assert "Expires (UTC)" in queue
    assert f'<td class="nowrap">{ends:%Y-%m-%d %H:%M}</td>' in queue


def test_access_covers_that_patient_only(nurse, marker_patient):
    other = _another_patient("Patientmarker")
    client = verified_client(nurse)
    _request(client, marker_patient, one_time_code=current_code(nurse))

    assert client.get(f"/patients/{other.pk}/").status_code == 403
    assert (
        f"/patients/{marker_patient.pk}/"
        not in client.get("/patients/").content.decode()
    )


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"justification": "too short"}, "justification"),
        ({"reason": ""}, "reason"),
        ({"one_time_code": "000000"}, "one-time code"),
    ],
)
def test_each_rule_must_hold(nurse, marker_patient, overrides, reason):
    client = verified_client(nurse)
    fields = {"one_time_code": current_code(nurse), **overrides}

    response = _request(client, marker_patient, **fields)

    assert response.status_code == 200
    assert not BreakGlassAccess.objects.exists()
    assert client.get(f"/patients/{marker_patient.pk}/").status_code == 403


def test_the_request_page_for_an_unknown_patient_is_not_found_and_audited(
    nurse, marker_patient
):
    client = verified_client(nurse)
    unknown = "00000000-0000-4000-8000-000000000000"

    response = client.get(f"/patients/{unknown}/emergency-access/")

    assert response.status_code == 404
    assert "There is nothing at this address." in response.content.decode()
    denial = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert (denial.patient_ref, denial.reason) == (unknown, "unknown patient")
    known = client.get(f"/patients/{marker_patient.pk}/emergency-access/")
    assert known.status_code == 200, "a patient off the team is still offered it"


@pytest.mark.parametrize("persona", ["compliance_officer", "export_staff"])
def test_a_non_clinician_is_refused_alike_for_known_and_unknown_patients(
    request, persona, marker_patient
):
    client = verified_client(request.getfixturevalue(persona))
    unknown = "00000000-0000-4000-8000-000000000000"

    answers = {
        client.get(f"/patients/{patient_id}/emergency-access/").status_code
        for patient_id in (marker_patient.pk, unknown)
    }

    assert answers == {403}


def test_a_wrong_code_is_audited_as_refused(nurse, marker_patient):
    _request(verified_client(nurse), marker_patient, one_time_code="000000")

    refusal = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REFUSED)
    assert refusal.reason == "one-time code not accepted"


def test_the_otp_step_cannot_be_skipped(nurse, marker_patient):
    response = verified_client(nurse).post(
        f"/patients/{marker_patient.pk}/emergency-access/",
        {"reason": "emergency", "justification": JUSTIFICATION},
    )

    assert response.status_code == 200
    assert not BreakGlassAccess.objects.exists()


@pytest.mark.parametrize("persona", ["compliance_officer", "export_staff"])
def test_non_clinicians_cannot_break_the_glass(request, persona, marker_patient):
    user = request.getfixturevalue(persona)

    response = _request(
        verified_client(user), marker_patient, one_time_code=current_code(user)
    )

    assert response.status_code == 403
    assert not BreakGlassAccess.objects.exists()


def test_compliance_reviews_the_access(nurse, compliance_officer, marker_patient):
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    access = BreakGlassAccess.objects.get()
    reviewer = verified_client(compliance_officer)

    queue = reviewer.get("/compliance/break-glass/").content.decode()
    assert "nurse.jones" in queue and JUSTIFICATION in queue
    assert marker_patient.mrn_display in queue, "the reviewer sees whose chart"
    assert '<option value="" selected>' in queue, "no outcome is preselected"
    assert AuditEvent.objects.filter(
        action=AuditAction.IDENTITY_REVIEWED, patient_ref=str(marker_patient.pk)
    ).exists()
    blank = reviewer.post(f"/compliance/break-glass/{access.pk}/review/", {"note": ""})
    access.refresh_from_db()
    assert blank.status_code == 400 and access.reviewed_at is None
    assert "Choose an outcome for the review." in blank.content.decode()

    response = reviewer.post(
        f"/compliance/break-glass/{access.pk}/review/",
        {"outcome": "appropriate", "note": "Confirmed with the ED charge nurse"},
    )

    assert response.status_code == 302
    access.refresh_from_db()
    assert (
        access.review_outcome == "appropriate"
        and access.reviewed_by == compliance_officer
    )
    assert (
        AuditEvent.objects.filter(action=AuditAction.BREAK_GLASS_REVIEWED).count() == 1
    )
    second = reviewer.post(
        f"/compliance/break-glass/{access.pk}/review/",
        {"outcome": "inappropriate"},
        follow=True,
    )
    access.refresh_from_db()
    assert access.review_outcome == "appropriate", "a review is recorded once"
    assert (
        "Not recorded: this access was already reviewed by "
        f"{compliance_officer.get_username()} (appropriate)"
    ) in second.content.decode()
    refused = AuditEvent.objects.get(
        action=AuditAction.BREAK_GLASS_REVIEWED, outcome=AuditOutcome.DENIED
    )
    assert refused.patient_ref == str(marker_patient.pk)
    assert refused.reason == "already reviewed"


class _FormFields(HTMLParser):
    """The ids on a page, and which of them a <label for> names."""

    def __init__(self):
        super().__init__()
        self.ids, self.labelled, self.fields = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "label" and "for" in attrs:
            self.labelled.add(attrs["for"])
        if tag in ("select", "textarea"):
            self.fields.append((attrs.get("name"), attrs.get("id")))


def test_each_queue_row_has_review_fields_of_its_own_with_labels(
    nurse, physician, compliance_officer, marker_patient
):
    other = _another_patient("Rowfamily")
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    _request(verified_client(physician), other, one_time_code=current_code(physician))

    page = _FormFields()
    page.feed(verified_client(compliance_officer).get("/compliance/break-glass/").text)

    assert sorted(name for name, _id in page.fields) == [
        "note", "note", "outcome", "outcome",
    ]  # fmt: skip
    assert len(page.ids) == len(set(page.ids)), "no id is repeated"
    assert all(field_id in page.labelled for _name, field_id in page.fields)


def test_a_review_of_an_access_that_does_not_exist_is_refused_and_recorded(
    compliance_officer,
):
    import uuid

    reviewer = verified_client(compliance_officer)

    response = reviewer.post(
        f"/compliance/break-glass/{uuid.uuid4()}/review/",
        {"outcome": "appropriate"},
        follow=True,
    )

    assert "Not recorded: there is no such break-the-glass access" in (
        response.content.decode()
    )
    refused = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REVIEWED)
    assert refused.outcome == AuditOutcome.DENIED
    assert refused.actor_id == compliance_officer.pk


def test_a_review_note_too_long_comes_back_with_its_own_error(
    nurse, compliance_officer, marker_patient
):
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    access = BreakGlassAccess.objects.get()
    reviewer = verified_client(compliance_officer)
    note = "Spoke to the ED lead; access was not needed. " * 50

    response = reviewer.post(
        f"/compliance/break-glass/{access.pk}/review/",
        {"outcome": "inappropriate", "note": note},
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "at most 2000 characters" in page
    assert "Choose an outcome for the review." not in page
    assert note.strip() in page, "the officer's note comes back to shorten"
    assert '<option value="inappropriate" selected>' in page
    access.refresh_from_db()
    assert access.reviewed_at is None


def test_an_invalid_review_of_an_access_no_longer_waiting_says_so(
    compliance_officer,
):
    import uuid

    reviewer = verified_client(compliance_officer)

    response = reviewer.post(
        f"/compliance/break-glass/{uuid.uuid4()}/review/", {"note": "x" * 2001}
    )

    assert response.status_code == 400
    assert "there is no such break-the-glass access" in response.content.decode()
    refused = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REVIEWED)
    assert (refused.outcome, refused.reason) == (
        AuditOutcome.DENIED,
        "unknown break-the-glass access",
    )


def test_an_invalid_second_review_is_refused_and_recorded(
    nurse, compliance_officer, marker_patient
):
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    access = BreakGlassAccess.objects.get()
    reviewer = verified_client(compliance_officer)
    reviewer.post(
        f"/compliance/break-glass/{access.pk}/review/", {"outcome": "appropriate"}
    )

    response = reviewer.post(f"/compliance/break-glass/{access.pk}/review/", {})

    assert response.status_code == 400
    assert "already reviewed by" in response.content.decode()
    refused = AuditEvent.objects.get(
        action=AuditAction.BREAK_GLASS_REVIEWED, outcome=AuditOutcome.DENIED
    )
    assert (refused.reason, refused.patient_ref) == (
        "already reviewed",
        str(marker_patient.pk),
    )


def test_an_officer_never_reviews_their_own_emergency_access(
    nurse, compliance_officer, marker_patient
):
    from django.contrib.auth.models import Group

    from accounts.roles import Role

    nurse.groups.add(Group.objects.get(name=Role.COMPLIANCE_OFFICER.value))
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    access = BreakGlassAccess.objects.get()
    own_client = verified_client(nurse)

    queue = own_client.get("/compliance/break-glass/").content.decode()
    own = own_client.post(
        f"/compliance/break-glass/{access.pk}/review/",
        {"outcome": "appropriate", "note": "Fine by me"},
        follow=True,
    )

    incomplete = own_client.post(
        f"/compliance/break-glass/{access.pk}/review/", {"outcome": ""}
    )

    assert "another compliance officer reviews it" in queue
    assert f"/compliance/break-glass/{access.pk}/review/" not in queue
    assert "this is your own emergency access" in own.content.decode()
    assert incomplete.status_code == 400
    assert "this is your own emergency access" in incomplete.content.decode()
    access.refresh_from_db()
    assert access.reviewed_at is None
    refusals = AuditEvent.objects.filter(
        action=AuditAction.BREAK_GLASS_REVIEWED, outcome=AuditOutcome.DENIED
    )
    assert {(r.reason, r.actor_id) for r in refusals} == {("own access", nurse.pk)}
    assert refusals.count() == 2

    verified_client(compliance_officer).post(
        f"/compliance/break-glass/{access.pk}/review/", {"outcome": "appropriate"}
    )
    access.refresh_from_db()
    assert access.reviewed_by == compliance_officer


def test_chart_shows_who_accessed_it_and_how(physician, nurse, marker_patient):
    from tests.conftest import add_to_care_team

    add_to_care_team(physician, marker_patient)
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    verified_client(nurse).get(f"/patients/{marker_patient.pk}/")

    body = (
        verified_client(physician)
        .get(f"/patients/{marker_patient.pk}/")
        .content.decode()
    )

    panel = body[body.index("Recent access to this chart") :]
    assert "nurse.jones" in panel and "break-the-glass" in panel
    assert "dr.house" in panel and "care team member" in panel


def test_a_wrong_code_counts_toward_the_lockout(nurse, marker_patient):
    from axes.models import AccessAttempt

    _request(verified_client(nurse), marker_patient, one_time_code="000000")

    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).count() == 1
    assert AccessAttempt.objects.filter(username="nurse.jones").exists()


def test_a_clinician_who_already_has_the_chart_is_sent_to_it(physician, marker_patient):
    from tests.conftest import add_to_care_team

    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).get(
        f"/patients/{marker_patient.pk}/emergency-access/"
    )

    assert response.status_code == 302
    assert response["Location"] == f"/patients/{marker_patient.pk}/"
    assert not BreakGlassAccess.objects.exists()


def test_reusing_the_sign_in_code_says_to_wait_for_the_next(nurse, marker_patient):
    from django.test import Client

    client = Client()
    client.post(
        "/accounts/login/",
        {"username": "nurse.jones", "password": "correct horse battery 9"},
    )
    code = current_code(nurse)
    client.post("/accounts/verify/", {"token": code})

    response = _request(client, marker_patient, one_time_code=code)

    assert "already used; wait for the next code" in response.content.decode()
    assert not BreakGlassAccess.objects.exists()


def test_the_alert_is_sent_from_the_web_process_when_the_broker_is_down(
    nurse, compliance_officer, marker_patient, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from records.tasks import alert_compliance_of_break_glass

    compliance_officer.email = "privacy@hospital.test"
    compliance_officer.save()
    client = verified_client(nurse)
    refused = OperationalError("Error 111 connecting to 127.0.0.1:6390")

    with (
        mock.patch.object(
            alert_compliance_of_break_glass, "delay", side_effect=refused
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = _request(client, marker_patient, one_time_code=current_code(nurse))

    assert response.status_code == 302
    assert client.get(f"/patients/{marker_patient.pk}/").status_code == 200
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["privacy@hospital.test"]


PRIVACY_OFFICE = "privacy@hospital.test"


@pytest.fixture
def privacy_office(compliance_officer):
    """The compliance officer's address, where break-the-glass alerts go."""
    compliance_officer.email = PRIVACY_OFFICE
    compliance_officer.save()
    return [[PRIVACY_OFFICE]]


def _grant_watching_the_log(nurse, patient, caplog):
    client = verified_client(nurse)
    with caplog.at_level("ERROR", logger="records.break_glass"):
        return _request(client, patient, one_time_code=current_code(nurse))


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_alert_is_sent_from_the_web_process_when_no_worker_runs(
    nurse, privacy_office, marker_patient, redis_queue, caplog
):
    response = _grant_watching_the_log(nurse, marker_patient, caplog)

    assert response.status_code == 302
    assert [message.to for message in mail.outbox] == privacy_office
    # Nothing waits in the queue to send it a second time once a worker starts.
    assert redis_queue.llen("celery") == 0
    assert "No background worker answered" in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_running_worker_sends_the_alert(
    nurse, privacy_office, marker_patient, redis_queue, caplog
):
    from celery.contrib.testing.worker import start_worker

    from ehr_portal.celery import app

    with start_worker(app, pool="solo", perform_ping_check=False):
        response = _grant_watching_the_log(nurse, marker_patient, caplog)
        deadline = time.monotonic() + 30
        while not mail.outbox and time.monotonic() < deadline:
            time.sleep(0.1)

    assert response.status_code == 302
    assert [message.to for message in mail.outbox] == privacy_office
    assert "No background worker answered" not in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_alert_is_sent_from_the_web_process_when_the_broker_refuses(
    nurse, privacy_office, marker_patient, redis_queue, caplog
):
    from ehr_portal.celery import app

    # Nothing listens on port 1 of this machine: a broker that refuses at once.
    app.conf.broker_url = "redis://127.0.0.1:1/0"

    response = _grant_watching_the_log(nurse, marker_patient, caplog)

    assert response.status_code == 302
    assert [message.to for message in mail.outbox] == privacy_office
    assert "Could not ask for a worker (OperationalError)" in caplog.text


def test_an_emergency_code_in_another_scripts_digits_opens_and_superscripts_do_not(
    nurse, marker_patient
):
    client = verified_client(nurse)
    code = current_code(nurse)

    lookalike = _request(client, marker_patient, one_time_code="²³⁴⁵⁶⁷")
    arabic_indic = "".join(chr(0x0660 + int(digit)) for digit in code)
    opened = _request(client, marker_patient, one_time_code=arabic_indic)

    assert lookalike.status_code == 200
    assert "Emergency access refused" in lookalike.content.decode()
    assert opened.status_code == 302
    assert BreakGlassAccess.objects.filter(clinician=nurse).count() == 1


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"reason": ""}, "no reason category chosen"),
        ({"reason": "bogus"}, "no reason category chosen"),
        ({"justification": "Need it"}, "justification shorter than 20 characters"),
        (
            {"justification": "\u200b" * 25},
            "justification shorter than 20 characters",
        ),
        (
            {"justification": "\u3164" * 25},
            "justification shorter than 20 characters",
        ),
        (
            {"justification": "ab" + "\u034f" * 25},
            "justification shorter than 20 characters",
        ),
        (
            {"justification": "x" + "\u2800" * 25},
            "justification shorter than 20 characters",
        ),
        (
            # 14 letters and 6 strokes drawn through them: 20 code points.
            {"justification": "Unconscious pt" + "\u0336" * 6},
            "justification shorter than 20 characters",
        ),
        (
            {"justification": "Unresponsive. " * 150},
            "justification longer than 2000 characters",
        ),
        ({"one_time_code": "abc"}, "enter the six digits your app shows"),
        ({"one_time_code": "123456789"}, "enter the six digits your app shows"),
        ({"one_time_code": "¹²³⁴⁵⁶"}, "enter the six digits your app shows"),
    ],
    ids=[
        "no-reason", "unknown-reason", "short", "zero-width", "hangul-filler",
        "combining-marks", "blank-braille", "marks-on-letters", "too-long",
        "letters", "nine-digits", "superscripts",
    ],
)  # fmt: skip
def test_an_incomplete_emergency_request_is_refused_and_recorded(
    nurse, marker_patient, overrides, refusal
):
    overrides.setdefault("one_time_code", current_code(nurse))

    response = _request(verified_client(nurse), marker_patient, **overrides)

    assert response.status_code == 200
    assert f"Emergency access refused: {refusal}." in response.content.decode()
    assert not BreakGlassAccess.objects.exists()
    refused = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REFUSED)
    assert (refused.patient_ref, refused.reason) == (str(marker_patient.pk), refusal)
    if "six digits" in refusal:
        # Not a code at all: not a wrong code toward the account lock.
        assert not AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).exists()


def test_a_justification_typed_with_separate_accents_is_accepted(nurse, marker_patient):
    import unicodedata

    # Some keyboards send each accent as a character of its own (NFD).
    typed = unicodedata.normalize("NFD", "Inconsciente, arrivée en réanimation")

    _request(
        verified_client(nurse), marker_patient,
        justification=typed, one_time_code=current_code(nurse),
    )  # fmt: skip

    assert BreakGlassAccess.objects.exists()


def test_a_justification_is_stored_without_invisible_characters(nurse, marker_patient):
    _request(
        verified_client(nurse), marker_patient,
        justification="\u200b" + JUSTIFICATION + "\u2060",
        one_time_code=current_code(nurse),
    )  # fmt: skip

    assert BreakGlassAccess.objects.get().justification == JUSTIFICATION


def test_a_right_code_too_soon_after_a_wrong_one_says_to_wait(nurse, marker_patient):
    client = verified_client(nurse)
    _request(client, marker_patient, one_time_code="000000")

    response = _request(client, marker_patient, one_time_code=current_code(nurse))

    page = " ".join(response.content.decode().split())
    assert "too many wrong codes in a row: wait a few seconds" in page
    assert not BreakGlassAccess.objects.exists()


def test_the_queue_records_the_identity_fields_each_row_shows(
    nurse, physician, compliance_officer, marker_patient
):
    other = _another_patient("Queuefamily")
    _request(verified_client(nurse), marker_patient, one_time_code=current_code(nurse))
    reviewer = verified_client(compliance_officer)
    reviewer.post(
        f"/compliance/break-glass/{BreakGlassAccess.objects.get().pk}/review/",
        {"outcome": "appropriate"},
    )
    _request(verified_client(physician), other, one_time_code=current_code(physician))

    queue = reviewer.get("/compliance/break-glass/").content.decode()

    assert "Queuefamily" in queue and marker_patient.family_name not in queue
    shown = {
        event.patient_ref: event.fields
        for event in AuditEvent.objects.filter(
            action=AuditAction.IDENTITY_REVIEWED
        ).order_by("sequence")
    }
    assert shown[str(marker_patient.pk)] == ["mrn"]
    assert shown[str(other.pk)] == ["name", "mrn"]


@pytest.mark.parametrize("field", ["reason", "justification", "one_time_code"])
def test_an_emergency_request_with_a_nul_character_is_refused_and_recorded(
    nurse, marker_patient, field
):
    form = {"reason": "emergency", "justification": JUSTIFICATION,
            "one_time_code": current_code(nurse)}  # fmt: skip
    form[field] = form[field][:3] + "\x00" + form[field][3:]

    response = _request(verified_client(nurse), marker_patient, **form)

    assert response.status_code == 200
    assert "Null characters are not allowed" in response.content.decode()
    assert not BreakGlassAccess.objects.exists()
    refused = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REFUSED)
    assert refused.reason == "request held characters that are not allowed"
    assert refused.patient_ref == str(marker_patient.pk)


def test_every_mistake_in_an_emergency_request_is_named_at_once(nurse, marker_patient):
    response = _request(
        verified_client(nurse), marker_patient,
        reason="", justification="Need it", one_time_code="abc",
    )  # fmt: skip

    both = (
        "no reason category chosen; justification shorter than 20 characters; "
        "enter the six digits your app shows"
    )
    assert f"Emergency access refused: {both}." in response.content.decode()
    refused = AuditEvent.objects.get(action=AuditAction.BREAK_GLASS_REFUSED)
    assert refused.reason == both
    assert not AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).exists()
