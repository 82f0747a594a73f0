#!/usr/bin/env bash
# Start a throwaway PostgreSQL from Debian's packages for the tests; print its SQLAlchemy URL.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$ver main"; then
  pg_createcluster "$ver" main >&2
fi
pg_ctlcluster "$ver" main start >&2 || true
for _ in $(seq 30); do pg_isready -q && break; sleep 1; done
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
runuser -u postgres -- psql -q -p "$port" -c "do \$\$ begin
  if not exists (select from pg_roles where rolname = 'retl') then
    create role retl login superuser password 'retl'; end if; end \$\$;" >&2
runuser -u postgres -- psql -q -p "$port" -tc "select 1 from pg_database where datname = 'retl_test'" \
  | grep -q 1 || runuser -u postgres -- createdb -p "$port" -O retl retl_test >&2
echo "postgresql+psycopg://retl:retl@127.0.0.1:$port/retl_test"
