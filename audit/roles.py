"""The PostgreSQL role the portal writes audit events through: INSERT, SELECT only.

Migrations run as the audit database's owner; the web processes and workers
connect as this role, so even the portal's own credentials cannot change or
remove evidence (ASVS V13.2.2). The triggers stay as the second line.
"""

import re

from psycopg import sql

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
AUDIT_TABLE = "audit_auditevent"
CHAIN_KEY_TABLE = "audit_chainkeyfingerprint"


def writer_role_statements(role: str, database: str) -> list[sql.Composed]:
    """SQL creating ``role`` (if missing) with the least privilege a writer needs.

    Names cannot be bound parameters in DDL, so they are composed as quoted
    identifiers by psycopg (SECURITY V1.2.4), after the checks above.
    """
    if not ROLE_NAME.match(role):
        raise ValueError("a role name is lower-case letters, digits and underscores")
    if not DATABASE_NAME.match(database):
        raise ValueError("a database name is letters, digits, '_' and '-'")
    names = {
        "role": sql.Identifier(role),
        "database": sql.Identifier(database),
        "table": sql.Identifier(AUDIT_TABLE),
        "sequence": sql.Identifier(f"{AUDIT_TABLE}_id_seq"),
        # The first writer records which chain key seals the trail.
        "keys": sql.Identifier(CHAIN_KEY_TABLE),
        "keys_sequence": sql.Identifier(f"{CHAIN_KEY_TABLE}_id_seq"),
    }
    statements = (
        "DO $$ BEGIN CREATE ROLE {role} LOGIN;\n"
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "GRANT CONNECT ON DATABASE {database} TO {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "REVOKE ALL ON {table} FROM {role}",
        "GRANT SELECT, INSERT ON {table} TO {role}",
        "GRANT USAGE ON SEQUENCE {sequence} TO {role}",
        "REVOKE ALL ON {keys} FROM {role}",
        "GRANT SELECT, INSERT ON {keys} TO {role}",
        "GRANT USAGE ON SEQUENCE {keys_sequence} TO {role}",
    )
    return [sql.SQL(statement).format(**names) for statement in statements]
