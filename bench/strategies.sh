#!/usr/bin/env bash
# Lock, exception-and-rollback, or queue? The same Subscribe (cap check, history append, position,
# head) on the same PostgreSQL under six ways of keeping the cap, each measured twice per cell:
#  - a throughput run (caps nobody reaches): calls/s, p50/p99, retries per accepted call;
#  - a sell-out run (1-unit subscribes, caps far below demand): units taken beyond the caps,
#    counted from the history rows afterwards, never from the client.
# Strategies (STRATEGIES, in this order by default):
#  lock                  (a) SELECT ... FOR UPDATE on the head: bench/strategies/lock.sql (pgbench)
#  recheck-rc            (b) append, re-check, roll back if over: recheck.sql at READ COMMITTED
#  recheck-serializable  (c) the same at SERIALIZABLE, retried by pgbench (--max-tries)
#  conditional           (d) UPDATE head ... WHERE subscribed + n <= max, then append: conditional.sql
#  redis-lock            (e) a Redis lock (SET NX PX, compare-and-delete): subledger-bench-redis-lock
#                        (bench/redis-lock/, a binary of its own: the product links no Redis client)
#  redis-lock-expiring   (e) the same with a lease shorter than an occasional slow transaction
#  queue                 (f) subledger serve (group commit), 1 replica, loaded by subledger bench
# (a)-(e) use the pg-anchor tables (../shared/bench/pg-anchor/schema.sql) as changed by
# bench/strategies/schema.sql; (f) uses subledger's own schema.
#
# usage: bench/strategies.sh        (defaults below; override with the variables)
#   STRATEGIES="..."  SCENARIOS="hot spread"  CLIENTS="1 16 64"  SECONDS_EACH=10  SELLOUT_SECONDS=10
#   SELLOUT_HOT_UNITS=500 (the hot offering's cap)  SELLOUT_SPREAD_UNITS=2 (each of 1,000 offerings' cap)
#   LOCK_TTL_MS=10000  SHORT_LOCK_TTL_MS=100  SLOW_FRACTION=0.01  SLOW_MS=250  (the expiring lease)
#   PROFILE=release (the subledger build)  PGURL=postgres://postgres@127.0.0.1:5432/postgres
#   REDIS_URL=redis://127.0.0.1:6379/  SUBLEDGER_PG_ANCHOR=../shared/bench/pg-anchor
#   SMOKE=1: CI's check that every strategy still produces figures: 16 clients, hot and spread,
#   1 s per run, debug build (figures from it are not for reading).
# Prints one line per cell, then a Markdown table. Fails if any strategy produced no figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/bench/strategies
if [ "${SMOKE:-0}" = 1 ]; then
  : "${CLIENTS:=16}" "${SECONDS_EACH:=1}" "${SELLOUT_SECONDS:=1}" "${PROFILE:=debug}"
fi
strategies=${STRATEGIES:-lock recheck-rc recheck-serializable conditional redis-lock redis-lock-expiring queue}
scenarios=${SCENARIOS:-hot spread}
clients_list=${CLIENTS:-1 16 64}
secs=${SECONDS_EACH:-10}
sellout_secs=${SELLOUT_SECONDS:-$secs}
sellout_hot_units=${SELLOUT_HOT_UNITS:-500}
sellout_spread_units=${SELLOUT_SPREAD_UNITS:-2}
lock_ttl_ms=${LOCK_TTL_MS:-10000}
short_lock_ttl_ms=${SHORT_LOCK_TTL_MS:-100}
slow_fraction=${SLOW_FRACTION:-0.01}
slow_ms=${SLOW_MS:-250}
profile=${PROFILE:-release}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379/}
anchor=${SUBLEDGER_PG_ANCHOR:-$root/../shared/bench/pg-anchor}
port=${BASE_PORT:-50081}
# pgbench retries a serialization failure this many times at most (then counts it failed).
max_tries=1000
# Units that cannot run out in a throughput run (the pg-anchor's own cap).
cap_unreachable=9000000000000000000
spread_offerings=1000

for tool in pgbench psql python3 redis-cli; do
  command -v "$tool" >/dev/null || { echo "strategies.sh: $tool is not installed" >&2; exit 1; }
done
redis-cli -u "$redis_url" ping >/dev/null || { echo "strategies.sh: Redis does not answer at $redis_url" >&2; exit 1; }
[ -f "$anchor/schema.sql" ] || { echo "strategies.sh: no pg-anchor at $anchor" >&2; exit 1; }

profile_flag=--release; [ "$profile" = debug ] && profile_flag=
cargo build $profile_flag --quiet --manifest-path "$root/Cargo.toml" -p subledger -p subledger-bench-redis-lock
bin=$root/target/$profile/subledger
redis_lock_bin=$root/target/$profile/subledger-bench-redis-lock
work=$(mktemp -d)
db_url=${pg_url%/*}/strategies_bench
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=
}
trap 'stop_server; rm -rf "$work"' EXIT

psql_quiet() { PGOPTIONS='-c client_min_messages=warning' psql -q -v ON_ERROR_STOP=1 "$@"; }
fresh_database() {
  psql_quiet "$pg_url" -c 'DROP DATABASE IF EXISTS strategies_bench WITH (FORCE)' -c 'CREATE DATABASE strategies_bench'
}
# The pg-anchor tables, changed by schema.sql, every offering capped at $1.
anchor_database() {
  fresh_database
  psql_quiet "$db_url" -f "$anchor/schema.sql" >/dev/null
  psql_quiet "$db_url" -v cap="$1" -f "$here/schema.sql" >/dev/null
}

# What the history says was taken from offerings 1..$1 of the anchor tables, against their caps:
# "oversold_units taken_units cap_units sold_out_offerings head_units".
anchor_taken() {
  psql -Atq -F ' ' "$db_url" -v offerings="$1" <<'SQL'
SELECT coalesce(sum(greatest(taken - max_units, 0)), 0), coalesce(sum(taken), 0), sum(max_units),
       count(*) FILTER (WHERE taken >= max_units), sum(subscribed_units)
FROM (SELECT h.max_units, h.subscribed_units, coalesce(sum(e.units_delta), 0) AS taken
      FROM anchor_head h LEFT JOIN anchor_history e USING (offering_id)
      WHERE h.offering_id <= :offerings GROUP BY h.offering_id) AS t;
SQL
}
# The same from subledger's own tables (subscribe and cancel entries), every offering in the database.
queue_taken() {
  psql -Atq -F ' ' "$db_url" <<'SQL'
SELECT coalesce(sum(greatest(taken - max_units, 0)), 0), coalesce(sum(taken), 0), sum(max_units),
       count(*) FILTER (WHERE taken >= max_units), sum(subscribed_units)
FROM (SELECT h.max_units, h.subscribed_units,
             coalesce(sum(e.units_delta) FILTER (WHERE e.kind IN (2, 3)), 0) AS taken
      FROM offering_head h LEFT JOIN history_entry e USING (offering_id) GROUP BY h.offering_id) AS t;
SQL
}

# pgbench of script $1 at isolation $2 on $3 offerings, $4 clients, $5 s, units 1..$6.
# Sets: accepted accepted_per_s p50 p99 retries failed (as every runner below does).
run_pgbench() {
  local script=$1 isolation=$2 offerings=$3 clients=$4 seconds=$5 units_max=$6 jobs=2 out
  [ "$clients" -lt 2 ] && jobs=1
  rm -f "$work"/log.*
  out=$(cd "$work" && PGOPTIONS="-c client_min_messages=warning -c default_transaction_isolation=$isolation" \
    pgbench -n -M prepared -f "$here/$script.sql" -D offerings="$offerings" -D units_max="$units_max" \
      -c "$clients" -j "$jobs" -T "$seconds" --max-tries=$max_tries --log --log-prefix="$work/log" "$db_url" 2>&1) \
    || { echo "$out" >&2; return 1; }
  accepted=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  accepted_per_s=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
  retries=$(sed -n 's/^total number of retries: \([0-9]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  # The per-transaction log: client, transaction, latency in us (or "failed"), ...; retried
  # transactions are logged once, their latency counting every try.
  read -r p50 p99 < <(python3 - "$work" <<'PY'
import glob, sys
lat = sorted(int(f[2]) for p in glob.glob(sys.argv[1] + "/log.*")
             for f in (line.split() for line in open(p)) if f[2].isdigit())
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] / 1000 if lat else float("nan")
print(f"{q(0.5):.2f} {q(0.99):.2f}")
PY
)
  accepted=${accepted:-0} accepted_per_s=${accepted_per_s:-0} retries=${retries:-0} failed=${failed:-0}
}

# subledger-bench-redis-lock with lease $1 ms, slow fraction $2, on $3 offerings, $4 clients, $5 s, units 1..$6.
run_redis_lock() {
  local line
  line=$("$redis_lock_bin" --database-url "$db_url" --redis-url "$redis_url" --lock-ttl-ms "$1" \
    --slow-fraction "$2" --slow-ms "$slow_ms" --offerings "$3" --concurrency "$4" --duration "$5" --units-max "$6")
  echo "  $line" >&2
  field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$line"; }
  accepted=$(field accepted) p50=$(field p50_ms) p99=$(field p99_ms)
  accepted_per_s=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):.1f}")' "$accepted" "$(field seconds)")
  retries=$(field lock_retries) failed=$(( $(field errors) + $(field lock_timeouts) ))
  leases_lost=$(field leases_lost)
}

start_server() {
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$db_url" 2>>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "strategies.sh: subledger serve did not listen on $port" >&2; cat "$work/server.log" >&2; return 1
}
# subledger bench with the arguments given.
run_queue_bench() {
  "$bin" bench --target "http://127.0.0.1:$port" --json "$@" >"$work/report.json"
  read -r accepted accepted_per_s p50 p99 failed < <(python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
# Refusals over the cap are answers, not failures.
failed = sum(n for code, n in r["codes"].items() if code not in ("Ok", "FailedPrecondition"))
print(r["codes"].get("Ok", 0), f'{r["ok_per_s"]:.1f}', r["latency_ms"]["p50"], r["latency_ms"]["p99"], failed)
PY
)
  retries=0
}

# One cell: strategy $1, scenario $2, clients $3. Sets the throughput figures and the sell-out's.
measure() {
  local strategy=$1 scenario=$2 clients=$3 offerings=1 sellout_cap=$sellout_hot_units
  [ "$scenario" = spread ] && offerings=$spread_offerings sellout_cap=$sellout_spread_units
  leases_lost=
  case $strategy in
    lock | recheck-rc | recheck-serializable | conditional)
      # PGOPTIONS splits on spaces unless they are escaped.
      local script=${strategy%%-*} isolation='read\ committed'
      [ "$strategy" = recheck-serializable ] && isolation=serializable
      anchor_database "$sellout_cap"
      run_pgbench "$script" "$isolation" "$offerings" "$clients" "$sellout_secs" 1
      read -r oversold taken cap sold_out head < <(anchor_taken "$offerings")
      anchor_database "$cap_unreachable"
      run_pgbench "$script" "$isolation" "$offerings" "$clients" "$secs" 10 ;;
    redis-lock | redis-lock-expiring)
      local ttl=$lock_ttl_ms slow=0
      [ "$strategy" = redis-lock-expiring ] && ttl=$short_lock_ttl_ms slow=$slow_fraction
      anchor_database "$sellout_cap"
      run_redis_lock "$ttl" "$slow" "$offerings" "$clients" "$sellout_secs" 1
      read -r oversold taken cap sold_out head < <(anchor_taken "$offerings")
      anchor_database "$cap_unreachable"
      run_redis_lock "$ttl" "$slow" "$offerings" "$clients" "$secs" 10 ;;
    queue)
      fresh_database
      # serve listens before its migrations are done: migrate first, so the tables exist when it answers.
      "$bin" migrate --database-url "$db_url" 2>>"$work/server.log"
      start_server
      if [ "$scenario" = hot ]; then
        run_queue_bench --scenario sellout --sellout-units "$sellout_cap" --concurrency "$clients" --duration "$sellout_secs"
      else
        # subledger bench's spread scenario subscribes 1-10 units, not 1: its only spread mode.
        psql_quiet "$db_url" -v count="$offerings" -v cap="$sellout_cap" -f "$here/subledger_offerings.sql"
        # The offerings were written without their hash chain: migrate hashes it (the running
        # server reads each head afresh, so it appends to them from then on).
        "$bin" migrate --database-url "$db_url" 2>>"$work/server.log"
        local ids=(); for i in $(seq 1 "$offerings"); do ids+=(--offering "strategy-$i"); done
        run_queue_bench --scenario spread "${ids[@]}" --concurrency "$clients" --duration "$sellout_secs"
      fi
      read -r oversold taken cap sold_out head < <(queue_taken)
      stop_server
      fresh_database
      "$bin" migrate --database-url "$db_url" 2>>"$work/server.log"
      start_server
      run_queue_bench --scenario "$scenario" --offerings "$offerings" --concurrency "$clients" --duration "$secs"
      stop_server ;;
    *) echo "strategies.sh: unknown strategy $strategy" >&2; return 1 ;;
  esac
}

rows=() broken=()
for scenario in $scenarios; do
  for clients in $clients_list; do
    for strategy in $strategies; do
      measure "$strategy" "$scenario" "$clients"
      retries_per_call=$(python3 -c 'import sys; a = int(sys.argv[2]); print(f"{int(sys.argv[1]) / a:.3f}" if a else "n/a")' "$retries" "$accepted")
      verdict=exact
      [ "$oversold" -gt 0 ] && verdict="BROKEN: oversold $oversold"
      [ "$sold_out" -eq 0 ] && verdict="$verdict (nothing sold out)"
      offering_count=1; [ "$scenario" = spread ] && offering_count=$spread_offerings
      echo "strategy=$strategy scenario=$scenario clients=$clients seconds=$secs accepted=$accepted" \
           "accepted_per_s=$accepted_per_s p50_ms=$p50 p99_ms=$p99 retries=$retries retries_per_accepted=$retries_per_call" \
           "failed=$failed ${leases_lost:+leases_lost=$leases_lost }sellout_seconds=$sellout_secs sellout_cap=$cap" \
           "taken=$taken head=$head sold_out_offerings=$sold_out oversold=$oversold"
      if ! python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$accepted_per_s" || [ "$taken" -eq 0 ]; then
        broken+=("$strategy $scenario $clients")
      fi
      rows+=("| $strategy | $scenario | $clients | $(printf %.0f "$accepted_per_s") | $p50 | $p99 | $retries_per_call | $failed | ${leases_lost:--} | $taken / $cap ($sold_out of $offering_count) | $oversold | $verdict |")
    done
  done
done

echo
echo "| strategy | scenario | clients | accepted calls/s | p50 ms | p99 ms | retries per accepted call | failed calls | leases lost | sell-out: units taken / cap (offerings sold out) | oversold units | verdict |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ "${#broken[@]}" -gt 0 ]; then
  echo "strategies.sh: no figures (no accepted calls, or nothing taken in the sell-out) from: ${broken[*]}" >&2
  exit 1
fi
