#!/usr/bin/env bash
# Compares subledger with the pgbench reference workload, measured back to back in one run on the
# same PostgreSQL: for each scenario and concurrency, pgbench's multi.sql (the same SQL work as one
# Subscribe, one transaction per request, no gRPC) runs first, then `subledger bench` against each
# backend and replica count. Ratios, not absolute figures, are what compares across machines.
#
# usage: bench/compare.sh            (defaults below; override with the variables)
#   SCENARIOS="hot spread"  CONCURRENCIES="64"  REPLICAS="3"  BACKENDS="postgres"  SECONDS_EACH=20
#   VARIANTS="plain"   how the replicas run, each measured in turn: plain; mtls (mutual TLS, a
#                      bearer token and an auth file: what securing it costs); metrics
#                      (--metrics-listen, scraped once a second: what metrics cost)
#   METRICS_SAVE=FILE   keep the last /metrics scrape of the first replica of a metrics run
#   SUBLEDGER_BIN=PATH  run this subledger binary instead of building the checkout
#   PGURL=postgres://postgres@127.0.0.1:5432/postgres   (an admin URL: databases are (re)created there)
#   SUBLEDGER_PG_ANCHOR=../shared/bench/pg-anchor       (the reference scripts)
# Prints one line per configuration, then a Markdown table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scenarios=${SCENARIOS:-hot spread}
concurrencies=${CONCURRENCIES:-64}
replica_counts=${REPLICAS:-3}
backends=${BACKENDS:-postgres}
secs=${SECONDS_EACH:-20}
variants=${VARIANTS:-plain}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
anchor=${SUBLEDGER_PG_ANCHOR:-$root/../shared/bench/pg-anchor}
base_port=${BASE_PORT:-50071}
# pgbench needs one connection per client: past max_connections the reference cannot run.
pg_max_clients=$(( $(psql -Atq "$pg_url" -c 'show max_connections') - 10 ))

# SUBLEDGER_BIN measures another build (say, the commit before a change) against the same reference.
if [ -n "${SUBLEDGER_BIN:-}" ]; then
  bin=$SUBLEDGER_BIN
else
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  bin=$root/target/release/subledger
fi
work=$(mktemp -d)
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_servers; rm -rf "$work"' EXIT

rss_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
max_of() { printf '%s\n' "$@" | sort -g | tail -1; }

# For SECURITY=mtls: a CA, a server certificate, a client certificate, and an auth file whose
# principal the client's token names.
make_credentials() {
  local d=$work/tls
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -copy_extensions copy -out "$d/server.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
    -addext subjectAltName=DNS:bench -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -days 2 \
    -copy_extensions copy -out "$d/client.pem" 2>/dev/null
  "$bin" token new --name bench --role operator >"$d/token.txt"
  grep -v '^#' "$d/token.txt" >"$d/auth.toml"
  bench_token=$(sed -n 's/^# token: //p' "$d/token.txt")
}

# Starts $1 replicas of subledger on database URL $2 as variant $3 (plain, mtls or metrics);
# waits until each listens.
start_servers() {
  local count=$1 url=$2 variant=${3:-plain} i port scheme=http serve_tls=() serve_metrics=()
  targets=() client_tls=() metrics_ports=()
  if [ "$variant" = mtls ]; then
    local d=$work/tls
    scheme=https
    serve_tls=(--tls-cert "$d/server.pem" --tls-key "$d/server.key" --tls-client-ca "$d/ca.pem" --auth-file "$d/auth.toml")
    client_tls=(--tls-ca "$d/ca.pem" --tls-cert "$d/client.pem" --tls-key "$d/client.key" --token "$bench_token")
  fi
  for i in $(seq 0 $((count - 1))); do
    port=$((base_port + i))
    if [ "$variant" = metrics ]; then
      serve_metrics=(--metrics-listen "127.0.0.1:$((port + 100))")
      metrics_ports+=($((port + 100)))
    fi
    RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" "${serve_tls[@]}" "${serve_metrics[@]}" 2>>"$work/server.log" &
    pids+=($!)
    targets+=(--target "$scheme://localhost:$port")
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  done
}

[[ " $variants " == *" mtls "* ]] && make_credentials
rows=()
for scenario in $scenarios; do
  offerings=1; [ "$scenario" = spread ] && offerings=1000
  for concurrency in $concurrencies; do
    if [ "$concurrency" -le "$pg_max_clients" ]; then
      anchor_line=$(PGURL=$pg_url bash "$anchor/run.sh" multi "$offerings" "$concurrency" "$secs")
      anchor_tps=$(sed -E 's/.* tps=([0-9.]+).*/\1/' <<<"$anchor_line")
    else
      anchor_line="pg-anchor not run: $concurrency clients exceed max_connections"
      anchor_tps=""
    fi
    echo "$anchor_line"
    for backend in $backends; do
      for replicas in $replica_counts; do
       for variant in $variants; do
        if [ "$backend" = postgres ]; then
          PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" -c 'DROP DATABASE IF EXISTS subledger_bench WITH (FORCE)' -c 'CREATE DATABASE subledger_bench'
          url=${pg_url%/*}/subledger_bench
        else
          rm -rf "$work/sqlite" && mkdir -p "$work/sqlite"
          url=sqlite://$work/sqlite/subledger.db
        fi
        start_servers "$replicas" "$url" "$variant"
        # Prometheus scrapes every replica once a second meanwhile, as a real one would.
        scraper=''
        if [ "${#metrics_ports[@]}" -gt 0 ]; then
          ( while :; do for p in "${metrics_ports[@]}"; do curl -sf "http://127.0.0.1:$p/metrics" >"$work/metrics-$p.txt" || true; done; sleep 1; done ) &
          scraper=$!
        fi
        sleep 1
        idle=(); for pid in "${pids[@]}"; do idle+=("$(rss_mb "$pid" VmRSS)"); done
        "$bin" bench "${targets[@]}" "${client_tls[@]}" --scenario "$scenario" --offerings "$offerings" \
          --concurrency "$concurrency" --duration "$secs" --json >"$work/report.json"
        peak=(); for pid in "${pids[@]}"; do peak+=("$(rss_mb "$pid" VmHWM)"); done
        if [ -n "$scraper" ]; then
          kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true
          [ -z "${METRICS_SAVE:-}" ] || cp "$work/metrics-${metrics_ports[0]}.txt" "$METRICS_SAVE"
        fi
        stop_servers
        read -r calls p50 p99 ok errors < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
errors = sum(n for code, n in r["codes"].items() if code != "Ok")
print(round(r["calls_per_s"]), r["latency_ms"]["p50"], r["latency_ms"]["p99"], round(r["ok_per_s"]), errors)' "$work/report.json")
        ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}" if sys.argv[2] else "n/a")' "$ok" "$anchor_tps")
        echo "subledger scenario=$scenario backend=$backend replicas=$replicas variant=$variant concurrency=$concurrency seconds=$secs" \
             "ok_per_s=$ok errors=$errors p50_ms=$p50 p99_ms=$p99 pgbench_tps=${anchor_tps:-n/a} ratio=$ratio" \
             "idle_rss_mb_max=$(max_of "${idle[@]}") peak_rss_mb_max=$(max_of "${peak[@]}")"
        rows+=("| $scenario | $backend | $replicas | $variant | $concurrency | $ok | $p50 | $p99 | ${anchor_tps:-n/a} | **$ratio** | $(max_of "${idle[@]}") | $(max_of "${peak[@]}") |")
       done
      done
    done
  done
done

echo
echo "| scenario | backend | replicas | variant | in flight | subledger ok/s | p50 ms | p99 ms | pgbench multi.sql tps | ratio | idle RSS MB | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
