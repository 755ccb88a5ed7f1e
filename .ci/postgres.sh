#!/usr/bin/env bash
# Make sure a PostgreSQL answers at 127.0.0.1:5432 (user postgres, trust auth, database `test`).
# On this kind of machine it is installed and started before the session; on a new machine it is
# installed from Debian's packages and configured here.
set -euo pipefail

ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ci: installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
  # Trust on loopback only, as the tests expect; put first so it wins over md5/scram lines.
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
  ready && pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
fi

if ! ready; then
  echo "ci: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c "create database test" >/dev/null
fi
ready && echo "ci: PostgreSQL ready"
