#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the durable-run tests.
# Prints the DSN on stdout; installs the server from Debian's packages if it is missing.
set -euo pipefail
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
port=${FANFOLD_PG_PORT:-55432}
data=$(mktemp -d /tmp/fanfold-pg.XXXXXX)
chown postgres "$data"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$pgbin/initdb" -D "$data" -A trust -U postgres >/dev/null
as_pg "$pgbin/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
echo "$data" > /tmp/fanfold-pg.datadir
echo "postgresql://postgres@127.0.0.1:$port/postgres"
