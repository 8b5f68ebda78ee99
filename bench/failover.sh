#!/usr/bin/env bash
# How long writes stop when the PostgreSQL primary is lost, against how long pg_auto_failover
# itself takes to have a writer again.
#
#   bench/failover.sh [RUNS]      (default 10 of each fault)
#
# Builds a pg_auto_failover formation (tests/ha/formation.sh) on free loopback ports, starts 3
# replicas on its multi-host URL and 16 clients that Subscribe and retry the same request_id on
# UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED, then runs RUNS planned switchovers and RUNS kill -9s
# of the whole primary node (keeper, postgres and its children; the node is restarted and
# rejoins before the next run). For each run it prints the write outage (the longest gap
# between two acknowledgements from the fault on) beside pg_auto_failover's promotion time (from
# the fault to the event in which the other node reports wait_primary or primary), then min,
# median and max of each and of their difference, and the acknowledged, missing and doubled
# counts over every run.
#
# The replicas are the debug build that the tests use: an outage is the time to notice the loss
# and find the new writer, which no optimisation shortens. Run as root (pg_autoctl runs as the
# postgres user); needs postgresql-15-auto-failover (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
FAILOVER_RUNS=$runs cargo test --quiet --test failover failover_figures -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -E '^(switchover|kill-primary|acknowledged)|panicked|FAILED|error'
