#!/usr/bin/env bash
# Send throughput against the number of queues (issue 21: "queues cost nothing on the
# write path"). For each point, a fresh `BIN dev` cluster (name server and three-node group
# on conf/'s ports, data in a temporary directory, metrics off), TOPICS topics with QUEUES
# queues each created first, then `BIN bench produce` spreading its sends over every queue
# of every topic. Prints each point's figures, its ratio to the first point, and the memory
# (RSS) and open files of each node after the load.
#
#   bench/queue-sweep.sh [-d SECONDS] [-w IN_FLIGHT] [-s BYTES] [-f FLUSH] [-c CLIENT] BIN [POINT...]
#
# CLIENT is the binary whose `bench produce` sends (default BIN): give the same one when
# comparing two servers, so that both get the same load.
# POINT is TOPICSxQUEUES; default 1x8 1000x8 5000x4 20000x4 (8 to 80,000 queues). FLUSH is
# SYNC_FLUSH (default) or ASYNC_FLUSH. -d 10 -w 256 -s 1024 by default. Nothing else may hold
# ports 9876, 10911-10931 or 40911-40913. Stops every process it started, by PID; removes the
# data directories. KEEP_LOGS=1 keeps them (the path is printed).
set -euo pipefail

seconds=10 in_flight=256 size=1024 flush=SYNC_FLUSH client=""
usage() { sed -n '2,18p' "$0"; exit 2; }
while getopts "d:w:s:f:c:" opt; do
    case $opt in
        d) seconds=$OPTARG ;;
        w) in_flight=$OPTARG ;;
        s) size=$OPTARG ;;
        f) flush=$OPTARG ;;
        c) client=$(realpath "$OPTARG") ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
bin=$(realpath "$1")
shift
[ -n "$client" ] || client=$bin
points=("$@")
[ ${#points[@]} -gt 0 ] || points=(1x8 1000x8 5000x4 20000x4)
cd "$(dirname "$0")/.."

work=$(mktemp -d)
. bench/dev.sh
cleanup() {
    stop_dev
    if [ -n "${KEEP_LOGS:-}" ]; then echo "data and logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# RSS (MiB) and open files of each broker node of the running dev cluster.
node_resources() {
    local out="" pid
    for pid in $(pgrep -P "$dev_pid"); do
        grep -q -- ' broker ' <(tr '\0' ' ' <"/proc/$pid/cmdline"; echo) || continue
        local rss fds
        rss=$(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        out+="${rss} MiB/${fds} fds  "
    done
    echo "$out"
}

first_rate=""
printf '%-10s %8s %10s %8s %8s %8s  %s\n' point queues msg/s ratio p50_ms p99_ms "nodes after (RSS/open files)"
for point in "${points[@]}"; do
    topics=${point%x*} queues=${point#*x}
    dir="$work/$point"
    start_dev "$bin" "$dir" "$work/$point.dev.log" "$flush"
    "$client" bench produce --topics "$topics" --queues "$queues" -w "$in_flight" -s "$size" \
        -d "$seconds" --json >"$work/$point.json" 2>"$work/$point.bench.log" \
        || { tail -20 "$work/$point.bench.log"; exit 1; }
    resources=$(node_resources)
    read -r rate p50 p99 < <(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
l = r["latency_ms"]
print(round(r["msg_per_s"]), l["p50"], l["p99"])' "$work/$point.json")
    [ -n "$first_rate" ] || first_rate=$rate
    ratio=$(python3 -c "print(f'{$rate / $first_rate:.2f}')")
    printf '%-10s %8d %10d %8s %8s %8s  %s\n' "$point" $((topics * queues)) "$rate" "${ratio}x" "$p50" "$p99" "$resources"
    stop_dev
    [ -n "${KEEP_LOGS:-}" ] || rm -rf "$dir"
done
