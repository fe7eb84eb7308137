"""On PostgreSQL the portal writes the audit trail as an INSERT/SELECT-only role."""

import pytest
from django.core.management import call_command
from django.db import ProgrammingError, connections, transaction

from audit.models import AuditAction, AuditEvent, AuditOutcome
from audit.services import record_event

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.postgresql]

ROLE = "ehr_audit_writer_test"


@pytest.fixture
def as_writer_role():
    """Create the role (rolled back with the test) and act as it, like the portal."""
    connection = connections["audit"]
    call_command("audit_writer_role", ROLE, "--apply")
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{ROLE}"')
    yield connection
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def refused_as_writer(connection, statement):
    with (
        pytest.raises(ProgrammingError, match="permission denied|must be owner"),
        transaction.atomic(using="audit"),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)


def test_the_writer_role_can_write_and_read_events(as_writer_role):
    event = record_event(
        actor="system:test", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS
    )

    assert AuditEvent.objects.get(pk=event.pk).sequence == event.sequence


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET reason = 'edited'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
        "DROP TABLE audit_auditevent",
        "UPDATE audit_chainkeyfingerprint SET fingerprint = 'another key'",
        "DELETE FROM audit_chainkeyfingerprint",
        "TRUNCATE audit_chainkeyfingerprint",
    ],
)
def test_the_writer_role_cannot_change_the_trail(as_writer_role, statement):
    record_event(
        actor="system:test", action=AuditAction.VIEWED, outcome=AuditOutcome.SUCCESS
    )

    refused_as_writer(as_writer_role, statement)


def test_the_command_prints_the_sql_for_review(capsys):
    call_command("audit_writer_role", "ehr_audit_writer")

    sql = capsys.readouterr().out
    assert 'GRANT SELECT, INSERT ON "audit_auditevent" TO "ehr_audit_writer"' in sql
    grants = [line for line in sql.splitlines() if line.startswith("GRANT")]
    assert not any(
        word in line for line in grants for word in ("UPDATE", "DELETE", "TRUNCATE")
    )


@pytest.mark.parametrize("apply", [[], ["--apply"]])
def test_a_superuser_or_the_tables_owner_is_refused_as_the_writer_role(apply):
    from django.core.management import CommandError

    owner = connections["audit"].settings_dict["USER"] or "postgres"

    with pytest.raises(CommandError) as refused:
        call_command("audit_writer_role", owner, *apply)

    assert str(refused.value).startswith(f"role {owner} ")
    assert "whatever it is granted" in str(refused.value)
