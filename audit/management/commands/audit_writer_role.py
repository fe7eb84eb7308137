"""manage.py audit_writer_role ROLE [--apply]: the audit writer role."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from audit.roles import AUDIT_TABLE, writer_role_statements
from audit.routers import AUDIT_DATABASE


class Command(BaseCommand):
    help = (
        "Print (or, with --apply, run as the audit database's owner) the SQL that "
        "creates a PostgreSQL role with INSERT and SELECT only on the audit trail."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", help="role name, e.g. ehr_audit_writer")
        parser.add_argument(
            "--apply", action="store_true", help="run the SQL instead of printing it"
        )

    def handle(self, *args, role, apply, **options):
        connection = connections[AUDIT_DATABASE]
        if connection.vendor != "postgresql":
            raise CommandError("The audit writer role exists on PostgreSQL only.")
        try:
            statements = writer_role_statements(role, connection.settings_dict["NAME"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        _refuse_a_role_above_its_grants(connection, role)

        if not apply:
            for statement in statements:
                self.stdout.write(f"{statement.as_string(None)};")
            return
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        self.stdout.write(f"Role {role} may now INSERT and SELECT audit events only.")


def _refuse_a_role_above_its_grants(connection, role: str) -> None:
    """A superuser or the table's owner keeps every right whatever is revoked."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
        found = cursor.fetchone()
        cursor.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = %s", [AUDIT_TABLE]
        )
        owner = cursor.fetchone()
    if found and found[0]:
        raise CommandError(
            f"role {role} is a superuser: it can drop the triggers and change the "
            "trail whatever it is granted; name a role of its own for the portal"
        )
    if owner and owner[0] == role:
        raise CommandError(
            f"role {role} owns the audit table: it can change the trail whatever "
            "it is granted; name a role of its own for the portal"
        )
