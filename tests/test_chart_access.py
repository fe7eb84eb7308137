"""A chart opens for its care team, is refused to all others, and both are audited."""

import datetime
import re

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import AuditUnavailable
from tests.conftest import add_to_care_team, current_code, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


def _phi_strings(patient) -> list[str]:
    return [
        patient.given_name,
        patient.family_name,
        patient.mrn,
        patient.mrn_display,
        patient.birth_date.strftime("%-d %b %Y"),
        patient.birth_date.isoformat(),
    ]


def _assert_no_phi(response, patient):
    body = response.content.decode()
    for value in _phi_strings(patient):
        assert value not in body


def _chart_urls(patient) -> list[str]:
    sections = ["encounters", "conditions", "medications", "allergies"]
    sections += ["immunizations", "vitals", "labs", "observations", "procedures"]
    return [f"/patients/{patient.pk}/"] + [
        f"/patients/{patient.pk}/{section}/" for section in sections
    ]


def test_password_alone_reaches_no_phi_page(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    client = Client()
    response = client.post(
        "/accounts/login/",
        {"username": "dr.house", "password": "correct horse battery 9"},
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/verify/")

    for url in [
        "/patients/",
        "/compliance/audit/",
        "/admin/",
        *_chart_urls(marker_patient),
    ]:
        response = client.get(url)

        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/verify/"), url
        _assert_no_phi(response, marker_patient)

    response = client.post("/patients/", {"family_name": marker_patient.family_name})
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(action=AuditAction.VIEWED).exists()


def test_anonymous_visitor_is_sent_to_sign_in(marker_patient):
    response = Client().get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_sign_in_with_password_and_code_opens_the_chart(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    client = Client()
    client.post(
        "/accounts/login/",
        {"username": " Dr.House ", "password": "correct horse battery 9"},
    )

    response = client.post("/accounts/verify/", {"token": current_code(physician)})
    assert response.status_code == 302

    response = client.get(f"/patients/{marker_patient.pk}/")
    assert response.status_code == 200
    assert marker_patient.family_name in response.content.decode()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[:3] == [
        AuditAction.LOGIN,
        AuditAction.OTP_VERIFIED,
        AuditAction.VIEWED,
    ]


def test_wrong_code_is_refused_and_audited(physician, marker_patient):
    client = Client()
    client.post(
        "/accounts/login/",
        {"username": "dr.house", "password": "correct horse battery 9"},
    )
    wrong = f"{(int(current_code(physician)) + 1) % 1_000_000:06d}"

    response = client.post("/accounts/verify/", {"token": wrong})

    assert response.status_code == 200
    assert "not accepted" in response.content.decode()
    assert AuditEvent.objects.filter(action=AuditAction.OTP_FAILED).count() == 1
    assert client.get(f"/patients/{marker_patient.pk}/").status_code == 302


def test_on_team_view_is_allowed_and_audited(physician, marker_patient):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).get(
        f"/patients/{marker_patient.pk}/", REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_USER_AGENT="Ward 4 browser",
    )  # fmt: skip

    assert response.status_code == 200
    body = response.content.decode()
    assert marker_patient.family_name in body and marker_patient.mrn_display in body
    assert "no-store" in response["Cache-Control"]
    event = AuditEvent.objects.get(action=AuditAction.VIEWED)
    assert event.actor_id == physician.pk
    assert event.actor_username == "dr.house"
    assert event.actor_role == "physician"
    assert event.patient_ref == str(marker_patient.pk)
    assert event.outcome == AuditOutcome.SUCCESS
    assert event.record_type == "ChartSummary" and event.fields
    assert event.ip_address == "10.1.2.3", "the socket address, not X-Forwarded-For"
    assert len(event.device_fingerprint) == 32
    assert event.request_id == response["X-Request-ID"]
    assert event.purpose == "treatment"


def test_each_chart_section_is_audited_with_its_record_type(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)

    for url in _chart_urls(marker_patient):
        assert client.get(url).status_code == 200, url

    record_types = set(
        AuditEvent.objects.filter(action=AuditAction.VIEWED).values_list(
            "record_type", flat=True
        )
    )
    assert {"ChartSummary", "Encounter", "Observation", "Procedure"} <= record_types


def test_off_team_nurse_is_refused_audited_and_shown_no_phi(nurse, marker_patient):
    client = verified_client(nurse)

    for url in _chart_urls(marker_patient):
        response = client.get(url)

        assert response.status_code == 403, url
        _assert_no_phi(response, marker_patient)
        assert "no-store" in response["Cache-Control"]

    denials = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED)
    assert denials.count() == len(_chart_urls(marker_patient))
    denial = denials.first()
    assert denial.actor_id == nurse.pk
    assert denial.patient_ref == str(marker_patient.pk)
    assert denial.outcome == AuditOutcome.DENIED
    assert denial.reason == "not on the patient's care team"
    assert not AuditEvent.objects.filter(action=AuditAction.VIEWED).exists()


def test_ended_membership_closes_the_chart(nurse, marker_patient):
    today = timezone.localdate()
    add_to_care_team(
        nurse, marker_patient,
        starts_on=today - datetime.timedelta(days=60),
        ends_on=today - datetime.timedelta(days=1),
    )  # fmt: skip

    response = verified_client(nurse).get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 403


@pytest.mark.parametrize("persona", ["export_staff", "compliance_officer"])
def test_title_without_care_role_never_opens_a_chart(request, persona, marker_patient):
    user = request.getfixturevalue(persona)
    add_to_care_team(user, marker_patient)

    response = verified_client(user).get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 403
    _assert_no_phi(response, marker_patient)


def test_unknown_patient_id_is_not_found_and_audited(physician):
    response = verified_client(physician).get(
        "/patients/00000000-0000-4000-8000-000000000000/"
    )

    assert response.status_code == 404
    denial = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denial.reason == "unknown patient"


@pytest.mark.parametrize(
    "spelling", [str.upper, lambda text: text.replace("-", "")], ids=["caps", "bare"]
)
def test_a_pasted_patient_id_in_another_spelling_opens_the_chart(
    physician, marker_patient, spelling
):
    add_to_care_team(physician, marker_patient)

    response = verified_client(physician).get(
        f"/patients/{spelling(str(marker_patient.pk))}/conditions/"
    )

    assert response.status_code == 200
    opened = AuditEvent.objects.get(action=AuditAction.VIEWED)
    assert opened.patient_ref == str(marker_patient.pk)
    assert f'href="/patients/{marker_patient.pk}/"' in response.content.decode()


def test_a_patient_id_that_is_no_uuid_is_not_found(physician):
    response = verified_client(physician).get("/patients/0000000g-0000-4000-8000/")

    assert response.status_code == 404


def test_failed_audit_write_shows_no_chart(physician, marker_patient, monkeypatch):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)

    def broken_save(self, *args, **kwargs):
        raise RuntimeError("audit database unreachable")

    monkeypatch.setattr(AuditEvent, "save", broken_save)

    response = client.get(f"/patients/{marker_patient.pk}/")

    assert response.status_code == 503
    _assert_no_phi(response, marker_patient)
    assert re.search(r"Reference: [0-9a-f]{32}", response.content.decode())


def test_audit_write_failure_is_raised_not_swallowed(
    physician, marker_patient, monkeypatch
):
    from records.services import open_chart

    add_to_care_team(physician, marker_patient)
    monkeypatch.setattr(AuditEvent, "save", lambda *a, **k: 1 / 0)

    with pytest.raises(AuditUnavailable):
        open_chart(physician, marker_patient.pk, record_type="Chart", fields=())


def test_patient_list_shows_only_my_patients(physician, marker_patient):
    from records.models import PatientSource
    from records.services import register_patient

    stranger = register_patient(
        given_name="Otherperson", family_name="Notminemarker",
        birth_date=datetime.date(1990, 1, 1), source=PatientSource.DEMO,
    )  # fmt: skip
    add_to_care_team(physician, marker_patient)

    body = verified_client(physician).get("/patients/").content.decode()

    assert marker_patient.family_name in body
    assert stranger.family_name not in body
    # One event per patient whose identity the list showed, naming that patient.
    listed = AuditEvent.objects.get(action=AuditAction.PATIENT_LIST)
    assert listed.patient_ref == str(marker_patient.pk)
    assert listed.reason == "1 patient(s) listed"


def test_search_finds_my_patient_by_folded_name_and_not_others(nurse, marker_patient):
    client = verified_client(nurse)
    query = {"family_name": "  ZYXWVUTMARKER "}

    body = client.post("/patients/", query).content.decode()
    assert "No patient in your care matches" in body

    add_to_care_team(nurse, marker_patient)
    body = client.post("/patients/", query).content.decode()
    assert f"/patients/{marker_patient.pk}/" in body
    nothing_found, found = AuditEvent.objects.filter(
        action=AuditAction.PATIENT_SEARCH
    ).order_by("sequence")
    assert found.fields == ["family_name"]
    assert (found.patient_ref, found.reason) == (str(marker_patient.pk), "1 match(es)")
    assert "ZYXWVUT" not in str(found.fields) + found.reason
    assert (nothing_found.patient_ref, nothing_found.reason) == ("", "0 match(es)")


def test_search_by_mrn_and_birth_date(nurse, marker_patient):
    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)

    by_mrn = client.post("/patients/", {"mrn": marker_patient.mrn_display})
    by_birth = client.post("/patients/", {"birth_date": "1961-02-28"})

    assert f"/patients/{marker_patient.pk}/" in by_mrn.content.decode()
    assert f"/patients/{marker_patient.pk}/" in by_birth.content.decode()


def test_mistyped_mrn_is_rejected_before_lookup(nurse, marker_patient):
    add_to_care_team(nurse, marker_patient)
    mrn = marker_patient.mrn
    swapped = next(
        mrn[:i] + mrn[i + 1] + mrn[i] + mrn[i + 2 :]
        for i in range(7)
        if mrn[i] != mrn[i + 1]
    )

    response = verified_client(nurse).post("/patients/", {"mrn": swapped})

    assert "not a valid MRN" in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditAction.PATIENT_SEARCH).exists()


@pytest.mark.parametrize("hostile", ["' OR '1'='1", "%", "\\x00", "a" * 100])
def test_hostile_search_input_matches_nothing(nurse, marker_patient, hostile):
    add_to_care_team(nurse, marker_patient)

    response = verified_client(nurse).post("/patients/", {"family_name": hostile})

    assert response.status_code == 200
    assert f"/patients/{marker_patient.pk}/" not in response.content.decode()


def test_compliance_officer_sees_views_and_denials(
    physician, nurse, compliance_officer, marker_patient
):
    add_to_care_team(physician, marker_patient)
    verified_client(physician).get(f"/patients/{marker_patient.pk}/")
    verified_client(nurse).get(f"/patients/{marker_patient.pk}/")
    client = verified_client(compliance_officer)

    body = client.get("/compliance/audit/").content.decode()
    assert "Viewed" in body and "Access denied" in body
    assert marker_patient.mrn_display in body

    filtered = client.post(
        "/compliance/audit/",
        {"username": "nurse.jones", "patient_mrn": marker_patient.mrn},
    ).content.decode()
    assert "Access denied" in filtered and "dr.house" not in filtered
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_QUERY).count() == 2


def test_audit_trail_is_newest_first(physician, compliance_officer, marker_patient):
    add_to_care_team(physician, marker_patient)
    verified_client(physician).get(f"/patients/{marker_patient.pk}/")
    verified_client(physician).get(f"/patients/{marker_patient.pk}/vitals/")

    body = (
        verified_client(compliance_officer).get("/compliance/audit/").content.decode()
    )

    assert body.index("Observation") < body.index("ChartSummary")


def test_clinicians_cannot_read_the_audit_trail(nurse):
    response = verified_client(nurse).get("/compliance/audit/")

    assert response.status_code == 403
    denial = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denial.record_type == "AuditTrail"


def test_sign_out_is_post_only_and_kills_the_session(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    cookie = client.cookies["sessionid"].value

    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert "storage" in response["Clear-Site-Data"]

    replay = Client()
    replay.cookies["sessionid"] = cookie
    response = replay.get(f"/patients/{marker_patient.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert AuditEvent.objects.filter(action=AuditAction.LOGOUT).count() == 1


def test_chart_dates_use_the_hospital_time_zone(settings, physician, marker_patient):
    from records.fhir_import import parse_instant
    from records.models import Encounter

    settings.PORTAL_TIME_ZONE = "Australia/Brisbane"
    add_to_care_team(physician, marker_patient)
    Encounter.objects.create(
        patient=marker_patient, source_key="tz1", description="Night visit",
        occurred_at=parse_instant("2021-09-11T02:00:35+10:00"),
    )  # fmt: skip

    body = (
        verified_client(physician)
        .get(f"/patients/{marker_patient.pk}/encounters/")
        .content.decode()
    )

    assert "11 Sep 2021, 02:00" in body
    assert "Times are shown in Australia/Brisbane" in body


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"patient_mrn": "12345678"}, "No patient has this MRN"),
        ({"occurred_from": "2026-02-01", "occurred_to": "2026-01-01"}, "later than"),
        ({"action": "NOT_AN_ACTION"}, "Select a valid choice"),
    ],
)
def test_audit_filters_that_cannot_apply_show_an_error_and_no_events(
    compliance_officer, physician, marker_patient, filters, message
):
    add_to_care_team(physician, marker_patient)
    verified_client(physician).get(f"/patients/{marker_patient.pk}/")

    body = verified_client(compliance_officer).post("/compliance/audit/", filters)

    text = body.content.decode()
    assert message in text
    assert "No events match" in text


def test_a_failed_sign_in_keeps_only_real_usernames(physician):
    from accounts.services import UNKNOWN_USERNAME

    Client().post("/accounts/login/", {"username": "Dr.House", "password": "wrong!"})
    Client().post(
        "/accounts/login/", {"username": "MySecretPassw0rd!", "password": "x"}
    )

    failures = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED)
    assert sorted(failures.values_list("actor_username", flat=True)) == sorted(
        [UNKNOWN_USERNAME, "dr.house"]
    )


def test_get_on_sign_out_shows_a_page_not_an_empty_405(physician):
    response = verified_client(physician).get("/accounts/logout/")

    assert response.status_code == 405
    assert "Sign out" in response.content.decode()


def test_a_post_without_its_csrf_token_changes_nothing(physician, marker_patient):
    from records.models import ClinicalNote

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    client.handler.enforce_csrf_checks = True

    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "Forged", "body": "From another site"},
    )

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert not ClinicalNote.objects.exists()


def test_a_membership_cannot_end_before_it_starts(nurse, marker_patient):
    from django.db import IntegrityError, transaction

    today = timezone.localdate()

    with pytest.raises(IntegrityError), transaction.atomic():
        add_to_care_team(
            nurse, marker_patient,
            starts_on=today, ends_on=today - datetime.timedelta(days=1),
        )  # fmt: skip


def test_a_note_sent_during_an_audit_outage_comes_back_to_copy_and_is_not_saved(
    physician, marker_patient, request
):
    from records.models import ClinicalNote

    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)

    request.getfixturevalue("audit_outage")
    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {
            "kind": "progress",
            "title": "Night review",
            "body": "Chest clear; <b>afebrile</b> overnight.",
        },
    )

    assert response.status_code == 503
    body = response.content.decode()
    assert "Your note was not saved" in body
    assert 'value="Night review"' in body
    assert "Chest clear; &lt;b&gt;afebrile&lt;/b&gt; overnight." in body
    _assert_no_phi(response, marker_patient)
    assert not ClinicalNote.objects.exists()


def test_a_note_refused_by_the_access_decision_comes_back_to_copy(
    nurse, marker_patient
):
    from records.models import ClinicalNote

    # A care relation that has just ended: the form was opened while it held.
    add_to_care_team(
        nurse, marker_patient,
        starts_on=timezone.localdate() - datetime.timedelta(days=30),
        ends_on=timezone.localdate() - datetime.timedelta(days=1),
    )  # fmt: skip
    client = verified_client(nurse)

    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "Handover", "body": "Drain output 40 ml."},
    )

    assert response.status_code == 403
    body = response.content.decode()
    assert "Your note was not saved" in body
    assert "Drain output 40 ml." in body
    assert f"/patients/{marker_patient.pk}/emergency-access/" in body
    _assert_no_phi(response, marker_patient)
    assert not ClinicalNote.objects.exists()
    denial = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert denial.actor_id == nurse.pk


@pytest.mark.parametrize("outage", [False, True])
def test_a_note_needing_a_correction_keeps_its_text_when_the_chart_is_closed(
    nurse, marker_patient, request, outage
):
    # Without the outage the relation ended yesterday, after the form opened.
    today = timezone.localdate()
    add_to_care_team(
        nurse, marker_patient,
        starts_on=today - datetime.timedelta(days=30),
        ends_on=None if outage else today - datetime.timedelta(days=1),
    )  # fmt: skip
    client = verified_client(nurse)
    if outage:
        request.getfixturevalue("audit_outage")

    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "   ", "body": "Pressure areas intact."},
    )

    assert response.status_code == (503 if outage else 403)
    assert "Pressure areas intact." in response.content.decode()
    _assert_no_phi(response, marker_patient)


@pytest.mark.parametrize(
    "proxies, forwarded, recorded",
    [
        (0, "203.0.113.9", "10.1.2.3"),
        (1, "203.0.113.9", "203.0.113.9"),
        # The client wrote the first entry itself; the proxy appended the second.
        (1, "198.51.100.66, 203.0.113.9", "203.0.113.9"),
        (2, "198.51.100.66, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        (2, "203.0.113.9", "10.1.2.3"),
        (1, "not an address", "10.1.2.3"),
        (1, "", "10.1.2.3"),
    ],
)
def test_the_audit_trail_records_the_client_behind_trusted_proxies(
    settings, physician, marker_patient, proxies, forwarded, recorded
):
    settings.PORTAL_TRUSTED_PROXY_COUNT = proxies
    add_to_care_team(physician, marker_patient)

    verified_client(physician).get(
        f"/patients/{marker_patient.pk}/", REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR=forwarded,
    )  # fmt: skip

    assert AuditEvent.objects.get(action=AuditAction.VIEWED).ip_address == recorded


def test_the_lockout_record_takes_the_same_address_as_the_audit_trail(
    settings, client, nurse
):
    from axes.models import AccessAttempt

    settings.PORTAL_TRUSTED_PROXY_COUNT = 1
    client.post(
        "/accounts/login/", {"username": "nurse.jones", "password": "wrong one 123"},
        REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="203.0.113.9",
    )  # fmt: skip

    assert AccessAttempt.objects.get().ip_address == "203.0.113.9"
    failed = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert failed.ip_address == "203.0.113.9"


def test_every_chart_tab_leads_to_its_section(physician, marker_patient):
    from django.urls import reverse

    from records.services import CHART_SECTIONS

    add_to_care_team(physician, marker_patient)

    page = verified_client(physician).get(f"/patients/{marker_patient.pk}/")

    tabs = re.search(r'<nav class="tabs".*?</nav>', page.content.decode(), re.S)
    links = re.findall(r'href="([^"]+)"', tabs.group(0))
    assert links == [reverse("records:chart", args=[marker_patient.pk])] + [
        reverse("records:chart_section", args=[marker_patient.pk, slug])
        for slug in CHART_SECTIONS
    ]


@pytest.mark.parametrize(
    "address, body, record_type",
    [
        ("/api/v1/patients/{}/notes/", {}, "ClinicalNote"),
        ("/patients/{}/notes/draft/", {}, "NoteDraft"),
    ],
    ids=["api-note", "kept-note"],
)
def test_a_malformed_write_to_a_chart_off_the_team_is_refused_and_recorded(
    nurse, marker_patient, address, body, record_type
):
    response = verified_client(nurse).post(address.format(marker_patient.pk), body)

    assert response.status_code == 403
    refused = AuditEvent.objects.get(patient_ref=str(marker_patient.pk))
    assert (refused.action, refused.outcome, refused.record_type) == (
        AuditAction.ACCESS_DENIED,
        AuditOutcome.DENIED,
        record_type,
    )


def test_a_note_kept_for_a_patient_that_does_not_exist_is_not_found_as_json(nurse):
    import uuid

    response = verified_client(nurse).post(
        f"/patients/{uuid.uuid4()}/notes/draft/", {"kind": "progress", "body": "x"}
    )

    assert response.status_code == 404
    assert response.json() == {"kept": False}


@pytest.mark.parametrize(
    "asked, shown",
    [("0", 1), ("-3", 1), ("x", 1), ("2", 2), ("99", 2), ("9" * 5000, 2)],
    ids=["zero", "negative", "not-a-number", "last", "past-the-end", "huge"],
)
def test_a_section_page_that_does_not_exist_shows_the_nearest_one(
    physician, marker_patient, asked, shown
):
    from records.models import Condition

    add_to_care_team(physician, marker_patient)
    for number in range(30):
        Condition.objects.create(
            patient=marker_patient, source_key=f"p{number}", description="Cough"
        )

    response = verified_client(physician).get(
        f"/patients/{marker_patient.pk}/conditions/", {"page": asked}
    )

    assert response.status_code == 200
    assert f"Page {shown} of 2" in response.content.decode()


def test_a_chart_page_has_one_main_heading_and_a_way_past_the_menu(
    physician, marker_patient
):
    add_to_care_team(physician, marker_patient)

    page = verified_client(physician).get(f"/patients/{marker_patient.pk}/").content
    page = page.decode()

    headings = re.findall(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    assert len(headings) == 1 and marker_patient.family_name in headings[0]
    assert '<a class="skip-link" href="#main">' in page and 'id="main"' in page
