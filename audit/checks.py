"""The ``hipaa`` system checks owned by audit: what the trail's database needs."""

from django.core import checks
from django.db import DatabaseError, connections

from audit import chain
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


@checks.register("hipaa", checks.Tags.database)
def check_chain_key_is_the_trails(app_configs=None, databases=None, **kwargs):
    """An error when this process's chain key is not the one the trail records.

    Such a process can write no audit event, so it would show no chart; the
    check says why before the first clinician finds out (``check --database
    audit``, and every ``migrate``).
    """
    if not databases or AUDIT_DATABASE not in databases:
        return []

    try:
        with connections[AUDIT_DATABASE].cursor() as cursor:
            cursor.execute(chain.RECORDED_KEYS)
            recorded = {row[0] for row in cursor.fetchall()}
            head = chain.chain_head(cursor)
        # The same decision the writers take before each append.
        sealed_with_key = chain.trail_takes_key(chain.chain_key(), recorded, *head)
    except DatabaseError:
        # Not migrated yet (this runs before migrate's first step): nothing
        # recorded to compare with.
        return []
    if sealed_with_key:
        return []
    return [
        checks.Error(
            "this process's audit chain key is not the one the audit trail is "
            "sealed with: every audit write would be refused",
            hint="give it the deployment's PORTAL_AUDIT_CHAIN_KEY (or _FILE) "
            "(README, Audit keys)",
            id="hipaa.E302",
        )
    ]
