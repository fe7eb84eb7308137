"""Sequence numbers and chain hashes; events already written are chained in id order.

Altering a column rebuilds the table on SQLite, which drops its triggers, so
the write-once triggers are lifted first and installed again last.
"""

import importlib

from django.db import migrations, models

write_once = importlib.import_module("audit.migrations.0002_write_once_triggers")


def chain_existing_events(apps, schema_editor):
    from audit import chain

    AuditEvent = apps.get_model("audit", "AuditEvent")
    key = chain.chain_key()
    previous_hash = chain.GENESIS_HASH
    for sequence, event in enumerate(AuditEvent.objects.order_by("id"), start=1):
        event.sequence = sequence
        event.ip_address = chain.normalised_ip(event.ip_address)
        canonical = chain.event_canonical_form(event)
        event.chain_hash = previous_hash = chain.seal(previous_hash, canonical, key)
        event.save(update_fields=["sequence", "chain_hash", "ip_address"])


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_write_once_triggers")]

    operations = [
        migrations.RunPython(write_once.remove_triggers, write_once.install_triggers),
        migrations.AddField(
            model_name="auditevent",
            name="sequence",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_hash",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(chain_existing_events, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="sequence",
            field=models.BigIntegerField(unique=True),
        ),
        migrations.RunPython(write_once.install_triggers, write_once.remove_triggers),
    ]
