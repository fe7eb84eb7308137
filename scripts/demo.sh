#!/usr/bin/env bash
# One command from a fresh checkout to a running demo portal on 127.0.0.1:8000:
# virtual environment, dependencies, development keys, both databases migrated,
# the Synthea bundles imported (when ../shared/data/synthea is there), demo
# users and patients seeded. Embedded default: SQLite, tasks in-process.
set -euo pipefail
cd "$(dirname "$0")/.."

export PORTAL_MODE=development
export PORTAL_DATA_DIR="${PORTAL_DATA_DIR:-$PWD/var}"
# The Synthea bundles were written with +10:00 offsets: show their local dates.
export PORTAL_TIME_ZONE="${PORTAL_TIME_ZONE:-Australia/Brisbane}"
FHIR_DIR="${DEMO_FHIR_DIR:-$PWD/../shared/data/synthea}"
ADDRESS="${DEMO_ADDRESS:-127.0.0.1:8000}"
# Links in the demo's e-mail (printed on the console) point where it runs.
if [ -n "${DEMO_ADDRESS:-}" ]; then
    export PORTAL_PUBLIC_URL="${PORTAL_PUBLIC_URL:-http://$DEMO_ADDRESS}"
fi

bash scripts/bootstrap.sh
PY=.venv/bin/python

$PY manage.py migrate --noinput -v0
$PY manage.py migrate --database audit --noinput -v0

if [ -d "$FHIR_DIR" ]; then
  $PY manage.py import_fhir "$FHIR_DIR"
else
  echo "No FHIR bundles at $FHIR_DIR (set DEMO_FHIR_DIR); seeding synthetic patients only."
fi
$PY manage.py seed_demo

cat <<INFO

EHR Portal demo: http://$ADDRESS/
Sign in with a username and password from the credentials file above, then
the one-time code from an authenticator app loaded with its totp_secret, or:
  PORTAL_MODE=development PORTAL_DATA_DIR="$PORTAL_DATA_DIR" $PY manage.py demo_code dr.patel
Stop with Ctrl-C.

INFO
exec $PY manage.py runserver "$ADDRESS" --noreload
