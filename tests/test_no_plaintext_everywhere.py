"""Marker patients leave no plaintext in stored bytes, logs, errors, caches, queues."""

import base64
import io
import json
import logging

import pytest
from django.contrib import admin
from django.core import mail
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client

from ehr_portal.celery import app as celery_app
from ehr_portal.logging import RequestIdFilter, UTCFormatter
from records import views
from records.models import Condition, Encounter, MedicationRequest, Observation
from records.tasks import verify_chart_encryption
from tests.conftest import add_to_care_team, make_user, verified_client
from tests.test_no_plaintext import _stored_bytes, as_dumped

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

MARKERS = [
    "Quillonemarker", "Zyxwvutmarker", "Markerstreet", "555-010-9999",
    "Markercondition", "Markerdrug", "Markerreason", "Markervalue",
]  # fmt: skip


@pytest.fixture
def chart(marker_patient, physician):
    add_to_care_team(physician, marker_patient)
    patient = marker_patient
    Condition.objects.create(
        patient=patient, source_key="c1", description="Markercondition", code="x1"
    )
    MedicationRequest.objects.create(
        patient=patient, source_key="m1", description="Markerdrug 5 mg",
        status="active", dosage="daily",
    )  # fmt: skip
    Encounter.objects.create(
        patient=patient, source_key="e1", description="Visit", reason="Markerreason"
    )
    Observation.objects.create(
        patient=patient, source_key="o1", description="Note", value="Markervalue"
    )
    return patient


def _use_the_portal(physician, patient) -> None:
    client = verified_client(physician)
    assert client.get(f"/patients/{patient.pk}/").status_code == 200
    assert client.get(f"/patients/{patient.pk}/medications/").status_code == 200
    found = client.post("/patients/", {"family_name": "Zyxwvutmarker"})
    assert found.context["patients"] == [patient]


def _leaks(data: bytes | str) -> list[str]:
    if isinstance(data, str):
        data = data.encode()
    return [marker for marker in MARKERS if marker.encode() in data]


def test_no_marker_in_either_database_even_after_rotation(chart, physician):
    _use_the_portal(physician, chart)
    call_command("rotate_keys", index_key=True)

    clinical, audit = _stored_bytes("default"), _stored_bytes("audit")

    # Each dump holds what was written: a value sealed under the new key.
    sealed = bytes(Encounter.objects.values_list("code", flat=True).first())
    assert sealed[:3] == bytes((2, 0, 2))
    assert as_dumped(sealed, "default") in clinical and b"PATIENT_SEARCH" in audit
    assert _leaks(clinical) == []
    assert _leaks(audit) == []


def test_no_marker_in_debug_logs(chart, physician, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    try:
        _use_the_portal(physician, chart)
        call_command("rotate_keys")
    finally:
        connection.force_debug_cursor = False

    assert "records_patient" in caplog.text, "SQL was logged with its parameters"
    assert _leaks(caplog.text) == []


@pytest.fixture
def failing_portal(settings, monkeypatch):
    settings.ADMINS = [("Operations", "ops@hospital.example")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEBUG = False

    def summary_with_a_bug(patient):
        raise ValueError(f"cannot summarise {patient.family_name} {patient.mrn}")

    def search_with_a_bug(user, query):
        raise RuntimeError(f"search failed for {query.family_name}")

    monkeypatch.setattr(views, "chart_summary", summary_with_a_bug)
    monkeypatch.setattr(views, "search_patients", search_with_a_bug)


@pytest.fixture
def portal_log():
    """The portal's own log format, as operators would read it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(UTCFormatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    logging.getLogger().addHandler(handler)
    yield buffer
    logging.getLogger().removeHandler(handler)


def test_no_marker_in_a_500_page_its_log_or_its_admin_email(
    chart, physician, failing_portal, portal_log
):
    client = verified_client(physician)
    client.raise_request_exception = False

    pages = [
        client.get(f"/patients/{chart.pk}/"),
        client.post("/patients/", {"family_name": "Zyxwvutmarker"}),
    ]

    assert [page.status_code for page in pages] == [500, 500]
    assert len(mail.outbox) == 2
    for page in pages:
        assert _leaks(page.content) == []
    bodies = "".join(message.subject + message.body for message in mail.outbox)
    assert "summary_with_a_bug" in bodies and "family_name" in bodies
    assert _leaks(bodies) == []
    assert "ValueError" in portal_log.getvalue()
    assert _leaks(portal_log.getvalue()) == []


def test_no_marker_in_the_cache(chart, physician):
    _use_the_portal(physician, chart)

    for alias in caches:
        stored = getattr(caches[alias], "_cache", {})
        assert _leaks(b"".join(bytes(value) for value in stored.values())) == []


def _redis_contents(store) -> bytes:
    """Every value in the database, with Celery's base64 message bodies decoded."""
    values = []
    for key in store.keys("*"):
        kind = store.type(key)
        if kind == b"string":
            values.append(store.get(key))
        elif kind == b"list":
            values.extend(store.lrange(key, 0, -1))
        elif kind == b"hash":
            values.extend(store.hvals(key))
        elif kind == b"set":
            values.extend(store.smembers(key))
        elif kind == b"zset":
            values.extend(store.zrange(key, 0, -1))
        values.append(key)
    decoded = []
    for value in values:
        try:
            message = json.loads(value)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("body"), str):
            decoded.append(base64.b64decode(message["body"]))
    return b"\n".join(values + decoded)


def test_no_marker_in_celery_task_arguments_or_results(chart, redis_queue):
    from celery.contrib.testing.worker import start_worker

    result = verify_chart_encryption.delay(str(chart.pk))
    queued = _redis_contents(redis_queue)
    assert str(chart.pk).encode() in queued, "the task message was read"

    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        outcome = result.get(timeout=30)

    assert outcome["failed"] == 0 and outcome["opened"] > 10
    stored = _redis_contents(redis_queue)
    assert b'"opened"' in stored, "the task result was read"
    assert _leaks(queued) == []
    assert _leaks(stored) == []


def test_no_marker_in_admin_pages_for_an_administrator_off_the_care_team(chart):
    from accounts.roles import Role

    administrator = make_user("admin.ross", Role.ADMIN)
    administrator.is_staff = administrator.is_superuser = True
    administrator.save()
    client = verified_client(administrator)

    urls = ["/admin/"]
    for model in admin.site._registry:
        opts = model._meta
        urls.append(f"/admin/{opts.app_label}/{opts.model_name}/")
    urls.append(f"/admin/accounts/user/{administrator.pk}/change/")

    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert _leaks(response.content) == [], url
    assert Client().get(f"/patients/{chart.pk}/").status_code == 302
