#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then runs every
# test on SQLite and again on PostgreSQL (with Redis), browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
bash scripts/services.sh

export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
PG_URL="postgres://$PGUSER@$PGHOST:5432"
# Distinct names let two checkouts run the suite at once (pytest prefixes test_).
PG_DB="${EHR_TEST_PG_DB:-ehr_portal}"

echo "== Test suite on SQLite (embedded default)"
.venv/bin/python -m pytest "$@"

echo "== Test suite on PostgreSQL ($PGHOST)"
DATABASE_URL="$PG_URL/$PG_DB" AUDIT_DATABASE_URL="$PG_URL/${PG_DB}_audit" \
  .venv/bin/python -m pytest "$@"
