#!/usr/bin/env bash
# A throw-away PostgreSQL 15 cluster of the tests' own, on a loopback port, for the tests that
# cut its network (tests/failover.rs): the machine's own PostgreSQL is never touched.
#
#   tests/ha/cluster.sh up DIR PORT     initdb (trust auth) and start; prints the URL
#   tests/ha/cluster.sh down DIR PORT   stop (immediate) and remove DIR; safe to repeat
set -euo pipefail

bin=/usr/lib/postgresql/15/bin
command=${1:?usage: cluster.sh up|down DIR PORT}
dir=${2:?DIR}
port=${3:?PORT}

# PostgreSQL refuses to run as root: everything runs as the postgres user.
as_postgres() { runuser -u postgres -- "$@"; }

up() {
  mkdir -p "$dir"
  chown postgres: "$dir"
  as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" start >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

down() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "$command" in
  up) up ;;
  down) down ;;
  *) echo "cluster.sh: unknown command $command" >&2; exit 2 ;;
esac
