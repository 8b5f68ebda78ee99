#!/usr/bin/env bash
# The container image, end to end (README "Run it", third way): scripts/image builds the static
# binary and the scratch image; the image then runs
#   1. on the machine's PostgreSQL as a least-privilege runtime role: `migrate --grant-to` as the
#      owner from the image, then `serve --no-migrate` as the runtime role;
#   2. on SQLite in a named volume at /data (as uid 10001, which the image's /data belongs to),
#      with a mounted auth file and a bearer token made by the image's `token new`;
# each called with grpcurl (health, CreateOffering, Subscribe, VerifyOffering), then stopped with
# `docker stop -t 30` (SIGTERM, then 30 s, longer than the server's 10 s drain, before SIGKILL):
# exit status 0 and the drain's log lines prove it stopped by itself.
#
# docker: installed (Debian's docker.io) if missing and dockerd started if not running. No image
# registry needs to be reachable: the image is FROM scratch and runs with --network host. When
# dockerd cannot start the test says so, and fails under CI=true.
#
# Env: PGURL (default postgres://postgres@127.0.0.1:5432/postgres), the admin connection.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
tag=subledger:ci-test
pg_admin=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
role=subledger_image_app
database=subledger_image_$$
volume=subledger-image-data-$$
containers=()
S=subledger.v1.SubscriptionLedger

fail() { echo "tests/image.sh: $*" >&2; exit 1; }
log() { echo "tests/image.sh: $*"; }

# --- docker
if ! command -v dockerd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log
  (dockerd >/var/log/dockerd-subledger-ci.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! docker info >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    fail "dockerd did not start (see /var/log/dockerd-subledger-ci.log); under CI=true the image must be tested"
  fi
  echo "tests/image.sh: SKIPPED: dockerd did not start (see /var/log/dockerd-subledger-ci.log)" >&2
  exit 0
fi

cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  docker volume rm -f "$volume" >/dev/null 2>&1 || true
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
scratch=$(mktemp -d)
trap cleanup EXIT

# --- the image
scripts/image "$tag"
[ "$(docker image inspect -f '{{.Config.User}}' "$tag")" = "10001:10001" ] || fail "the image does not run as uid 10001"
docker image inspect -f '{{json .Config.Cmd}}' "$tag" | grep -q '"--auth-file","/etc/subledger/auth.toml"' ||
  fail "the default CMD does not read /etc/subledger/auth.toml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits for SERVING on 127.0.0.1:$1 (grpcurl flags after it), or fails with the container's log.
wait_serving() {
  local port=$1 name=$2; shift 2
  for _ in $(seq 1 120); do
    if grpcurl -plaintext "$@" "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
      return 0
    fi
    sleep 0.25
  done
  docker logs "$name" >&2 || true
  fail "$name never served on port $port"
}

# The four calls on 127.0.0.1:$1, for offering $2 (grpcurl flags after it).
calls() {
  local port=$1 offering=$2; shift 2
  local at=127.0.0.1:$port
  grpcurl -plaintext "$@" "$at" grpc.health.v1.Health/Check | grep -q '"SERVING"' || fail "health is not SERVING"
  grpcurl -plaintext "$@" -d "{\"offering_id\":\"$offering\",\"name\":\"Image\",\"max_units\":100,\"max_units_per_investor\":10,\"request_id\":\"create-$offering\"}" \
    "$at" $S/CreateOffering | grep -q "\"offeringId\": \"$offering\"" || fail "CreateOffering $offering"
  grpcurl -plaintext "$@" -d "{\"offering_id\":\"$offering\",\"investor_id\":\"alice\",\"units\":7,\"request_id\":\"sub-$offering\"}" \
    "$at" $S/Subscribe | grep -q '"subscribedUnits": "7"' || fail "Subscribe on $offering"
  grpcurl -plaintext "$@" -d "{\"offering_id\":\"$offering\"}" "$at" $S/VerifyOffering | grep -q '"ok": true' ||
    fail "VerifyOffering $offering is not ok"
}

# docker stop -t 30, then: exited 0 by itself (137 would be the SIGKILL) after the drain's lines.
stop_and_check_drain() {
  local name=$1
  docker stop -t 30 "$name" >/dev/null
  local code
  code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || { docker logs "$name" >&2; fail "$name exited $code after SIGTERM, not 0"; }
  docker logs "$name" 2>&1 | grep -q "shutdown requested: finishing calls in flight" || fail "$name logged no drain"
  docker logs "$name" 2>&1 | grep -q "subledger stopped" || fail "$name did not log its stop"
}

# --- 1. PostgreSQL, as the runtime role
psql -q "$pg_admin" -c "DO \$\$ BEGIN CREATE ROLE $role LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
psql -q "$pg_admin" -c "CREATE DATABASE $database" >/dev/null
owner_url=${pg_admin%/*}/$database
runtime_url=$(sed -E "s#^([a-z]+://)([^@/]*@)?#\1$role@#" <<<"$owner_url")
docker run --rm --network host "$tag" migrate --database-url "$owner_url" --grant-to "$role"
port=$(free_port)
name=subledger-image-pg-$$
containers+=("$name")
docker run -d --name "$name" --network host -e DATABASE_URL="$runtime_url" "$tag" \
  serve --no-migrate --listen "127.0.0.1:$port" >/dev/null
wait_serving "$port" "$name"
calls "$port" image-pg
stop_and_check_drain "$name"
log "PostgreSQL as $role: served, called, drained"

# --- 2. SQLite in a volume, with the auth file mounted where the default CMD reads it
token_block=$(docker run --rm "$tag" token new --name ci --role reader,subscriber,operator)
token=$(sed -n 's/^# token: //p' <<<"$token_block")
[ -n "$token" ] || fail "token new printed no token"
grep -v '^#' <<<"$token_block" >"$scratch/auth.toml"
chmod 644 "$scratch/auth.toml"
docker volume create "$volume" >/dev/null
port=$(free_port)
name=subledger-image-sqlite-$$
containers+=("$name")
docker run -d --name "$name" --network host -v "$volume:/data" \
  -v "$scratch/auth.toml:/etc/subledger/auth.toml:ro" "$tag" \
  serve --listen "127.0.0.1:$port" --data-dir /data --auth-file /etc/subledger/auth.toml >/dev/null
wait_serving "$port" "$name"
bearer=(-H "authorization: Bearer $token")
if grpcurl -plaintext -d '{"offering_id":"x"}' "127.0.0.1:$port" $S/GetOffering 2>/dev/null; then
  fail "a call without the token was answered"
fi
calls "$port" image-sqlite "${bearer[@]}"
stop_and_check_drain "$name"
# The data outlived the container: the volume's database verifies.
docker run --rm -v "$volume:/data" "$tag" verify --data-dir /data | grep -q "^OK: 1 offering," ||
  fail "the volume's database does not verify"
log "SQLite in volume $volume: served with an auth file, called, drained, verified"
log "passed in $((SECONDS - started)) s"
