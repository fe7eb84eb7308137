"""Chart opens on PostgreSQL reuse prepared statements instead of planning anew.

With the SQL and its parameters sent apart (server-side binding), psycopg
prepares a statement once it has been sent five times on a connection. Every
chart open runs the same statements, so after a few opens PostgreSQL parses
and plans none of them again; with parameters spliced into the SQL text it
would plan each one on every open.
"""

import pytest
from django.db import connections
from django.urls import reverse

from tests.conftest import add_to_care_team, verified_client

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.postgresql]


def _prepared(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_repeated_chart_opens_run_prepared_statements(physician, marker_patient):
    add_to_care_team(physician, marker_patient)
    client = verified_client(physician)
    chart = reverse("records:chart", args=[marker_patient.pk])

    for _open in range(6):
        assert client.get(chart).status_code == 200

    clinical = _prepared("default")
    audit = _prepared("audit")
    assert any("records_careteammembership" in sql for sql in clinical), clinical
    assert any("records_condition" in sql for sql in clinical), clinical
    assert any("INSERT INTO" in sql and "audit_auditevent" in sql for sql in audit)
