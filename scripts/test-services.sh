#!/usr/bin/env bash
# Installs (Debian packages) and starts what the test suite needs when it is missing.
# The tests start their own nginx, HAProxy, sshd and Prometheus on loopback ports; the
# machine's PostgreSQL is used with a fresh database per test (it will not run as root).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# command → Debian package
declare -A NEED=(
  [psql]=postgresql-client
  [pg_dump]=postgresql-client
  [pg_ctlcluster]=postgresql
  [mariadb]=mariadb-client
  [mariadb-dump]=mariadb-client
  [/usr/sbin/mariadbd]=mariadb-server
  [/usr/sbin/sshd]=openssh-server  # tminus.testing.sshd starts its own instances
  [sudo]=sudo                      # for the SSH `become` tests
  [/usr/sbin/nginx]=nginx          # router tests start their own nginx on loopback
  [/usr/sbin/haproxy]=haproxy      # router tests start their own HAProxy on loopback
  [/usr/bin/prometheus]=prometheus # analysis tests start their own Prometheus
  [redis-server]=redis-server      # flag store tests (the machine's Redis, or their own)
  [/usr/bin/chromium]=chromium     # dashboard and status page tests (Playwright drives it)
  [wrk]=wrk                        # bench/canary.py part (c): 10,000 rps load generator
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test-services: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  # Installing openssh-server must not start the machine's own sshd (the tests run their own
  # instances on loopback ports): a temporary policy-rc.d (exit 101) forbids service starts.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null; then
    as_root systemctl disable ssh.service >/dev/null 2>&1 || true  # nor at the next boot
  fi
  if command -v systemctl >/dev/null; then
    for svc in nginx haproxy prometheus prometheus-node-exporter; do
      as_root systemctl disable "$svc.service" >/dev/null 2>&1 || true
    done
  fi
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

# MariaDB on 127.0.0.1:3306, root without a password over TCP (test databases only).
mariadb_ok() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
if ! mariadb_ok; then
  if ! mariadb -u root -e 'SELECT 1' >/dev/null 2>&1; then
    echo "test-services: starting MariaDB" >&2
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 30); do mariadb -u root -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
  fi
  if ! mariadb_ok; then
    # A fresh Debian install authenticates root by unix socket only: allow TCP without a
    # password as well, for the tests' throwaway databases.
    as_root mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket \
      OR mysql_native_password USING PASSWORD(''); CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' \
      IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  fi
fi
mariadb_ok || { echo "test-services: MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }
