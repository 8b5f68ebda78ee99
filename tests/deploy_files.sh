#!/usr/bin/env bash
# The deploy files, checked offline: deploy/subledger.service by `systemd-analyze verify`, with
# its ExecStart pointed at the binary built here (the unit names /usr/local/bin/subledger, which
# a build machine does not have). verify only warns about an unknown or misspelt key, so any
# output at all fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "tests/deploy_files.sh: $*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
cargo build --quiet --bin subledger
binary=$PWD/target/debug/subledger
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
grep -q '^ExecStart=/usr/local/bin/subledger ' deploy/subledger.service || fail "ExecStart is not /usr/local/bin/subledger"
sed "s#^ExecStart=/usr/local/bin/subledger #ExecStart=$binary #" deploy/subledger.service >"$scratch/subledger.service"
output=$(systemd-analyze verify "$scratch/subledger.service" 2>&1) || fail "systemd-analyze verify failed: $output"
[ -z "$output" ] || fail "systemd-analyze verify warns: $output"
echo "tests/deploy_files.sh: deploy/subledger.service verifies"
