#!/usr/bin/env bash
# Proof latency at scale (issue 20's "< 100 ms at 1,000,000 entries"): one `subledger serve` on
# a fresh PostgreSQL database holding an offering of ENTRIES history entries
# (bench/grow_history.sql; `subledger migrate` then hashes it and builds its Merkle tree), then
# CALLS GetInclusionProof calls (sequences spread over the history, against the whole tree) and
# CALLS GetConsistencyProof calls (from sizes spread over the history to the whole tree), one at
# a time through grpcurl. Prints, per RPC, the server's own latency (the `latency_us` of each
# call's end line in its JSON log: no grpcurl start-up in it) as p50, p99 and max in ms, and how
# long migrate took to hash the history and build its tree.
#
# usage: bench/proof_latency.sh          (defaults below; override with the variables)
#   ENTRIES=1000000  CALLS=200
#   BUILD=release    or debug, for a quick check that the script works (SMOKE=1 sets ENTRIES=20000,
#                    CALLS=20, BUILD=debug)
#   PGURL=postgres://postgres@127.0.0.1:5432/postgres   (an admin URL: the database is recreated there)
# needs: psql, grpcurl, jq
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${SMOKE:-0}" = 1 ]; then
  entries=${ENTRIES:-20000} calls=${CALLS:-20} build=${BUILD:-debug}
else
  entries=${ENTRIES:-1000000} calls=${CALLS:-200} build=${BUILD:-release}
fi
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-50094}
log=$(mktemp)

if [ "$build" = release ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p subledger
else
  cargo build --quiet --manifest-path "$root/Cargo.toml" -p subledger
fi
bin=$root/target/$build/subledger
pid=''
trap '[ -z "$pid" ] || { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; } || true; rm -f "$log"' EXIT

PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" \
  -c 'DROP DATABASE IF EXISTS subledger_proof_bench WITH (FORCE)' -c 'CREATE DATABASE subledger_proof_bench'
url=${pg_url%/*}/subledger_proof_bench
"$bin" migrate --database-url "$url" >/dev/null 2>&1
psql -q "$url" -v offering=grown -v entries="$entries" -f "$root/bench/grow_history.sql" >/dev/null
started=$(date +%s.%N)
"$bin" migrate --database-url "$url" >/dev/null 2>&1
echo "migrate: hashed $entries entries and built their tree in $(echo "$(date +%s.%N) - $started" | bc) s"

RUST_LOG=subledger=debug "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" \
  --log-format json 2>"$log" &
pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

S=subledger.v1.SubscriptionLedger
call() { grpcurl -plaintext -d "$2" "127.0.0.1:$port" "$S/$1" >/dev/null; }
for k in $(seq "$calls"); do
  # Spread over the history: a different subtree, and a different path, each call.
  at=$(( (k * 7919 * 127) % entries + 1 ))
  call GetInclusionProof "{\"offering_id\":\"grown\",\"sequence\":$at,\"tree_size\":$entries}"
  call GetConsistencyProof "{\"offering_id\":\"grown\",\"from_size\":$at,\"to_size\":$entries}"
done
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=''

echo "offering 'grown' with $entries entries; $calls calls of each, one at a time (build: $build)"
for method in GetInclusionProof GetConsistencyProof; do
  jq -rs --arg m "$method" '
    [ .[] | select(.span.method == $m and .fields.latency_us != null) | .fields.latency_us ]
    | sort | length as $n
    | if $n == 0 then "\($m)\tno calls logged" else
      "\($m)\tcalls \($n)\tp50 \(.[($n * 0.50 | floor)] / 1000) ms\tp99 \(.[(($n - 1) * 0.99 | floor)] / 1000) ms\tmax \(.[-1] / 1000) ms"
      end' "$log"
done
