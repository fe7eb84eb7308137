#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then runs every
# test on SQLite and again on PostgreSQL (with Redis), browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
bash scripts/services.sh

# The Synthea bundles live beside the checkout (../shared/data). A clone made
# elsewhere from a local checkout (CI clones into a temporary folder) reads
# them beside the checkout it was cloned from.
if [ -z "${EHR_SHARED_DATA:-}" ] && [ ! -d ../shared/data ]; then
  origin="$(git config --get remote.origin.url || true)"
  if [ -n "$origin" ] && [ -d "$origin/../shared/data" ]; then
    EHR_SHARED_DATA="$(cd "$origin/../shared/data" && pwd)"
    export EHR_SHARED_DATA
    echo "Synthea bundles: $EHR_SHARED_DATA (beside $origin)"
  fi
fi

export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
PG_URL="postgres://$PGUSER@$PGHOST:5432"
# Distinct names let two checkouts run the suite at once (pytest prefixes test_).
PG_DB="${EHR_TEST_PG_DB:-ehr_portal}"

echo "== Test suite on SQLite (embedded default)"
.venv/bin/python -m pytest "$@"

echo "== Test suite on PostgreSQL ($PGHOST)"
DATABASE_URL="$PG_URL/$PG_DB" AUDIT_DATABASE_URL="$PG_URL/${PG_DB}_audit" \
  .venv/bin/python -m pytest "$@"
