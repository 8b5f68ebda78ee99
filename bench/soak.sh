#!/usr/bin/env bash
# Sustained load: one `subledger bench` run of MINUTES minutes against REPLICAS replicas on a fresh
# PostgreSQL database, with each minute's throughput (from the replicas' own Subscribe counters)
# and each replica's RSS printed as it goes. At the end: the last minute's throughput against the
# first (the target: within 10%), RSS growth after the first minute (the target: none), and the
# bench's own VerifyOffering of every offering it used (it exits non-zero if one fails).
#
# usage: bench/soak.sh                       (hot, then spread)
#   SCENARIOS="hot spread"  MINUTES=10  CONCURRENCY=64  REPLICAS=3
#   SUBLEDGER_BIN=PATH  PGURL=postgres://postgres@127.0.0.1:5432/postgres
# Prints one line per minute, then one summary line per scenario. Exits 1 if a target is missed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scenarios=${SCENARIOS:-hot spread}
minutes=${MINUTES:-10}
concurrency=${CONCURRENCY:-64}
replicas=${REPLICAS:-3}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
base_port=${BASE_PORT:-50171}
if [ -n "${SUBLEDGER_BIN:-}" ]; then
  bin=$SUBLEDGER_BIN
else
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  bin=$root/target/release/subledger
fi
work=$(mktemp -d)
pids=() metrics_ports=() targets=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

rss_mb() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Accepted Subscribes so far, summed over the replicas' /metrics.
subscribes_ok() {
  local total=0 port n
  for port in "${metrics_ports[@]}"; do
    n=$(curl -sf "http://127.0.0.1:$port/metrics" |
      awk '/^subledger_rpc_requests_total\{/ && /method="Subscribe"/ && /code="OK"/ { s += $NF } END { printf "%d", s }')
    total=$((total + n))
  done
  echo "$total"
}

failed=0
for scenario in $scenarios; do
  offerings=1; [ "$scenario" = spread ] && offerings=1000
  PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" \
    -c 'DROP DATABASE IF EXISTS subledger_soak WITH (FORCE)' -c 'CREATE DATABASE subledger_soak'
  url=${pg_url%/*}/subledger_soak
  metrics_ports=() targets=()
  for i in $(seq 0 $((replicas - 1))); do
    port=$((base_port + i))
    RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" \
      --metrics-listen "127.0.0.1:$((port + 100))" 2>>"$work/server.log" &
    pids+=($!)
    targets+=(--target "http://localhost:$port")
    metrics_ports+=($((port + 100)))
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  done
  sleep 1
  "$bin" bench "${targets[@]}" --scenario "$scenario" --offerings "$offerings" \
    --concurrency "$concurrency" --duration "${minutes}m" --json >"$work/report.json" 2>"$work/bench.log" &
  bench=$!
  # The bench creates its offerings first; minute 1 starts with the first accepted Subscribe.
  until [ "$(subscribes_ok)" -gt 0 ]; do
    kill -0 "$bench" 2>/dev/null || { cat "$work/bench.log" >&2; exit 1; }
    sleep 0.2
  done
  per_minute=() rss_first='' rss_last=''
  last=$(subscribes_ok) started=$SECONDS
  for minute in $(seq 1 "$minutes"); do
    sleep $((started + minute * 60 - SECONDS))
    now=$(subscribes_ok)
    rate=$(( (now - last) / 60 )) last=$now
    per_minute+=("$rate")
    rss=(); for pid in "${pids[@]}"; do rss+=("$(rss_mb "$pid")"); done
    [ "$minute" -eq 1 ] && rss_first="${rss[*]}"
    rss_last="${rss[*]}"
    echo "soak scenario=$scenario minute=$minute ok_per_s=$rate rss_mb=$(IFS=,; echo "${rss[*]}")"
  done
  bench_ok=true
  wait "$bench" || bench_ok=false
  stop_all
  $bench_ok || { cat "$work/bench.log" >&2; failed=1; }
  python3 - "$scenario" "${per_minute[0]}" "${per_minute[-1]}" "$rss_first" "$rss_last" "$work/report.json" "$bench_ok" <<'EOF' || failed=1
import json, sys
scenario, first, last, rss_first, rss_last, report, bench_ok = sys.argv[1:]
first, last = int(first), int(last)
rss_first = [float(x) for x in rss_first.split()]
rss_last = [float(x) for x in rss_last.split()]
r = json.load(open(report))
change = (last - first) / first * 100
growth = max(b - a for a, b in zip(rss_first, rss_last))
errors = sum(n for code, n in r["codes"].items() if code != "Ok")
throughput_ok = abs(change) <= 10
# Allocator noise: a few MB up or down is not growth.
rss_ok = growth <= 2.0
print(f"soak scenario={scenario} first_minute_ok_per_s={first} last_minute_ok_per_s={last} change_pct={change:+.1f}"
      f" rss_growth_after_minute_1_mb={growth:+.1f} ok_per_s={round(r['ok_per_s'])} p50_ms={r['latency_ms']['p50']}"
      f" p99_ms={r['latency_ms']['p99']} errors={errors} verified={'yes' if bench_ok == 'true' else 'NO'}"
      f" throughput_within_10pct={'yes' if throughput_ok else 'NO'} rss_flat={'yes' if rss_ok else 'NO'}")
sys.exit(0 if throughput_ok and rss_ok and bench_ok == "true" and errors == 0 else 1)
EOF
done
exit "$failed"
