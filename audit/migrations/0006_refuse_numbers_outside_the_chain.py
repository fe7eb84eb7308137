"""Refuse an audit event numbered below 1, where the chain never reaches.

The chain starts at event 1, so an event numbered 0 or below would sit
outside everything ``verify_audit`` recomputes, while the audit screens show
it by its time. Inserting is what the audit role may do, so this is refused
below the application too; ``verify_audit`` also reports any such event, for
someone who can drop this trigger.
"""

from django.db import migrations

SQLITE_INSTALL = [
    """
    CREATE TRIGGER audit_event_refuse_outside_chain BEFORE INSERT ON audit_auditevent
    WHEN NEW.sequence < 1
    BEGIN
        SELECT RAISE(
            ABORT,
            'audit events are numbered from 1: an event outside the chain refused'
        );
    END
    """,
]
SQLITE_REMOVE = ["DROP TRIGGER IF EXISTS audit_event_refuse_outside_chain"]

POSTGRESQL_INSTALL = [
    """
    CREATE FUNCTION audit_refuse_outside_chain() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit events are numbered from 1: an event outside the chain refused';
    END
    $$
    """,  # noqa: E501 (one SQL message)
    """
    CREATE TRIGGER audit_event_refuse_outside_chain
    BEFORE INSERT ON audit_auditevent
    FOR EACH ROW WHEN (NEW.sequence < 1)
    EXECUTE FUNCTION audit_refuse_outside_chain()
    """,
]
POSTGRESQL_REMOVE = [
    "DROP TRIGGER IF EXISTS audit_event_refuse_outside_chain ON audit_auditevent",
    "DROP FUNCTION IF EXISTS audit_refuse_outside_chain()",
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
            raise RuntimeError(f"no audit number trigger written for {vendor}")
        for statement in STATEMENTS[vendor][0 if install else 1]:
            schema_editor.execute(statement, params=None)

    return step


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_chart_access_index")]

    operations = [migrations.RunPython(statements_for(True), statements_for(False))]
