"""A partial index for the chart's "recent access" panel: its actions only.

Built like 0004, CONCURRENTLY on PostgreSQL, so that building it on a trail
of years holds back no audit insert (a chart open whose audit write cannot
proceed is refused).
"""

from importlib import import_module

from django.db import migrations, models

# The operation 0004 defined, reused rather than written out a second time.
AddIndexWithoutBlockingWrites = import_module(
    "audit.migrations.0004_patient_recent_index"
).AddIndexWithoutBlockingWrites


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("audit", "0004_patient_recent_index"),
    ]

    operations = [
        AddIndexWithoutBlockingWrites(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(action__in=["VIEWED", "NOTE_CREATED"]),
                fields=["patient_ref", "-sequence"],
                name="audit_chart_access_idx",
            ),
        ),
    ]
