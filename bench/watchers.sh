#!/usr/bin/env bash
# WatchHistory fan-out under load: for each watcher count, one `subledger serve` on a fresh
# PostgreSQL database, then `subledger bench --scenario watch`: WATCHERS streams spread over
# OFFERINGS offerings, CONCURRENCY Subscribes in flight for SECONDS_EACH seconds, then every
# stream checked for every entry in order. The server's /metrics (--metrics-url) gives the
# history reads the streams cost per commit; RSS is the server's, idle and peak. The server's
# CPU time (utime + stime from /proc/PID/stat, far less sensitive to other load on the machine
# than throughput) is reported per entry delivered to the streams: raw, and, when a run without
# watchers comes after, net of what the same number of Subscribes cost in that run, and as the
# difference of the two runs' CPU (how BENCHMARKS.md's first "about 7 us" was reckoned; it
# undercounts, since the run without watchers makes several times the Subscribes).
#
# usage: bench/watchers.sh     (defaults below; override with the variables)
#   WATCHERS="10000 0"  OFFERINGS=100  CONCURRENCY=64  SECONDS_EACH=20
#   SUBLEDGER_BIN=PATH  run this subledger binary instead of building the checkout
#   PGURL=postgres://postgres@127.0.0.1:5432/postgres   (an admin URL: the database is recreated there)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
watcher_counts=${WATCHERS:-10000 0}
offerings=${OFFERINGS:-100}
concurrency=${CONCURRENCY:-64}
secs=${SECONDS_EACH:-20}
pg_url=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-50091}
metrics_port=$((port + 100))

if [ -n "${SUBLEDGER_BIN:-}" ]; then
  bin=$SUBLEDGER_BIN
else
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  bin=$root/target/release/subledger
fi
pid=''
trap '[ -z "$pid" ] || { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; } || true' EXIT
rss_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# Each run's watchers, server CPU seconds, Subscribe calls and entries delivered, for the summary.
runs=()

for watchers in $watcher_counts; do
  PGOPTIONS='-c client_min_messages=warning' psql -q "$pg_url" \
    -c 'DROP DATABASE IF EXISTS subledger_watch_bench WITH (FORCE)' -c 'CREATE DATABASE subledger_watch_bench'
  url=${pg_url%/*}/subledger_watch_bench
  # A stream needs a place under --max-watch-streams, and all come from one peer.
  max_watch_streams=$(( watchers > 1000 ? watchers : 1000 ))
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" \
    --max-watch-streams "$max_watch_streams" --max-watch-streams-per-principal "$max_watch_streams" --metrics-listen "127.0.0.1:$metrics_port" &
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  idle=$(rss_mb "$pid" VmRSS)
  command=("$bin" bench --target "http://127.0.0.1:$port" --scenario watch --watchers "$watchers"
    --offerings "$offerings" --concurrency "$concurrency" --duration "${secs}s"
    --metrics-url "http://127.0.0.1:$metrics_port/metrics")
  echo "+ ${command[*]}"
  # The load generator's CPU too: on one machine, it competes with the server for the cores.
  output=$(/usr/bin/time -f "bench client: %e s elapsed, %U s user + %S s system CPU" "${command[@]}" 2>&1) \
    || { echo "$output"; exit 1; }
  echo "$output"
  cpu=$(cpu_s "$pid")
  echo "server: RSS MB idle $idle, peak $(rss_mb "$pid" VmHWM); $cpu s CPU in all"
  calls=$(sed -n 's/^calls=\([0-9]*\) in .*/\1/p' <<<"$output")
  delivered=$(sed -n 's/^watchers=.*: \([0-9]*\) of [0-9]* entries delivered.*/\1/p' <<<"$output")
  delivered=${delivered:-0}
  if [ "$delivered" -gt 0 ]; then
    awk -v c="$cpu" -v d="$delivered" 'BEGIN { printf "server CPU per entry delivered: %.2f us\n", c * 1e6 / d }'
  fi
  runs+=("$watchers $cpu $calls $delivered")
  kill -TERM "$pid"; wait "$pid" || true
  pid=''
  echo
done

# Net of the Subscribes: each run with watchers against the last run without any.
baseline=''
for run in "${runs[@]}"; do
  read -r w c n _ <<<"$run"
  [ "$w" = 0 ] && [ "$n" -gt 0 ] && baseline="$c $n"
done
if [ -n "$baseline" ]; then
  for run in "${runs[@]}"; do
    read -r w c n d <<<"$run"
    [ "$d" -gt 0 ] || continue
    awk -v w="$w" -v c="$c" -v n="$n" -v d="$d" -v base="$baseline" 'BEGIN {
      split(base, b, " "); per_call = b[1] / b[2]
      printf "watchers=%s: server CPU per entry delivered, net of its %d Subscribes at %.0f us each (the run without watchers): %.2f us\n",
        w, n, per_call * 1e6, (c - n * per_call) * 1e6 / d
      printf "watchers=%s: (server CPU with watchers - without) / entries delivered: %.2f us\n", w, (c - b[1]) * 1e6 / d }'
  done
fi
