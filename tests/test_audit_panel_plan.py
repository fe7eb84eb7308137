"""The chart's "recent access" panel reads its ten rows without sorting the trail.

Asked on every chart open. A trail PostgreSQL holds no statistics for yet
(autovacuum off, or not yet run) once made the planner combine two indexes
and sort every event of the patient, a cost that grew with each open.
"""

import uuid

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from audit.models import CHART_ACCESS_ACTIONS, AuditAction, AuditOutcome
from audit.services import recent_events_for_patient, record_events

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.postgresql]


def _write(action: AuditAction, patient_ref: str, count: int) -> None:
    record_events(
        actor="system:test",
        action=action,
        outcome=AuditOutcome.SUCCESS,
        records=[(patient_ref, "ChartSummary", ())] * count,
    )


def test_the_panel_query_reads_an_index_in_order_without_statistics():
    # Enough events for a sort to matter; without the panel's own index the
    # plan reads all 5,000 and sorts them.
    patient_ref = str(uuid.uuid4())
    _write(AuditAction.VIEWED, patient_ref, 5000)
    _write(AuditAction.RECORD_CREATED, patient_ref, 100)
    _write(AuditAction.VIEWED, str(uuid.uuid4()), 100)
    connection = connections["audit"]

    with CaptureQueriesContext(connection) as captured:
        events = recent_events_for_patient(patient_ref, CHART_ACCESS_ACTIONS, 10)
    panel_query = captured.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {panel_query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert [event.action for event in events] == [AuditAction.VIEWED] * 10
    assert "Index Scan" in plan
    assert "Sort" not in plan, plan
