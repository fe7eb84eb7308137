"""The PostgreSQL role the portal writes audit events through: INSERT, SELECT only.

Migrations run as the audit database's owner; the web processes and workers
connect as this role, so even the portal's own credentials cannot change or
remove evidence (ASVS V13.2.2). The triggers stay as the second line.
"""

import re

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
AUDIT_TABLE = "audit_auditevent"


def writer_role_statements(role: str, database: str) -> list[str]:
    """SQL creating ``role`` (if missing) with the least privilege a writer needs."""
    if not ROLE_NAME.match(role):
        raise ValueError("a role name is lower-case letters, digits and underscores")
    if not DATABASE_NAME.match(database):
        raise ValueError("a database name is letters, digits, '_' and '-'")
    return [
        f"""DO $$ BEGIN CREATE ROLE "{role}" LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL; END $$""",
        f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        f'REVOKE ALL ON {AUDIT_TABLE} FROM "{role}"',
        f'GRANT SELECT, INSERT ON {AUDIT_TABLE} TO "{role}"',
        f'GRANT USAGE ON SEQUENCE {AUDIT_TABLE}_id_seq TO "{role}"',
    ]
