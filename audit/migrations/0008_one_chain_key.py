"""At most one recorded chain key: every row takes slot 1, which is unique.

The portal's writer role may INSERT into audit_chainkeyfingerprint (the first
writer records the key there). Without this, that role could record a second
fingerprint beside the first and have a process holding another key accepted.

Adding a column rebuilds the table on SQLite, which drops its triggers, so
the write-once triggers are lifted first and installed again last (as in
audit/0003). A table already holding two keys cannot take this migration:
the unique slot refuses it, and that is the evidence to look into.
"""

import importlib

from django.db import migrations, models

chain_key_triggers = importlib.import_module(
    "audit.migrations.0007_chain_key_fingerprint"
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_chain_key_fingerprint")]

    operations = [
        migrations.RunPython(
            chain_key_triggers.statements_for(False),
            chain_key_triggers.statements_for(True),
        ),
        migrations.AddField(
            model_name="chainkeyfingerprint",
            name="slot",
            field=models.PositiveSmallIntegerField(default=1, unique=True),
        ),
        migrations.AddConstraint(
            model_name="chainkeyfingerprint",
            constraint=models.CheckConstraint(
                condition=models.Q(("slot", 1)), name="audit_one_chain_key"
            ),
        ),
        migrations.RunPython(
            chain_key_triggers.statements_for(True),
            chain_key_triggers.statements_for(False),
        ),
    ]
