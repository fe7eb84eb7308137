"""The summary's compiled queries answer for the patient and reader at hand.

They are compiled once per shape and then run with new values, so a slip
would show one patient's records in another's chart, or a category to a
reader without its grant. Each test runs on both engines in CI.
"""

import datetime

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.roles import Role
from records.chart_queries import CompiledChartQuery
from records.models import Condition, Encounter, PatientSource, Sensitivity
from records.services import register_patient
from tests.conftest import add_to_care_team, make_user, verified_client

pytestmark = pytest.mark.django_db(databases="__all__")


def _patient(family_name: str):
    return register_patient(
        given_name="Test", family_name=family_name,
        birth_date=datetime.date(1970, 5, 17), source=PatientSource.DEMO,
    )  # fmt: skip


def _condition(patient, description, *, days_ago=1, status="active", **extra):
    return Condition.objects.create(
        patient=patient, source_key=f"{description}-{days_ago}",
        occurred_at=timezone.now() - datetime.timedelta(days=days_ago),
        code="44054006", description=description, status=status, **extra,
    )  # fmt: skip


def _active_conditions(patient_id, categories):
    return (
        Condition.objects.filter(patient_id=patient_id, sensitivity__in=categories)
        .filter(abated_at__isnull=True)
        .exclude(status="resolved")
        .order_by("-occurred_at")[:10]
    )


def _seen(records) -> list[tuple]:
    return [
        (record.pk, record.patient_id, record.occurred_at, record.description)
        for record in records
    ]


def test_the_same_records_in_the_same_order_as_the_orm_query():
    patient = _patient("Ormsame")
    for day in range(1, 13):
        _condition(patient, f"Condition of day {day}", days_ago=day)
    _condition(patient, "Resolved one", days_ago=0, status="resolved")
    _condition(patient, "Abated one", days_ago=0, abated_at=timezone.now())
    _condition(patient, "Hidden one", days_ago=0, sensitivity=Sensitivity.HIV)
    query = CompiledChartQuery(Condition, _active_conditions)

    compiled = query.run(patient.pk, [Sensitivity.ROUTINE])

    expected = list(_active_conditions(patient.pk, [Sensitivity.ROUTINE]))
    assert _seen(compiled) == _seen(expected)
    assert [record.description for record in compiled][:2] == [
        "Condition of day 1",
        "Condition of day 2",
    ]
    assert len(compiled) == 10
    assert timezone.is_aware(compiled[0].occurred_at)


def test_each_patient_gets_only_their_own_records():
    first, second = _patient("Firstpatient"), _patient("Secondpatient")
    _condition(first, "First patient's asthma")
    _condition(second, "Second patient's gout")
    query = CompiledChartQuery(Condition, _active_conditions)

    for_first = query.run(first.pk, [Sensitivity.ROUTINE])
    for_second = query.run(second.pk, [Sensitivity.ROUTINE])

    assert [record.description for record in for_first] == ["First patient's asthma"]
    assert [record.description for record in for_second] == ["Second patient's gout"]


def test_readers_with_as_many_categories_see_only_their_own():
    patient = _patient("Twocategories")
    _condition(patient, "HIV disease", sensitivity=Sensitivity.HIV)
    _condition(patient, "BRCA1 variant", sensitivity=Sensitivity.GENETIC)
    query = CompiledChartQuery(Condition, _active_conditions)

    hiv_reader = query.run(patient.pk, [Sensitivity.ROUTINE, Sensitivity.HIV])
    genetic_reader = query.run(patient.pk, [Sensitivity.GENETIC, Sensitivity.ROUTINE])

    assert [record.description for record in hiv_reader] == ["HIV disease"]
    assert [record.description for record in genetic_reader] == ["BRCA1 variant"]


def test_summary_pages_one_after_another_keep_patients_and_grants_apart():
    hiv_physician = make_user("dr.hivgrant", Role.PHYSICIAN)
    hiv_physician.user_permissions.add(Permission.objects.get(codename="view_hiv"))
    genetic_physician = make_user("dr.geneticgrant", Role.PHYSICIAN)
    genetic_physician.user_permissions.add(
        Permission.objects.get(codename="view_genetic")
    )
    first, second = _patient("Pageonepatient"), _patient("Pagetwopatient")
    _condition(first, "Hypertension of the first")
    _condition(first, "HIV disease of the first", sensitivity=Sensitivity.HIV)
    _condition(second, "Gout of the second")
    for physician in (hiv_physician, genetic_physician):
        add_to_care_team(physician, first)
        add_to_care_team(physician, second)

    hiv_reads_first = verified_client(hiv_physician).get(f"/patients/{first.pk}/")
    genetic_reads_first = verified_client(genetic_physician).get(
        f"/patients/{first.pk}/"
    )
    hiv_reads_second = verified_client(hiv_physician).get(f"/patients/{second.pk}/")

    assert "HIV disease of the first" in hiv_reads_first.content.decode()
    assert "HIV disease of the first" not in genetic_reads_first.content.decode()
    assert "Hypertension of the first" in genetic_reads_first.content.decode()
    second_page = hiv_reads_second.content.decode()
    assert "Gout of the second" in second_page
    assert "of the first" not in second_page


def test_no_visible_category_reads_nothing_without_asking_the_database():
    patient = _patient("Nocategory")
    _condition(patient, "Asthma")
    query = CompiledChartQuery(Condition, _active_conditions)

    with CaptureQueriesContext(connection) as queries:
        records = query.run(patient.pk, [])

    assert records == []
    assert len(queries) == 0


def test_a_query_that_ignores_the_categories_is_refused():
    patient = _patient("Ignoredcategories")
    query = CompiledChartQuery(
        Condition, lambda patient_id, _categories: Condition.objects.filter(
            patient_id=patient_id
        )
    )  # fmt: skip

    with pytest.raises(ImproperlyConfigured, match="every category"):
        query.run(patient.pk, [Sensitivity.ROUTINE])


def test_a_query_with_joined_rows_is_refused():
    patient = _patient("Joinedrows")
    query = CompiledChartQuery(
        Encounter,
        lambda patient_id, categories: Encounter.objects.filter(
            patient_id=patient_id, sensitivity__in=categories
        ).select_related("patient"),
    )

    with pytest.raises(ImproperlyConfigured, match="plain rows"):
        query.run(patient.pk, [Sensitivity.ROUTINE])


def test_a_query_over_another_model_is_refused():
    patient = _patient("Othermodel")
    query = CompiledChartQuery(Encounter, _active_conditions)

    with pytest.raises(ImproperlyConfigured, match="reads Encounter"):
        query.run(patient.pk, [Sensitivity.ROUTINE])


def test_records_of_one_moment_come_in_the_same_order_on_every_open():
    from records.services import _SUMMARY_QUERIES, SUMMARY_LIMITS

    patient = _patient("Samemoment")
    moment = timezone.now() - datetime.timedelta(days=2)
    for number in range(12):
        Condition.objects.create(
            patient=patient, source_key=f"tie-{number}", occurred_at=moment,
            code="44054006", description=f"Tied {number}", status="active",
        )  # fmt: skip

    shown = _SUMMARY_QUERIES["conditions"].run(patient.pk, [Sensitivity.ROUTINE])

    by_key = sorted(Condition.objects.filter(patient=patient), key=lambda c: c.pk)
    # The query reads one past what the summary shows, to tell it there is more.
    read = SUMMARY_LIMITS["conditions"] + 1
    assert [record.pk for record in shown] == [record.pk for record in by_key[:read]]


def _panel(page) -> str:
    body = page.content.decode()
    return body[body.index("Recent access to this chart") :]


def test_each_open_reads_its_own_patient_and_panel():
    first_reader = make_user("dr.firstreader", Role.PHYSICIAN)
    second_reader = make_user("dr.secondreader", Role.PHYSICIAN)
    first, second = _patient("Firstchartpatient"), _patient("Secondchartpatient")
    add_to_care_team(first_reader, first)
    for reader in (first_reader, second_reader):
        add_to_care_team(reader, second)
    first_client = verified_client(first_reader)

    first_client.get(f"/patients/{second.pk}/")
    verified_client(second_reader).get(f"/patients/{second.pk}/")
    first_page = first_client.get(f"/patients/{first.pk}/")
    second_page = first_client.get(f"/patients/{second.pk}/")

    assert "Firstchartpatient" in first_page.content.decode()
    assert "Secondchartpatient" not in first_page.content.decode()
    assert "Secondchartpatient" in second_page.content.decode()
    assert "Firstchartpatient" not in second_page.content.decode()
    assert "dr.secondreader" not in _panel(first_page)
    assert _panel(first_page).count("dr.firstreader") == 1
    assert "dr.secondreader" in _panel(second_page)
    assert _panel(second_page).count("dr.firstreader") == 2


def test_an_unknown_patient_id_is_still_a_404_after_known_ones():
    import uuid

    from audit.models import AuditAction, AuditEvent

    reader = make_user("dr.unknownid", Role.PHYSICIAN)
    patient = _patient("Knownpatient")
    add_to_care_team(reader, patient)
    client = verified_client(reader)
    unknown = uuid.uuid4()

    known = client.get(f"/patients/{patient.pk}/")
    missing = client.get(f"/patients/{unknown}/")

    assert known.status_code == 200
    assert missing.status_code == 404
    assert "Knownpatient" not in missing.content.decode()
    denied = AuditEvent.objects.get(action=AuditAction.ACCESS_DENIED)
    assert (denied.patient_ref, denied.reason) == (str(unknown), "unknown patient")


@pytest.mark.parametrize("count", [10, 11])
def test_the_summary_says_when_it_shows_only_the_newest_allergies(count):
    from records.models import AllergyIntolerance

    patient = _patient("Manyallergies")
    physician = make_user("dr.summary", Role.PHYSICIAN)
    add_to_care_team(physician, patient)
    for day in range(1, count + 1):
        AllergyIntolerance.objects.create(
            patient=patient, source_key=f"a{day}", code=f"{day}",
            occurred_at=timezone.now() - datetime.timedelta(days=day),
            description=f"Allergen of day {day}", criticality="high",
        )  # fmt: skip

    page = verified_client(physician).get(f"/patients/{patient.pk}/")

    shown = page.content.decode()
    assert shown.count("Allergen of day") == 10
    # The oldest is the one left out, and the page says there are more.
    assert "Allergen of day 11" not in shown
    assert ("all allergies →" in shown) is (count == 11)
