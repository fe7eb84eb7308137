"""The ``hipaa`` system checks owned by audit: what the trail's database needs."""

from django.core import checks
from django.db import connections

from audit.routers import AUDIT_DATABASE


@checks.register("hipaa", checks.Tags.database)
def check_audit_database_maintenance(app_configs=None, databases=None, **kwargs):
    """Warn when PostgreSQL's autovacuum is off for the audit database.

    A database check: it runs with ``check --database audit`` and at every
    ``migrate``. The trail only grows; without autovacuum its statistics are
    never gathered, so queries that read it plan as if it were empty and grow
    slower with every event, and old transaction ids are never frozen.
    """
    if not databases or AUDIT_DATABASE not in databases:
        return []
    connection = connections[AUDIT_DATABASE]
    if connection.vendor != "postgresql":
        return []

    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        (setting,) = cursor.fetchone()
    if setting == "on":
        return []
    return [
        checks.Warning(
            "autovacuum is off on the audit database's PostgreSQL server",
            hint="set autovacuum = on in postgresql.conf and reload, or schedule "
            "VACUUM ANALYZE audit_auditevent (README, Audit trail, Maintenance)",
            id="hipaa.W301",
        )
    ]
