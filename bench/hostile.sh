#!/usr/bin/env bash
# Issue 19's hostile-client suite at the issue's sizes, on a release build: the three
# hostile tests against real processes, one after another, with
#   HOSTILE_CONNECTIONS=10000  t42: 10,000 idle connections (memory per idle connection),
#                              connections past the cap, a 1 MiB header, a half-sent frame;
#   t43                        NUL, over-long and out-of-rule names in every request kind,
#                              then a restarted follower;
#   HOSTILE_SCALE=long         t46: forged peer frames, 50,000 held pulls over four
#                              connections (memory per held pull), maxClientsPerGroup at its
#                              default (1,000), 4,000 new groups past a limit of 2,000,
#                              100,000 auto-created topic attempts against
#                              the default autoCreateTopicLimit (10,000), a restarted follower;
# each with a real producer (and in t46 a consumer) checked throughout. It prints the figures
# (the tests' own lines) and how long each test took, and exits non-zero if any failed.
#
#   bench/hostile.sh [--no-build] [TIMEOUT_SECONDS]     (default 1800 for the whole run)
#
# Needs `ulimit -n` of at least 12,000 (t42 holds 10,000 connections in the test and in the
# leader, each its own process), which it raises if the hard limit allows. Build output goes
# to $CARGO_TARGET_DIR (default target/). A run took 173 s after the build (2026-12-07).
# Every process the tests start is ended by the tests' harness, by PID; a test that fails
# keeps its cluster's logs under /tmp and says where.
set -euo pipefail

cd "$(dirname "$0")/.."
build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi
limit=${1:-1800}

want_files=12000
if [ "$(ulimit -n)" -lt "$want_files" ]; then
    ulimit -n "$want_files" 2> /dev/null || {
        echo "ulimit -n is $(ulimit -n) and cannot be raised to $want_files" >&2
        exit 2
    }
fi

tests=(--test t42_hostile_connections --test t43_hostile_names --test t46_hostile_suite)
if [ "$build" = 1 ]; then
    cargo test --release --no-run "${tests[@]}"
fi

log=$(mktemp /tmp/rr-hostile.XXXXXX)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
status=0
HOSTILE_SCALE=long HOSTILE_CONNECTIONS=10000 timeout --signal=INT --kill-after=30 "$limit" \
    cargo test --release --no-fail-fast "${tests[@]}" -- --nocapture --test-threads=1 \
    > "$log" 2>&1 || status=$?
took=$(( $(date +%s) - started ))

# What the tests print (their figures), and how each ended; not cargo's build lines or
# backtraces.
grep -vE '^ +(Compiling|Finished|Executable)|^ +[0-9]+: |^ +at |^note: |^$|^running [0-9]+ test|^failures:|^    [a-z_]+$' \
    "$log" || true
echo "== whole run: ${took} s (limit ${limit} s), exit status ${status}"
if [ "$status" = 124 ] || [ "$status" = 130 ]; then
    echo "stopped by the time limit; the last lines:" >&2
    tail -n 20 "$log" >&2
fi
exit "$status"
