#!/usr/bin/env bash
# Installs (Debian packages) and starts what the test suite needs when it is missing.
# The tests start their own nginx, HAProxy, sshd and Prometheus on loopback ports; the
# machine's PostgreSQL is used with a fresh database per test (it will not run as root).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# command → Debian package
declare -A NEED=(
  [psql]=postgresql-client
  [pg_ctlcluster]=postgresql
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test-services: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 with trust auth for local tests.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test-services: starting PostgreSQL" >&2
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! grep -q "tminus-tests" "$hba" 2>/dev/null; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # tminus-tests' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "test-services: PostgreSQL did not start" >&2; exit 1; }
