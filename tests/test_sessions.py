"""Idle sign-out at 15 minutes and a 12-hour limit, both decided on the server."""

import datetime

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from freezegun import freeze_time

from accounts.services import (
    ABANDONED_SESSION_REASON,
    SIGNED_IN_AT_SESSION_KEY,
    end_abandoned_sessions,
)
from accounts.sessions import SessionStore
from accounts.tasks import end_abandoned_sessions_task
from audit.models import AuditAction, AuditEvent
from tests.conftest import current_code, verified_client
from tests.test_mfa import START, sign_in_with_password, submit_code

pytestmark = pytest.mark.django_db(databases="__all__")
MINUTE = datetime.timedelta(minutes=1)


def is_sign_in_page(response) -> bool:
    return response.status_code == 302 and response.url.startswith("/accounts/login/")


def events(action):
    return AuditEvent.objects.filter(action=action)


def test_a_request_before_15_idle_minutes_is_served(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(14 * MINUTE + datetime.timedelta(seconds=59))

        assert client.get("/patients/").status_code == 200


def test_a_request_after_15_idle_minutes_gets_the_sign_in_page(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(15 * MINUTE)
        response = client.get("/patients/")

    assert is_sign_in_page(response)
    assert response["Clear-Site-Data"] == '"cache", "storage"'
    assert events(AuditAction.IDLE_LOGOUT).get().actor_id == nurse.pk
    assert not events(AuditAction.LOGOUT).exists()
    assert not Session.objects.filter(session_key=session_key).exists()
    assert not events("PATIENT_LIST").exists()


def test_the_sign_in_page_after_an_idle_sign_out_says_why(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(16 * MINUTE)
        page = client.get("/patients/", follow=True)

    assert "signed out because nothing happened for a while" in page.content.decode()


def test_activity_restarts_the_idle_clock(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        for _ in range(3):
            clock.tick(10 * MINUTE)
            assert client.get("/patients/").status_code == 200


def test_polling_the_ping_url_does_not_keep_the_session_alive(nurse):
    answers = []
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        for _ in range(20):
            clock.tick(MINUTE)
            answers.append(client.get("/session_security/ping/").json())
        after = client.get("/patients/")

    assert answers[:14] == [60 * minute for minute in range(1, 15)]
    assert answers[14:] == ["logout"] * 6
    assert is_sign_in_page(after)
    assert events(AuditAction.IDLE_LOGOUT).count() == 1


def test_activity_reported_by_the_page_keeps_the_session(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(14 * MINUTE)
        assert client.get("/session_security/ping/?idleFor=0").json() == 0
        clock.tick(14 * MINUTE)

        assert client.get("/patients/").status_code == 200


def test_a_page_cannot_report_activity_in_the_future(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(14 * MINUTE)
        client.get("/session_security/ping/?idleFor=-900")
        clock.tick(MINUTE)

        assert is_sign_in_page(client.get("/patients/"))


def test_an_active_session_ends_12_hours_after_sign_in(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        for _ in range(12 * 12 - 1):
            clock.tick(5 * MINUTE)
            assert client.get("/").status_code == 302
        assert client.get("/patients/").status_code == 200

        clock.tick(5 * MINUTE + datetime.timedelta(seconds=1))
        response = client.get("/patients/")

    assert is_sign_in_page(response)
    assert events(AuditAction.SESSION_EXPIRED).get().actor_id == nurse.pk


def test_sign_out_is_post_only(nurse):
    client = verified_client(nurse)

    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/patients/").status_code == 200


def test_a_signed_out_session_id_is_useless(nurse):
    client = verified_client(nurse)
    session_key = client.cookies["sessionid"].value

    client.post("/accounts/logout/")
    replay = type(client)()
    replay.cookies["sessionid"] = session_key

    assert is_sign_in_page(replay.get("/patients/"))
    assert not Session.objects.filter(session_key=session_key).exists()
    assert events(AuditAction.LOGOUT).get().actor_id == nurse.pk


def test_an_idled_out_session_id_is_useless(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(16 * MINUTE)
        client.get("/patients/")
        replay = type(client)()
        replay.cookies["sessionid"] = session_key

        assert is_sign_in_page(replay.get("/patients/"))


def test_the_session_key_changes_at_each_step(client, nurse):
    client.get("/accounts/login/")
    keys = [client.cookies["sessionid"].value]
    sign_in_with_password(client, "nurse.jones")
    keys.append(client.cookies["sessionid"].value)
    submit_code(client, current_code(nurse))
    keys.append(client.cookies["sessionid"].value)

    assert len(set(keys)) == 3


def test_a_form_sent_after_an_idle_sign_out_returns_to_its_page(nurse, marker_patient):
    notes_page = f"/patients/{marker_patient.pk}/notes/"
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(16 * MINUTE)
        response = client.post(
            f"/patients/{marker_patient.pk}/notes/new/",
            {"text": "Seen on the ward."},
            HTTP_REFERER=f"http://testserver{notes_page}",
        )
        elsewhere = client.post(
            f"/patients/{marker_patient.pk}/notes/new/",
            {"text": "Seen on the ward."},
            HTTP_REFERER="https://attacker.example/page",
        )

    # Signing in then asks for the notes page, never the form's address,
    # which answers only a POST; a foreign page is never a destination.
    assert is_sign_in_page(response)
    assert response.url == f"/accounts/login/?next={notes_page}"
    assert elsewhere.url == "/accounts/login/?next=/"


def _note_sent_after_an_idle_sign_out(user, patient, origin: str):
    notes_page = f"/patients/{patient.pk}/notes/"
    with freeze_time(START) as clock:
        client = verified_client(user)
        clock.tick(16 * MINUTE)
        return client.post(
            f"/patients/{patient.pk}/notes/new/",
            {
                "kind": "progress",
                "title": "Ward round",
                "body": "Seen at 14:00; <i>settled</i>, plan unchanged.",
            },
            HTTP_ORIGIN=origin,
            HTTP_REFERER=f"{origin}{notes_page}",
        )


def test_a_note_sent_after_an_idle_sign_out_comes_back_to_copy(nurse, marker_patient):
    from records.models import ClinicalNote
    from tests.conftest import add_to_care_team
    from tests.test_chart_access import _assert_no_phi

    add_to_care_team(nurse, marker_patient)

    response = _note_sent_after_an_idle_sign_out(
        nurse, marker_patient, "http://testserver"
    )

    assert response.status_code == 403
    body = response.content.decode()
    assert "Your note was not saved" in body
    assert "signed out" in body
    assert 'value="Ward round"' in body
    assert 'value="Progress note"' in body
    assert "Seen at 14:00; &lt;i&gt;settled&lt;/i&gt;, plan unchanged." in body
    assert f"/accounts/login/?next=/patients/{marker_patient.pk}/notes/" in body
    assert response["Cache-Control"] == "no-store, max-age=0"
    _assert_no_phi(response, marker_patient)
    assert not ClinicalNote.objects.exists()
    assert events(AuditAction.IDLE_LOGOUT).get().actor_id == nurse.pk


def test_a_note_posted_from_another_site_is_not_shown_back(nurse, marker_patient):
    # A page elsewhere could post any text at the portal: showing it back
    # under the portal's name is what a session-less post must not get.
    response = _note_sent_after_an_idle_sign_out(
        nurse, marker_patient, "https://attacker.example"
    )

    assert is_sign_in_page(response)
    assert "settled" not in response.content.decode()


def _post_note(client, patient, **extra):
    return client.post(
        f"/patients/{patient.pk}/notes/new/",
        {"kind": "progress", "title": "Ward round", "body": "Seen at 14:00, settled."},
        HTTP_ORIGIN="http://testserver",
        HTTP_REFERER=f"http://testserver/patients/{patient.pk}/notes/",
        **extra,
    )


def _assert_given_back(response):
    from records.models import ClinicalNote

    assert response.status_code == 403
    body = response.content.decode()
    assert "Your note was not saved" in body
    assert "Seen at 14:00, settled." in body
    assert not ClinicalNote.objects.exists()


def test_a_note_sent_while_a_new_sign_in_waits_for_its_code_comes_back(
    nurse, marker_patient
):
    from django.test import Client

    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    # Signed out in another tab and signed in again there, password only.
    client = Client()
    client.force_login(nurse)

    _assert_given_back(_post_note(client, marker_patient))


def test_a_note_sent_from_a_page_of_an_ended_session_comes_back(nurse, marker_patient):
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    client.handler.enforce_csrf_checks = True

    # The form's token belonged to the session the nurse has since replaced
    # by signing in again in another tab.
    response = _post_note(client, marker_patient, csrfmiddlewaretoken="x" * 64)

    _assert_given_back(response)
    body = response.content.decode()
    assert f"signed in as {nurse.username}" in body
    assert 'value="Progress note"' in body


@pytest.mark.parametrize("idle_for", ["64000000000", "%C2%B2", "9" * 400])
def test_a_ping_with_an_odd_idle_count_is_ignored_not_an_error(nurse, idle_for):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(5 * MINUTE)

        response = client.get(f"/session_security/ping/?idleFor={idle_for}")

    assert response.status_code == 200
    assert response.json() == 300


def _keep_draft(client, patient, **fields):
    return client.post(
        f"/patients/{patient.pk}/notes/draft/",
        {"kind": "progress", "title": "Ward round", "body": "Seen at 14:00.", **fields},
    )


def test_a_note_kept_as_the_idle_warning_shows_comes_back_after_sign_in(
    nurse, marker_patient
):
    from records.models import NoteDraft
    from tests.conftest import add_to_care_team

    # On the team since before the frozen clock's day.
    add_to_care_team(nurse, marker_patient, starts_on=datetime.date(2020, 1, 1))
    notes = f"/patients/{marker_patient.pk}/notes/"
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        client.get(notes)
        clock.tick(13 * MINUTE)

        kept = _keep_draft(client, marker_patient)
        # Keeping the note is the page's doing, not the nurse's: the idle
        # clock runs on and signs her out at 15 minutes.
        clock.tick(2 * MINUTE)
        signed_out = client.get(notes)

        again = verified_client(nurse)
        page = again.get(notes).content.decode()

    assert kept.json() == {"kept": True}
    assert is_sign_in_page(signed_out)
    assert "You had not sent this note" in page
    assert 'value="Ward round"' in page and "Seen at 14:00.</textarea>" in page
    stored = NoteDraft.objects.values_list("body", flat=True).get()
    assert b"Seen at 14:00" not in bytes(stored)
    assert events(AuditAction.NOTE_DRAFT_KEPT).get().actor_id == nurse.pk


def test_saving_or_discarding_the_kept_note_removes_it(nurse, marker_patient):
    from records.models import ClinicalNote, NoteDraft
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    _keep_draft(client, marker_patient)

    client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "progress", "title": "Ward round", "body": "Seen at 14:00."},
    )
    assert ClinicalNote.objects.count() == 1
    assert not NoteDraft.objects.exists()

    _keep_draft(client, marker_patient, body="Second thoughts.")
    client.post(f"/patients/{marker_patient.pk}/notes/draft/discard/")
    assert not NoteDraft.objects.exists()
    assert events(AuditAction.NOTE_DRAFT_DISCARDED).count() == 1
    page = client.get(f"/patients/{marker_patient.pk}/notes/").content.decode()
    assert "Second thoughts." not in page


def test_a_note_is_not_kept_for_a_chart_its_writer_may_not_add_to(
    nurse, marker_patient
):
    from records.models import NoteDraft

    response = _keep_draft(verified_client(nurse), marker_patient)

    assert response.status_code == 403
    assert not NoteDraft.objects.exists()
    assert events(AuditAction.ACCESS_DENIED).filter(record_type="NoteDraft").exists()


def test_a_psychotherapy_note_is_kept_only_for_a_writer_with_the_grant(
    physician, marker_patient
):
    from django.contrib.auth.models import Permission

    from records.models import NoteDraft
    from tests.conftest import add_to_care_team

    add_to_care_team(physician, marker_patient)
    psychotherapy = {"kind": "psychotherapy", "body": "Session notes."}

    refused = _keep_draft(verified_client(physician), marker_patient, **psychotherapy)
    assert refused.status_code == 403
    assert not NoteDraft.objects.exists()

    grant = Permission.objects.get(codename="view_psychotherapy")
    physician.user_permissions.add(grant)
    kept = _keep_draft(verified_client(physician), marker_patient, **psychotherapy)
    assert kept.json() == {"kept": True}

    # The grant is taken away before the next sign-in: the note is not put
    # in a form that would save it as another kind, read by the team.
    physician.user_permissions.remove(grant)
    page = verified_client(physician).get(f"/patients/{marker_patient.pk}/notes/")
    body = " ".join(page.content.decode().split())
    assert "you may no longer write that kind of note" in body
    assert "Session notes." not in body


def test_an_emptied_form_leaves_no_kept_note_and_old_ones_lapse(
    nurse, marker_patient, settings
):
    from records.models import NoteDraft
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    _keep_draft(client, marker_patient)

    emptied = _keep_draft(client, marker_patient, title=" ", body="")
    assert emptied.json() == {"kept": False}
    assert not NoteDraft.objects.exists()

    _keep_draft(client, marker_patient)
    settings.PORTAL_NOTE_DRAFT_DAYS = 7
    NoteDraft.objects.update(kept_at=START - datetime.timedelta(days=8))
    page = client.get(f"/patients/{marker_patient.pk}/notes/").content.decode()
    assert "You had not sent this note" not in page
    assert not NoteDraft.objects.exists()


def test_lapsed_kept_notes_of_any_author_are_purged(
    nurse, physician, marker_patient, settings
):
    from records.models import NoteDraft
    from records.tasks import purge_lapsed_note_drafts
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    add_to_care_team(physician, marker_patient)
    _keep_draft(verified_client(physician), marker_patient)
    NoteDraft.objects.update(
        kept_at=timezone.now()
        - datetime.timedelta(days=settings.PORTAL_NOTE_DRAFT_DAYS + 1)
    )

    # The nurse keeping a note of her own sweeps the physician's lapsed one.
    _keep_draft(verified_client(nurse), marker_patient)
    assert list(NoteDraft.objects.values_list("author", flat=True)) == [nurse.pk]

    NoteDraft.objects.update(
        kept_at=timezone.now()
        - datetime.timedelta(days=settings.PORTAL_NOTE_DRAFT_DAYS + 1)
    )
    assert purge_lapsed_note_drafts.apply().get() == 1
    assert not NoteDraft.objects.exists()
    assert "purge-lapsed-note-drafts" in settings.CELERY_BEAT_SCHEDULE


def test_the_password_again_in_a_signed_in_browser_asks_for_a_code_again(nurse):
    from tests.test_mfa import sign_in_with_password

    client = verified_client(nurse)
    assert client.get("/patients/").status_code == 200

    # Someone at an unlocked workstation who knows the password must not
    # restart the 12-hour clock without the second factor.
    sign_in_with_password(client, "nurse.jones")
    response = client.get("/patients/")

    assert response.status_code == 302
    assert response.url.startswith("/accounts/verify/")


def test_the_api_says_why_a_session_ended(nurse, marker_patient):
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(16 * MINUTE)

        response = client.get(f"/api/v1/patients/{marker_patient.pk}/")

    assert response.status_code == 403
    assert response.json()["detail"] == (
        "You were signed out because nothing happened for a while. Sign in again "
        "to go on."
    )
    assert events(AuditAction.IDLE_LOGOUT).get().actor_id == nurse.pk


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_each_page_saves_the_idle_clock_in_the_stored_session(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(10 * MINUTE)
        assert client.get("/patients/").status_code == 200
        clock.tick(10 * MINUTE)

        # Twenty minutes after sign-in, but ten after the last page.
        assert client.get("/patients/").status_code == 200
    assert Session.objects.filter(session_key=session_key).exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_session_removed_during_a_request_is_not_written_back(nurse):
    from django.contrib.sessions.backends.base import UpdateError

    from accounts.sessions import SessionStore

    client = verified_client(nurse)
    session_key = client.cookies["sessionid"].value
    store = SessionStore(session_key)
    store["_seen"] = True
    Session.objects.filter(session_key=session_key).delete()

    with pytest.raises(UpdateError):
        store.save()
    assert not Session.objects.filter(session_key=session_key).exists()


@pytest.mark.parametrize("api", [False, True])
def test_a_sign_out_elsewhere_during_a_request_is_said_not_called_a_bad_request(
    nurse, marker_patient, monkeypatch, api
):
    from records import services
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    session_key = client.cookies["sessionid"].value
    opened = services.open_chart

    def sign_out_in_another_tab(*args, **kwargs):
        chart = opened(*args, **kwargs)
        Session.objects.filter(session_key=session_key).delete()
        return chart

    monkeypatch.setattr(services, "open_chart", sign_out_in_another_tab)
    monkeypatch.setattr("records.views.open_chart", sign_out_in_another_tab)
    prefix = "/api/v1" if api else ""

    response = client.get(f"{prefix}/patients/{marker_patient.pk}/")

    assert response.status_code == 403
    body = response.content.decode()
    assert marker_patient.family_name not in body
    if api:
        assert response.json()["detail"].startswith("Your session ended while")
    else:
        assert "Your session ended" in body and "Sign in again" in body


def test_the_api_says_a_session_signed_out_elsewhere_has_ended(nurse, marker_patient):
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    other_tab = verified_client(nurse)
    other_tab.cookies = client.cookies
    other_tab.post("/accounts/logout/")

    response = client.get(f"/api/v1/patients/{marker_patient.pk}/")
    without_cookie = Client().get(f"/api/v1/patients/{marker_patient.pk}/")

    assert response.status_code == 403
    assert response.json()["detail"].startswith("Your session has ended")
    assert without_cookie.json()["detail"] == (
        "Authentication credentials were not provided."
    )


def test_a_visitor_who_never_signed_in_is_not_told_a_session_ended(marker_patient):
    visitor = Client()
    visitor.get("/accounts/login/")  # the sign-in page starts a session
    assert "sessionid" in visitor.cookies

    api = visitor.get(f"/api/v1/patients/{marker_patient.pk}/")
    page = visitor.get("/patients/", follow=True)

    assert api.status_code == 403
    assert "session has ended" not in api.json()["detail"]
    assert "session has ended" not in page.content.decode()


def test_a_session_ended_by_several_requests_at_once_is_recorded_once(
    nurse, monkeypatch
):
    from accounts import middleware

    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(16 * MINUTE)
        ended = middleware.end_session

        def another_request_ended_it_first(request, action):
            # Another request that loaded the same idle session has removed
            # it (and recorded why) while this one was on its way.
            Session.objects.filter(session_key=session_key).delete()
            return ended(request, action)

        monkeypatch.setattr(middleware, "end_session", another_request_ended_it_first)
        response = client.get("/patients/")

    assert is_sign_in_page(response)
    assert not events(AuditAction.IDLE_LOGOUT).exists()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_lost_connection_while_saving_the_session_is_not_called_a_sign_out(
    nurse, monkeypatch
):
    from django.db import OperationalError
    from django.db.models import QuerySet

    client = verified_client(nurse)
    client.raise_request_exception = False
    session_key = client.cookies["sessionid"].value

    def connection_lost(self, **kwargs):
        if self.model is Session:
            raise OperationalError("server closed the connection unexpectedly")
        return saved(self, **kwargs)

    saved = QuerySet.update
    monkeypatch.setattr(QuerySet, "update", connection_lost)
    response = client.get("/patients/")

    assert response.status_code == 503
    assert "Your session ended" not in response.content.decode()
    assert Session.objects.filter(session_key=session_key).exists()


def test_a_note_saved_as_the_session_ends_elsewhere_is_said_possibly_saved(
    nurse, marker_patient, monkeypatch
):
    from records import views
    from records.models import ClinicalNote
    from tests.conftest import add_to_care_team

    add_to_care_team(nurse, marker_patient)
    client = verified_client(nurse)
    session_key = client.cookies["sessionid"].value
    saved = views.add_note

    def saved_then_signed_out_elsewhere(**kwargs):
        note = saved(**kwargs)
        Session.objects.filter(session_key=session_key).delete()
        return note

    monkeypatch.setattr(views, "add_note", saved_then_signed_out_elsewhere)
    response = client.post(
        f"/patients/{marker_patient.pk}/notes/new/",
        {"kind": "nursing", "title": "Obs", "body": "Resting comfortably"},
    )

    body = " ".join(response.content.decode().split())
    assert response.status_code == 403
    assert "it may have been saved" in body
    assert "Sign out" not in body  # the page of an ended session shows no menu
    assert ClinicalNote.objects.count() == 1


def test_a_session_whose_browser_never_came_back_is_ended_and_recorded(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(14 * MINUTE)
        still_open = end_abandoned_sessions()
        clock.tick(MINUTE)
        ended = end_abandoned_sessions()
        back_after_all = client.get("/patients/", follow=True)

    assert (still_open, ended) == (0, 1)
    assert "Your session has ended" in back_after_all.content.decode()
    recorded = events(AuditAction.IDLE_LOGOUT).get()
    assert recorded.actor_id == nurse.pk
    assert recorded.reason == ABANDONED_SESSION_REASON
    assert len(recorded.request_id) == 32, "the sweep's run has an id of its own"
    assert not Session.objects.filter(session_key=session_key).exists()
    assert back_after_all.redirect_chain[0][0].startswith("/accounts/login/")
    assert events(AuditAction.IDLE_LOGOUT).count() == 1


def test_the_sweep_leaves_a_session_in_use_alone(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        clock.tick(10 * MINUTE)
        assert client.get("/patients/").status_code == 200
        clock.tick(10 * MINUTE)
        ended = end_abandoned_sessions()

        assert client.get("/patients/").status_code == 200

    assert ended == 0
    assert not events(AuditAction.IDLE_LOGOUT).exists()


def test_an_abandoned_session_past_its_lifetime_is_recorded_as_expired(nurse):
    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session = client.session
        signed_in = timezone.now() - datetime.timedelta(hours=13)
        session[SIGNED_IN_AT_SESSION_KEY] = signed_in.timestamp()
        session.save()
        clock.tick(15 * MINUTE)
        end_abandoned_sessions()

    assert events(AuditAction.SESSION_EXPIRED).get().actor_id == nurse.pk
    assert not events(AuditAction.IDLE_LOGOUT).exists()


def test_a_sweep_that_cannot_record_leaves_the_session_for_the_next(nurse, monkeypatch):
    from audit import services as audit_services

    def unreachable(*args, **kwargs):
        raise audit_services.AuditUnavailable("audit database unreachable")

    with freeze_time(START) as clock:
        client = verified_client(nurse)
        session_key = client.cookies["sessionid"].value
        clock.tick(16 * MINUTE)
        monkeypatch.setattr(audit_services, "_append", unreachable)
        with pytest.raises(audit_services.AuditUnavailable):
            end_abandoned_sessions()
        kept = Session.objects.filter(session_key=session_key).exists()
        monkeypatch.undo()
        ended = end_abandoned_sessions()

    assert kept
    assert ended == 1
    assert events(AuditAction.IDLE_LOGOUT).count() == 1


def test_sessions_without_a_user_are_never_recorded_and_expire(nurse):
    with freeze_time(START) as clock:
        anonymous = SessionStore()
        anonymous["seen"] = True
        anonymous.create()
        clock.tick(20 * MINUTE)
        end_abandoned_sessions()
        kept_until_expiry = Session.objects.filter(
            session_key=anonymous.session_key
        ).exists()
        clock.tick(datetime.timedelta(seconds=settings.SESSION_COOKIE_AGE))
        end_abandoned_sessions()

    assert kept_until_expiry
    assert not Session.objects.filter(session_key=anonymous.session_key).exists()
    assert not AuditEvent.objects.filter(
        action__in=[AuditAction.IDLE_LOGOUT, AuditAction.SESSION_EXPIRED]
    ).exists()


def test_celery_beat_runs_the_sweep_every_minute(nurse):
    scheduled = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "accounts.end_abandoned_sessions"
    ]
    with freeze_time(START) as clock:
        verified_client(nurse)
        clock.tick(15 * MINUTE)
        ended = end_abandoned_sessions_task.delay().get()

    assert [entry["schedule"] for entry in scheduled] == [60]
    assert ended == 1
