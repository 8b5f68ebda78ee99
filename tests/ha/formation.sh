#!/usr/bin/env bash
# A pg_auto_failover formation on loopback for the failover tests and the benchmark: a monitor
# on PORT and two PostgreSQL 15 nodes, node1 on PORT+1 and node2 on PORT+2, all on 127.0.0.1 and
# all under DIR. Run as root; every pg_autoctl command runs as the postgres OS user.
#
# usage: tests/ha/formation.sh COMMAND DIR PORT [ARG]
#   up DIR PORT                  create and start the formation; waits (FORMATION_UP_TIMEOUT,
#                                default 180 s) for a primary and a secondary, then prints
#                                "NAME HOST:PORT STATE" per node. On failure prints the state and
#                                the tail of every log and leaves the formation for `down`.
#   state DIR PORT               "NAME HOST:PORT REPORTED_STATE ASSIGNED_STATE" per node, as the
#                                monitor has them
#   primary DIR PORT             HOST:PORT of the node the monitor holds as the running primary;
#                                nothing and exit 1 if none (mid-failover). Right after a kill it
#                                is still the dead node until the monitor notices (~6 s)
#   wait-healthy DIR PORT [SECS] wait (default 120 s) for a primary that takes writes and a
#                                secondary again; prints the node lines as `up` does
#   switchover DIR PORT          pg_autoctl perform switchover; returns once the other node is
#                                primary and the old one is its secondary; prints the node lines
#   kill-primary DIR PORT        kill -9 every process of the current primary node (keeper tree,
#                                postmaster and children); prints "NAME HOST:PORT" of that node
#   restart-node DIR PORT NAME   start NAME's keeper again (pg_autoctl run) so it rejoins
#   events DIR PORT              the monitor's events, oldest first, one a line:
#                                "TIME NAME REPORTED_STATE ASSIGNED_STATE DESCRIPTION", TIME in
#                                RFC 3339 UTC with microseconds
#   down DIR PORT                stop everything of the formation (kill -9 after ~10 s), remove DIR;
#                                idempotent, fine on a half-built formation
#   url DIR PORT                 the multi-host read-write URL of the two nodes
#
# Layout of DIR: monitor/ node1/ node2/ (PGDATA), backup/ (pg_autoctl's base backups), xdg/
# (pg_autoctl's XDG config, state and pid files, per formation so formations never see each
# other), logs/NAME.log (each service's output), pids/NAME (each service's launcher pid) and
# .formation, the mark that lets `down` remove DIR. Progress and errors go to stderr; stdout
# carries only the output described above.
set -euo pipefail

pgbin=/usr/lib/postgresql/15/bin
marker=.formation
# Writable primary states: the node runs as primary whether or not a standby is attached.
primary_states="'single','wait_primary','primary','join_primary','apply_settings'"
# A killed primary is replaced in ~12 s instead of ~50 s: check every second, a node is
# unhealthy after 5 s, and a primary cut off from the monitor is taken as demoted after 5 s.
fast_failover_sql=(
  "ALTER SYSTEM SET pgautofailover.health_check_period = 1000"
  "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 5000"
  "ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 5000"
  "SELECT pg_reload_conf()"
)

# The caller's libpq settings (PGHOST, PGPORT, PGUSER, ...) must not steer pg_autoctl or psql.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PG' || true)

say() { echo "formation: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { sed -n '/^# usage:/,/^# Layout/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# --- The formation's folders, ports and the commands that run as postgres.
setup() { # DIR PORT
  [[ ${2:-} =~ ^[0-9]+$ ]] || usage
  dir=$(realpath -m -- "$1")
  port=$2
  ((port > 1024 && port + 2 <= 65535)) || die "PORT must be in 1025..65533, not $port"
  ((port > 5432 || port + 2 < 5432)) || die "ports $port..$((port + 2)) would include 5432"
  [ "$dir" != / ] || die "DIR must not be /"
  monitor_url="postgres://autoctl_node@127.0.0.1:$port/pg_auto_failover?sslmode=disable"
  # pg_autoctl refuses to run as root; XDG_* inside DIR keep its config, state and pid files
  # per formation.
  as_postgres=(runuser -u postgres -- env XDG_CONFIG_HOME="$dir/xdg/config"
    XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run")
  cd /  # postgres must be able to read the working directory
}

pgdata() { echo "$dir/$1"; }
port_of() { # NAME
  case $1 in
    monitor) echo "$port" ;;
    node1) echo $((port + 1)) ;;
    node2) echo $((port + 2)) ;;
    *) die "unknown node '$1' (monitor, node1 or node2)" ;;
  esac
}

# Start a pg_autoctl service in its own session so that it outlives this script and the
# caller's terminal signals; output to logs/NAME.log, the launcher's pid to pids/NAME.
launch() { # NAME PG_AUTOCTL_ARGS...
  local name=$1; shift
  setsid --wait "${as_postgres[@]}" FORMATION_NODE="$(pgdata "$name")" pg_autoctl "$@" \
    >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name"
}

launched_alive() { # NAME
  local pid
  pid=$(cat "$dir/pids/$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

# --- The monitor's view, by SQL as postgres over TCP (trust on 127.0.0.1).
monitor_sql() { # SQL...
  local args=() sql
  for sql in "$@"; do args+=(-c "$sql"); done
  "$pgbin/psql" -X -q -At -F ' ' -v ON_ERROR_STOP=1 \
    "host=127.0.0.1 port=$port user=postgres dbname=pg_auto_failover connect_timeout=3" "${args[@]}"
}

node_rows() { # one "NAME HOST:PORT REPORTED ASSIGNED" line per node
  monitor_sql "SELECT nodename, nodehost || ':' || nodeport, reportedstate, goalstate
               FROM pgautofailover.node ORDER BY nodeid"
}

primary_row() { # "NAME HOST:PORT" of the one node that runs as primary and is meant to
  monitor_sql "WITH p AS (SELECT nodename, nodehost || ':' || nodeport AS hostport
                          FROM pgautofailover.node
                          WHERE reportedstate IN ($primary_states) AND goalstate IN ($primary_states))
               SELECT nodename, hostport FROM p WHERE (SELECT count(*) FROM p) = 1"
}

primary_hostport() { # fails when there is no single primary
  local row
  row=$(primary_row 2>/dev/null) && [ -n "$row" ] && echo "${row#* }"
}

tune_monitor() { monitor_sql "${fast_failover_sql[@]}" >/dev/null 2>&1; }

node_is() { # NAME STATE: reported and assigned
  [ "$(monitor_sql "SELECT reportedstate || ' ' || goalstate FROM pgautofailover.node
                    WHERE nodename = '$1'" 2>/dev/null)" = "$2 $2" ]
}

# Healthy: two nodes, one primary and one secondary, both settled, and the primary takes
# writes (a promoted node is out of recovery but read-only while in stop_replication).
healthy() {
  local settled hostport
  settled=$(monitor_sql "SELECT count(*) = 2
      AND count(*) FILTER (WHERE reportedstate = 'primary' AND goalstate = 'primary') = 1
      AND count(*) FILTER (WHERE reportedstate = 'secondary' AND goalstate = 'secondary') = 1
    FROM pgautofailover.node" 2>/dev/null) || return 1
  [ "$settled" = t ] || return 1
  hostport=$(primary_hostport) || return 1
  [ "$("$pgbin/psql" -X -At "postgres://postgres@$hostport/postgres?connect_timeout=3" \
        -c 'SHOW transaction_read_only' 2>/dev/null)" = off ]
}

healthy_away_from() { healthy && [ "$(primary_hostport)" != "$1" ]; } # OLD_PRIMARY

print_roles() { node_rows | awk '{ print $1, $2, $3 }'; }

# Print why, the monitor's view and the tail of every log, then exit 1.
fail() { # MESSAGE
  say "$1"
  { echo "--- state (NAME HOST:PORT REPORTED ASSIGNED)"; node_rows 2>&1 || true
    local log
    for log in "$dir"/logs/*.log; do
      [ -e "$log" ] || continue
      echo "--- tail of $log"; tail -n 25 "$log"
    done; } >&2
  exit 1
}

# Poll CHECK until it passes; fail at DEADLINE (in $SECONDS), or as soon as one of the
# services named in $watch (the ones this command started) has exited.
watch=()
wait_until() { # DEADLINE WHAT CHECK...
  local deadline=$1 what=$2 name; shift 2
  until "$@"; do
    for name in "${watch[@]}"; do
      launched_alive "$name" || fail "pg_autoctl of $name exited while waiting for $what"
    done
    ((SECONDS < deadline)) || fail "timed out after $((SECONDS - start)) s waiting for $what"
    sleep 0.25
  done
}

# --- Processes of the formation, found by what they run on, never by name or port. A process
# belongs to PATH when it is one of the postgres user's processes or a launcher recorded in
# pids/, and an argument (keepers' --pgdata, postmasters' -D, initdb, pg_basebackup) or its
# FORMATION_NODE or XDG_RUNTIME_DIR (set on everything this script starts, and inherited) is
# PATH or under it. The environment matters: pg_autoctl's services retitle themselves
# ("pg_autoctl: start/stop postgres") and one left behind by a dead keeper restarts postgres
# on its own. Then every descendant (postgres backends retitle themselves too, and setsid, so
# neither arguments nor process groups find them). Zombies are left out: they are gone already.
processes_of() { # PATH...
  local path patterns=() roots=()
  for path in "$@"; do
    # shellcheck disable=SC2001 # (escape every metacharacter, with a back-reference)
    path=$(sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$path")
    patterns+=(-e "((FORMATION_NODE|XDG_RUNTIME_DIR)=)?$path(/.*)?")
  done
  # grep -z reads the NUL-separated arguments and environment entries as lines.
  mapfile -t roots < <({ cat "$dir"/pids/* 2>/dev/null || true; ps -o pid= -u postgres; } |
    awk '{ print "/proc/" $1 "/cmdline"; print "/proc/" $1 "/environ" }' |
    xargs -r grep -lszxE "${patterns[@]}" | cut -d/ -f3 | sort -u)
  ((${#roots[@]})) || return 0
  ps -eo pid=,ppid=,stat= | awk -v roots="${roots[*]}" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    $3 !~ /^Z/ { parent[$1] = $2 }
    END {
      do { grown = 0
           for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grown = 1 }
      } while (grown)
      for (p in keep) if (p in parent) print p }' | sort -un
}

# SIGSTOP first so that no keeper restarts postgres and no process forks while the set is
# taken again, then SIGKILL; repeat until nothing of PATHS is left.
kill_all() { # PATH...
  local pids tries=0
  while mapfile -t pids < <(processes_of "$@"); ((${#pids[@]})); do
    ((++tries <= 50)) || { say "still alive after kill -9: ${pids[*]}"; return 1; }
    kill -STOP "${pids[@]}" 2>/dev/null || true
    mapfile -t pids < <(processes_of "$@")
    ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
}

# --- Commands.

ensure_pg_autoctl() {
  command -v pg_autoctl >/dev/null && return 0
  say "pg_autoctl is missing: installing postgresql-15-auto-failover"
  ( flock 9  # parallel runs must not race on dpkg
    command -v pg_autoctl >/dev/null && exit 0
    say "apt-get update -qq"
    apt-get update -qq
    say "apt-get install -y -qq postgresql-15-auto-failover"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-auto-failover
  ) 9>/var/lock/formation-apt.lock
  command -v pg_autoctl >/dev/null || die "postgresql-15-auto-failover installed no pg_autoctl"
}

# pg_autoctl create NAME in the foreground (bounded by $deadline), then its service. Not
# `create --run`: on this pg_autoctl 2.0 the monitor then restarts its Postgres in a loop
# ("Postgres is already running ... not a sub-process of pg_autoctl").
create() { # NAME KIND [ARGS...]
  local name=$1 kind=$2; shift 2
  say "creating $name on 127.0.0.1:$(port_of "$name")"
  timeout -k 5 $((deadline > SECONDS ? deadline - SECONDS : 1)) \
    "${as_postgres[@]}" FORMATION_NODE="$(pgdata "$name")" pg_autoctl create "$kind" \
    --pgdata "$(pgdata "$name")" --pgport "$(port_of "$name")" --hostname 127.0.0.1 \
    --listen 127.0.0.1 --auth trust --no-ssl --pgctl "$pgbin/pg_ctl" "$@" \
    >>"$dir/logs/$name.log" 2>&1 </dev/null || {
    (($? != 124)) || fail "pg_autoctl create $kind of $name timed out"
    fail "pg_autoctl create $kind of $name failed"; }
  launch "$name" run --pgdata "$(pgdata "$name")"
  watch+=("$name")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_up() {
  ensure_pg_autoctl
  # A fresh folder: `down` removes DIR and kills what runs under it.
  [ -z "$(ls -A "$dir" 2>/dev/null)" ] ||
    die "$dir is not empty (to replace a formation: $0 down $dir $port)"
  local p name
  for p in "$port" $((port + 1)) $((port + 2)); do
    port_free "$p" || die "127.0.0.1:$p is already in use"
  done
  mkdir -p "$dir"/{xdg/config,xdg/data,xdg/run,logs,pids}
  echo "$port" >"$dir/$marker"
  chown -R postgres:postgres "$dir"
  "${as_postgres[@]}" test -w "$dir" -a -x "$dir" ||
    die "user postgres cannot write $dir (every folder above it must be searchable by postgres)"
  # Postgres puts its unix socket there (distinct per port); a container may lack the folder.
  [ -d /var/run/postgresql ] || install -d -o postgres -g postgres -m 2775 /var/run/postgresql

  deadline=$((SECONDS + ${FORMATION_UP_TIMEOUT:-180}))
  create monitor monitor
  wait_until "$deadline" "monitor taking the failover settings" tune_monitor
  # node2 clones node1, so it is created only once node1 runs alone as `single`.
  create node1 postgres --name node1 --dbname postgres --monitor "$monitor_url"
  wait_until "$deadline" "node1 running as single" node_is node1 single
  create node2 postgres --name node2 --dbname postgres --monitor "$monitor_url"
  wait_until "$deadline" "writable primary with a secondary" healthy
  say "up in $((SECONDS - start)) s"
  print_roles
}

cmd_state() { node_rows; }

cmd_primary() { primary_hostport; }

cmd_wait_healthy() { # [TIMEOUT_S]
  wait_until $((SECONDS + ${1:-120})) "writable primary with a secondary" healthy
  print_roles
}

cmd_switchover() {
  local old
  old=$(primary_hostport) || fail "no primary to switch over from"
  say "switchover from $old"
  "${as_postgres[@]}" pg_autoctl perform switchover --monitor "$monitor_url" --wait 60 \
    >>"$dir/logs/perform.log" 2>&1 || fail "pg_autoctl perform switchover failed (logs/perform.log)"
  wait_until $((SECONDS + 120)) "the other node as primary with a secondary" healthy_away_from "$old"
  print_roles
}

cmd_kill_primary() {
  local name hostport
  read -r name hostport < <(primary_row 2>/dev/null) || true
  [ -n "${name:-}" ] || fail "no primary to kill"
  kill_all "$(pgdata "$name")"
  echo "$name $hostport"
}

cmd_restart_node() { # NAME
  local name=${1:-}
  [ -n "$name" ] || usage
  port_of "$name" >/dev/null
  [ -d "$(pgdata "$name")" ] || die "$name was never created in $dir"
  if [ -n "$(processes_of "$(pgdata "$name")")" ]; then
    say "$name is running already"
    return 0
  fi
  launch "$name" run --pgdata "$(pgdata "$name")"
  sleep 1
  launched_alive "$name" || fail "pg_autoctl run of $name exited at once"
}

cmd_events() {
  monitor_sql "SELECT to_char(eventtime AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                      nodename, reportedstate, goalstate, regexp_replace(description, '\s+', ' ', 'g')
               FROM pgautofailover.event ORDER BY eventid"
}

cmd_down() {
  if [ ! -e "$dir" ]; then
    # Processes still running on a removed DIR are orphans of a formation deleted by hand.
    kill_all "$dir"
    return 0
  fi
  if [ ! -e "$dir/$marker" ]; then
    # No mark: nothing of ours ever ran there (up writes it before starting anything).
    rmdir "$dir" 2>/dev/null || die "$dir is not a formation folder (no $marker): left alone"
    return 0
  fi
  # Fast shutdown (SIGINT, as `pg_autoctl stop --fast`) of every pg_autoctl supervisor (`run`,
  # or a `create` an interrupted `up` left) and every postmaster, then kill -9 whatever is left
  # after 10 s.
  local pid pids
  mapfile -t pids < <(processes_of "$dir")
  for pid in "${pids[@]}"; do
    case $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") in
      "pg_autoctl run "* | "pg_autoctl create "* | "$pgbin/postgres "*)
        kill -INT "$pid" 2>/dev/null || true ;;
    esac
  done
  local deadline=$((SECONDS + 10))
  while mapfile -t pids < <(processes_of "$dir"); ((${#pids[@]})) && ((SECONDS < deadline)); do
    sleep 0.2
  done
  ((${#pids[@]} == 0)) || say "kill -9 of what did not stop within 10 s:
$(ps -o pid=,args= -p "$(IFS=,; echo "${pids[*]}")")"
  kill_all "$dir"
  rm -rf -- "$dir"
}

cmd_url() {
  local hosts
  hosts="127.0.0.1:$(port_of node1),127.0.0.1:$(port_of node2)"
  echo "postgres://postgres@$hosts/postgres?target_session_attrs=read-write"
}

main() {
  (($# >= 3)) || usage
  local command=$1; shift
  ((EUID == 0)) || die "run as root (pg_autoctl itself runs as postgres)"
  start=$SECONDS
  setup "$1" "$2"; shift 2
  case $command in
    up) cmd_up ;;
    state) cmd_state ;;
    primary) cmd_primary ;;
    wait-healthy) cmd_wait_healthy "$@" ;;
    switchover) cmd_switchover ;;
    kill-primary) cmd_kill_primary ;;
    restart-node) cmd_restart_node "$@" ;;
    events) cmd_events ;;
    down) cmd_down ;;
    url) cmd_url ;;
    *) usage ;;
  esac
}

main "$@"
