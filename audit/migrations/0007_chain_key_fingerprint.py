"""Record which chain key seals the trail, in a table as write-once as the trail.

The first writer records the key's fingerprint (audit.chain); a process given
another key is then refused before it writes. The table takes the same
triggers as the events: UPDATE and DELETE (and TRUNCATE on PostgreSQL) are
refused below the application, so the recorded key cannot be swapped quietly
for another by anyone short of the database's owner.
"""

import django.utils.timezone
from django.db import migrations, models

SQLITE_INSTALL = [
    """
    CREATE TRIGGER audit_chain_key_refuse_update BEFORE UPDATE ON audit_chainkeyfingerprint
    BEGIN SELECT RAISE(ABORT, 'the recorded chain key is write-once: UPDATE refused'); END
    """,  # noqa: E501 (one SQL statement)
    """
    CREATE TRIGGER audit_chain_key_refuse_delete BEFORE DELETE ON audit_chainkeyfingerprint
    BEGIN SELECT RAISE(ABORT, 'the recorded chain key is write-once: DELETE refused'); END
    """,  # noqa: E501 (one SQL statement)
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS audit_chain_key_refuse_update",
    "DROP TRIGGER IF EXISTS audit_chain_key_refuse_delete",
]

# audit/0002's function raises for any statement it is attached to.
POSTGRESQL_INSTALL = [
    """
    CREATE TRIGGER audit_chain_key_refuse_change
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_chainkeyfingerprint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()
    """,
]
POSTGRESQL_REMOVE = [
    "DROP TRIGGER IF EXISTS audit_chain_key_refuse_change ON audit_chainkeyfingerprint",
]

STATEMENTS = {
    "sqlite": (SQLITE_INSTALL, SQLITE_REMOVE),
    "postgresql": (POSTGRESQL_INSTALL, POSTGRESQL_REMOVE),
}


def statements_for(install: bool):
    """A migration step running this vendor's install or remove statements."""

    def step(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in STATEMENTS:
            raise RuntimeError(f"no chain key triggers written for {vendor}")
        for statement in STATEMENTS[vendor][0 if install else 1]:
            schema_editor.execute(statement, params=None)

    return step


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_refuse_numbers_outside_the_chain")]

    operations = [
        migrations.CreateModel(
            name="ChainKeyFingerprint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("fingerprint", models.CharField(max_length=64, unique=True)),
                (
                    "recorded_at",
                    models.DateTimeField(default=django.utils.timezone.now),
                ),
            ],
            options={"abstract": False},
        ),
        migrations.RunPython(statements_for(True), statements_for(False)),
    ]
