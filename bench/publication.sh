#!/usr/bin/env bash
# What publication to NATS JetStream costs (issue 19): `subledger bench` on 3 replicas against
# PostgreSQL, hot and spread at 64 in flight, with publication off and on in alternating pairs
# (off, on, off, on, ...) in one run, so that drift on the machine hits both alike; and, with it
# on, the publication lag a consumer sees (commit to delivery: p50, p99, max).
#
# usage: bench/publication.sh        (not CI: figures need a quiet machine)
#   SCENARIOS="hot spread"  CONCURRENCY=64  REPLICAS=3  PAIRS=3  SECONDS_EACH=20
#   PGURL=postgres://postgres@127.0.0.1:5432/postgres  (an admin URL: subledger_bench is recreated)
#   SUBLEDGER_BIN=PATH   run this subledger binary instead of building the checkout
#   SMOKE=1              one pair of 3 s runs, to prove the script works
#   BUILD_PROFILE=dev    build and run the debug binaries (a smoke run without an LTO build)
# Each run gets a fresh database and, with publication on, a fresh nats-server (-js, its own
# port and store folder), so no backlog carries over. Prints one line per run, then a Markdown
# table with the mean cost over the pairs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scenarios=${SCENARIOS:-hot spread}
concurrency=${CONCURRENCY:-64}
replicas=${REPLICAS:-3}
pairs=${PAIRS:-3}
secs=${SECONDS_EACH:-20}
if [ -n "${SMOKE:-}" ]; then pairs=1 secs=3; fi
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
base_port=${BASE_PORT:-50171}
nats_port=${NATS_PORT:-50271}

command -v nats-server >/dev/null || { echo "publication.sh: nats-server is needed (apt-get install nats-server)" >&2; exit 1; }
profile=${BUILD_PROFILE:-release}
out=$root/target/release; [ "$profile" = dev ] && out=$root/target/debug
cargo build --profile "$profile" --quiet --manifest-path "$root/Cargo.toml" --example publication_lag
if [ -n "${SUBLEDGER_BIN:-}" ]; then
  bin=$SUBLEDGER_BIN
else
  cargo build --profile "$profile" --quiet --manifest-path "$root/Cargo.toml"
  bin=$out/subledger
fi
lag_bin=$out/examples/publication_lag
work=$(mktemp -d)
pids=() nats_pid=''
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  if [ -n "$nats_pid" ]; then kill -TERM "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; nats_pid=''; fi
}
trap 'stop_all; rm -rf "$work"' EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

# One run: prints "ok_per_s p99_ms lag_p50 lag_p99 lag_max messages".
run_once() {
  local scenario=$1 publish=$2 offerings=1 nats_flags=() targets=() i port lag_pid=''
  [ "$scenario" = spread ] && offerings=1000
  PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" -c 'DROP DATABASE IF EXISTS subledger_bench WITH (FORCE)' -c 'CREATE DATABASE subledger_bench'
  local url=${pg_url%/*}/subledger_bench
  if [ "$publish" = on ]; then
    rm -rf "$work/nats" && mkdir -p "$work/nats"
    nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >/dev/null 2>&1 &
    nats_pid=$!
    wait_port "$nats_port"
    nats_flags=(--nats-url "nats://127.0.0.1:$nats_port")
  fi
  for i in $(seq 0 $((replicas - 1))); do
    port=$((base_port + i))
    RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" "${nats_flags[@]}" 2>>"$work/server.log" &
    pids+=($!)
    targets+=(--target "http://localhost:$port")
    wait_port "$port"
  done
  if [ "$publish" = on ]; then
    "$lag_bin" "nats://127.0.0.1:$nats_port" SUBLEDGER "$((secs + 3))" >"$work/lag.json" &
    lag_pid=$!
  fi
  sleep 1
  "$bin" bench "${targets[@]}" --scenario "$scenario" --offerings "$offerings" \
    --concurrency "$concurrency" --duration "$secs" --json >"$work/report.json"
  [ -z "$lag_pid" ] || wait "$lag_pid"
  stop_all
  python3 - "$work/report.json" "$publish" "$work/lag.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lag = json.load(open(sys.argv[3])) if sys.argv[2] == "on" else {"p50_ms": "-", "p99_ms": "-", "max_ms": "-", "messages": "-"}
print(round(r["ok_per_s"]), r["latency_ms"]["p99"], lag["p50_ms"], lag["p99_ms"], lag["max_ms"], lag["messages"])
PY
}

rows=()
for scenario in $scenarios; do
  offs=() ons=()
  for pair in $(seq 1 "$pairs"); do
    for publish in off on; do
      read -r ok p99 lag50 lag99 lagmax messages < <(run_once "$scenario" "$publish")
      echo "scenario=$scenario pair=$pair publication=$publish replicas=$replicas concurrency=$concurrency seconds=$secs ok_per_s=$ok p99_ms=$p99 lag_p50_ms=$lag50 lag_p99_ms=$lag99 lag_max_ms=$lagmax consumed=$messages"
      rows+=("| $scenario | $pair | $publish | $ok | $p99 | $lag50 | $lag99 | $lagmax |")
      if [ "$publish" = off ]; then offs+=("$ok"); else ons+=("$ok"); fi
    done
  done
  cost=$(python3 -c '
import sys
off = [float(x) for x in sys.argv[1].split()]; on = [float(x) for x in sys.argv[2].split()]
pairs = [(1 - b / a) * 100 for a, b in zip(off, on)]
print(f"{sum(pairs) / len(pairs):.1f}")' "${offs[*]}" "${ons[*]}")
  echo "scenario=$scenario cost_percent_mean_of_pairs=$cost"
  rows+=("| $scenario | mean of pairs | cost | **$cost %** | | | | |")
done
echo
echo "| scenario | pair | publication | ok/s | p99 ms | lag p50 ms | lag p99 ms | lag max ms |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
