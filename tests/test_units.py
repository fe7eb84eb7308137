"""Measurements as a chart prints them; the stored value stays the source's."""

import datetime

import pytest
from django.utils import timezone

from records.models import Observation, ObservationCategory
from records.units import printed_value
from tests.conftest import add_to_care_team, verified_client


@pytest.mark.parametrize(
    "stored, printed",
    [
        ("3 {score}", "3"),
        ("12 {#}", "12"),
        ("-1.2 {T-score}", "-1.2"),
        ("130/81 mm[Hg]", "130/81 mmHg"),
        ("37.2 Cel", "37.2 °C"),
        ("24.3 kg/m2", "24.3 kg/m²"),
        ("5.1 10*3/uL", "5.1 ×10³/µL"),
        ("72 /min", "72 /min"),
        ("81.2 kg", "81.2 kg"),
        ("Never smoked tobacco (finding)", "Never smoked tobacco (finding)"),
        ("{score}", "{score}"),
        ("", ""),
    ],
)
def test_units_are_printed_as_charts_print_them(stored, printed):
    assert printed_value(stored) == printed


@pytest.mark.django_db(databases="__all__")
def test_the_vital_signs_show_printed_units_and_the_api_the_stored_ones(
    physician, marker_patient
):
    add_to_care_team(physician, marker_patient)
    for number, (description, value) in enumerate(
        [("Pain severity", "3 {score}"), ("Blood pressure", "130/81 mm[Hg]")]
    ):
        Observation.objects.create(
            patient=marker_patient, source_key=f"unit-{number}",
            occurred_at=timezone.now() - datetime.timedelta(hours=number),
            category=ObservationCategory.VITAL_SIGNS, code=f"code-{number}",
            description=description, value=value,
        )  # fmt: skip
    client = verified_client(physician)

    for path in ("", "vitals/"):
        body = client.get(f"/patients/{marker_patient.pk}/{path}").content.decode()
        assert "130/81 mmHg" in body and ">3</td>" in body
        assert "{score}" not in body and "mm[Hg]" not in body

    api = client.get(f"/api/v1/patients/{marker_patient.pk}/vitals/").json()
    assert {row["value"] for row in api["results"]} == {"3 {score}", "130/81 mm[Hg]"}
