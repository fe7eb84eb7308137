#!/usr/bin/env bash
# Make sure what the tests need is here: Debian's Chromium for the browser
# tests, SoftHSM2 for the PKCS#11 tests, PostgreSQL and Redis on 127.0.0.1.
# Installs and starts them where it can (as root on Debian); otherwise says
# what is missing and fails.
set -euo pipefail

as_root() { [ "$(id -u)" = 0 ]; }

if [ ! -x "${EHR_CHROMIUM:-/usr/bin/chromium}" ]; then
  if as_root && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser tests..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing: apt-get install -y chromium (or set EHR_CHROMIUM)." >&2
    exit 1
  fi
fi

# SoftHSM2 stands in for a hardware security module in the PKCS#11 tests.
if ! command -v softhsm2-util >/dev/null; then
  if as_root && command -v apt-get >/dev/null; then
    echo "Installing SoftHSM2 for the PKCS#11 master-key tests..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  else
    echo "SoftHSM2 is missing: apt-get install -y softhsm2." >&2
    exit 1
  fi
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if as_root && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || {
    echo "PostgreSQL is not running on 127.0.0.1:5432 (see README: Services)." >&2
    exit 1
  }
fi

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  fi
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || {
    echo "Redis is not running on 127.0.0.1:6379 (see README: Services)." >&2
    exit 1
  }
fi
