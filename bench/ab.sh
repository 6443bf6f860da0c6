#!/usr/bin/env bash
# Interleaved A/B of rocketraft binaries: the R3 produce bench and the brokers' CPU per
# message, the figure this project uses to judge a hot-path change on a noisy machine.
#
#   bench/ab.sh [-r ROUNDS] [-d SECONDS] [-w IN_FLIGHT] [-f ASYNC_FLUSH|SYNC_FLUSH] [-c] BIN_A BIN_B ...
#
# For each round and each binary, in turn: `BIN dev --clean` (a name server and a
# three-node group from the binary's built-in conf/, one Tokio worker per process), a
# warm-up, then `BIN bench produce -w IN_FLIGHT -d SECONDS` with 1 KiB messages. It prints
# one line per run: msg/s, p50 ms, and the CPU (user + system) the `dev` process tree used
# during the bench divided by the messages acknowledged: the brokers' and the name server's
# cost per message; the bench client's own CPU is not in it. Also the machine's idle CPU
# seconds during the bench (from /proc/stat, both cores). Copy each binary out of
# target/ first (cp target/release/rocketraft /tmp/a/), so that builds do not change it.
#
# Uses the loopback ports of `rocketraft dev` (9876, 10911/10921/10931, 40911-40913) and a
# temporary directory; stops every process it started, by PID.
#
# -c (client A/B): one group, started once from BIN_A, serves every run; each binary is
# only the bench client, and the line gives the client's own CPU per message instead,
# measured from 1.5 s into the run to 1.5 s before its end (the rate of the whole run is
# assumed for that stretch, so -d must be at least 5).
set -euo pipefail

rounds=3 seconds=10 window=256 flush=ASYNC_FLUSH client=0
while getopts "r:d:w:f:c" opt; do
    case $opt in
        r) rounds=$OPTARG ;;
        d) seconds=$OPTARG ;;
        w) window=$OPTARG ;;
        f) flush=$OPTARG ;;
        c) client=1 ;;
        *) sed -n '2,21p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n '2,21p' "$0"; exit 2; }
if [ "$client" = 1 ] && [ "$seconds" -lt 5 ]; then
    echo "-c needs -d 5 or more" >&2
    exit 2
fi

work="$(mktemp -d)"
dev_pid=""
cleanup() {
    if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
        kill "$dev_pid" 2>/dev/null || true
        wait "$dev_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Sum of utime + stime (clock ticks) of a process and all its descendants.
tree_ticks() {
    local pid=$1 total=0 child stat
    if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
        stat=${stat##*) }
        set -- $stat
        total=$(( ${12} + ${13} ))
    fi
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        total=$(( total + $(tree_ticks "$child") ))
    done
    echo "$total"
}

idle_ticks() { awk '/^cpu /{ print $5 }' /proc/stat; }

start_group() {
    local bin=$1
    rm -rf "$work/dev"
    TOKIO_WORKER_THREADS=1 "$bin" dev --clean --data-dir "$work/dev" --flush-disk-type "$flush" \
        > "$work/dev.log" 2>&1 &
    dev_pid=$!
    local ready=0
    for _ in $(seq 1 30); do
        if timeout 10 "$bin" bench produce -t Warmup -c 1 -w 1 -d 5 --json > /dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 1
    done
    if [ "$ready" = 0 ]; then
        echo "$bin: the group never became ready (log: $work/dev.log)" >&2
        tail -20 "$work/dev.log" >&2
        exit 1
    fi
}

stop_group() {
    kill "$dev_pid"
    wait "$dev_pid" 2>/dev/null || true
    dev_pid=""
}

run_one() {
    local bin=$1 hz
    hz=$(getconf CLK_TCK)
    start_group "$bin"
    TOKIO_WORKER_THREADS=1 "$bin" bench produce -t Warm2 -w "$window" -d 3 --json > /dev/null 2>&1
    local c0 i0 c1 i1
    c0=$(tree_ticks "$dev_pid"); i0=$(idle_ticks)
    TOKIO_WORKER_THREADS=1 "$bin" bench produce -t AB -w "$window" -d "$seconds" --json \
        > "$work/bench.json" 2> "$work/bench.err"
    c1=$(tree_ticks "$dev_pid"); i1=$(idle_ticks)
    stop_group
    python3 - "$work/bench.json" "$c0" "$c1" "$i0" "$i1" "$hz" "$bin" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])
c0, c1, i0, i1, hz = (int(x) for x in sys.argv[2:7])
acked = j["acked"]
us = 1e6 * (c1 - c0) / hz / acked if acked else float("nan")
print(f"{sys.argv[7]}: {j['msg_per_s']:,.0f} msg/s  p50 {j['latency_ms']['p50']:.2f} ms  "
      f"brokers {us:.2f} us CPU/msg  idle {(i1 - i0) / hz:.1f} s  "
      f"(unknown {j['unknown']}, failed {j['failed']})")
PY
}

# Client A/B: the group keeps running; only the bench client changes.
run_client() {
    local bin=$1 hz bench_pid c0 i0 c1 i1
    hz=$(getconf CLK_TCK)
    TOKIO_WORKER_THREADS=1 "$bin" bench produce -t Warm2 -w "$window" -d 3 --json > /dev/null 2>&1
    TOKIO_WORKER_THREADS=1 "$bin" bench produce -t AB -w "$window" -d "$seconds" --json \
        > "$work/bench.json" 2> "$work/bench.err" &
    bench_pid=$!
    sleep 1.5
    c0=$(tree_ticks "$bench_pid"); i0=$(idle_ticks)
    sleep "$((seconds - 3))"
    c1=$(tree_ticks "$bench_pid"); i1=$(idle_ticks)
    wait "$bench_pid"
    python3 - "$work/bench.json" "$c0" "$c1" "$i0" "$i1" "$hz" "$bin" "$((seconds - 3))" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])
c0, c1, i0, i1, hz = (int(x) for x in sys.argv[2:7])
measured = j["msg_per_s"] * int(sys.argv[8])
us = 1e6 * (c1 - c0) / hz / measured if measured else float("nan")
print(f"{sys.argv[7]}: {j['msg_per_s']:,.0f} msg/s  p50 {j['latency_ms']['p50']:.2f} ms  "
      f"client {us:.2f} us CPU/msg  idle {(i1 - i0) / hz:.1f} s  "
      f"(unknown {j['unknown']}, failed {j['failed']})")
PY
}

if [ "$client" = 1 ]; then
    start_group "$1"
fi
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds ($flush, $window in flight, ${seconds}s)"
    for bin in "$@"; do
        if [ "$client" = 1 ]; then
            run_client "$bin"
        else
            run_one "$bin"
        fi
    done
done
