#!/usr/bin/env bash
# A deep backlog must not slow anything (issue 21, part 2). On one fresh `BIN dev` cluster
# (name server and three-node group on conf/'s ports, data under a temporary directory on the
# file system of $TMPDIR, metrics off):
#   1. produce to topic BacklogLoad for SECONDS on the empty group: the baseline;
#   2. fill topic Backlog with COUNT messages of BYTES bytes (the fill rate is printed);
#   3. produce to BacklogLoad again for SECONDS with the backlog stored;
#   4. drop the page cache (when this user may: `/proc/sys/vm/drop_caches`; otherwise the
#      backlog may still be cached, and the script says so), then for SECONDS produce to
#      BacklogLoad while a consumer reads Backlog from its oldest message (cold reads).
# Prints msg/s, p50 and p99 of each produce phase with its ratio to the baseline, and the
# consumer's msg/s and MB/s. COUNT x (BYTES + about 200 bytes of record header) is stored by
# each of the three nodes: check the disk first. `-b KEY=VALUE` (repeatable) goes into every
# broker's config, e.g. `-b slaveReadEnable=true -b accessMessageInMemoryMaxRatio=1` to
# have the cold consumer read from followers.
#
#   bench/backlog.sh [-n COUNT] [-s BYTES] [-d SECONDS] [-w IN_FLIGHT] [-f FLUSH] [-b K=V] BIN
#
# Defaults: -n 2000000 -s 256 -d 10 -w 256 -f SYNC_FLUSH. Nothing else may hold ports 9876,
# 10911-10931 or 40911-40913. Stops every process it started, by PID; removes the data
# directory (KEEP_LOGS=1 keeps it; the path is printed).
set -euo pipefail

count=2000000 size=256 seconds=10 in_flight=256 flush=SYNC_FLUSH
broker_conf=()
usage() { sed -n '2,21p' "$0"; exit 2; }
while getopts "n:s:d:w:f:b:" opt; do
    case $opt in
        n) count=$OPTARG ;;
        s) size=$OPTARG ;;
        d) seconds=$OPTARG ;;
        w) in_flight=$OPTARG ;;
        f) flush=$OPTARG ;;
        b) broker_conf+=(--broker-conf "$OPTARG") ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
bin=$(realpath "$1")
cd "$(dirname "$0")/.."

need=$((count * (size + 200) * 3 / 1024 / 1024))
free=$(df -Pm "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $4 }')
if [ "$need" -gt $((free - 2048)) ]; then
    echo "the backlog needs about $need MiB on ${TMPDIR:-/tmp}, $free MiB are free" >&2
    exit 1
fi

work=$(mktemp -d)
. bench/dev.sh
consume_pid=""
cleanup() {
    [ -z "$consume_pid" ] || kill "$consume_pid" 2>/dev/null || true
    stop_dev
    if [ -n "${KEEP_LOGS:-}" ]; then echo "data and logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

start_dev "$bin" "$work/dev" "$work/dev.log" "$flush" ${broker_conf[@]+"${broker_conf[@]}"}

# `produce NAME ARGS...`: one produce run; its last JSON line goes to $work/NAME.json.
produce() {
    local name=$1
    shift
    "$bin" bench produce --json "$@" >"$work/$name.json" 2>"$work/$name.log" \
        || { tail -20 "$work/$name.log"; exit 1; }
}
figures() {
    python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
l = r["latency_ms"]
print(round(r["msg_per_s"]), l["p50"], l["p99"])' "$work/$1.json"
}
load=(-t BacklogLoad -s "$size" -w "$in_flight" -d "$seconds")

produce empty "${load[@]}"
started=$(date +%s.%N)
produce fill -t Backlog -s "$size" -w "$in_flight" -c "$count" -d 86400
fill_s=$(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')")
stored=$(du -sm "$work/dev" | cut -f1)
produce stored "${load[@]}"

sync
if echo 1 2>/dev/null >/proc/sys/vm/drop_caches; then
    cache="page cache dropped"
else
    cache="page cache NOT dropped (no permission): the backlog may be read from memory"
fi
"$bin" bench consume -t Backlog --json --timeout-seconds "$seconds" \
    >"$work/consume.json" 2>"$work/consume.log" &
consume_pid=$!
produce reading "${load[@]}"
wait "$consume_pid" || true # a consumer stopped by its deadline reports what it read
consume_pid=""

read -r base_rate base_p50 base_p99 < <(figures empty)
echo "backlog: $count messages of $size bytes filled in $fill_s s; $stored MiB on disk (three nodes); $cache"
printf '%-34s %10s %8s %8s %8s %8s\n' phase msg/s ratio p50_ms p99_ms p99x
for phase in empty stored reading; do
    read -r rate p50 p99 < <(figures "$phase")
    label=$phase
    case $phase in
        empty) label="produce, empty group" ;;
        stored) label="produce, backlog stored" ;;
        reading) label="produce, cold consumer reading" ;;
    esac
    printf '%-34s %10d %8s %8s %8s %8s\n' "$label" "$rate" \
        "$(python3 -c "print(f'{$rate / $base_rate:.2f}x')")" "$p50" "$p99" \
        "$(python3 -c "print(f'{$p99 / $base_p99:.2f}x')")"
done
python3 - "$work/consume.json" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("cold consumer: %d of %d messages in %.1f s = %.0f msg/s, %.1f MB/s of bodies (%d errors)"
      % (r["received"], r["requested"], r["seconds"], r["msg_per_s"], r["mb_per_s"], r["errors"]))
EOF
