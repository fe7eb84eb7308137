"""An index for a patient's newest events, in chain order.

On PostgreSQL the index is built CONCURRENTLY: a plain CREATE INDEX would
hold back every audit insert while it reads a trail of years, and a chart
open whose audit write cannot proceed is refused.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexWithoutBlockingWrites(AddIndexConcurrently):
    """CONCURRENTLY on PostgreSQL, a plain CREATE INDEX elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._on(schema_editor, "database_forwards")(
            app_label, schema_editor, from_state, to_state
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._on(schema_editor, "database_backwards")(
            app_label, schema_editor, from_state, to_state
        )

    def _on(self, schema_editor, step: str):
        if schema_editor.connection.vendor == "postgresql":
            return getattr(super(), step)
        return getattr(migrations.AddIndex, step).__get__(self)


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("audit", "0003_hash_chain"),
    ]

    operations = [
        AddIndexWithoutBlockingWrites(
            model_name="auditevent",
            index=models.Index(
                fields=["patient_ref", "-sequence"], name="audit_patient_recent_idx"
            ),
        ),
    ]
