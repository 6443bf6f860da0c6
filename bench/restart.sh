#!/usr/bin/env bash
# Restart of a node holding a large CommitLog, to serving (issue 18's "restart of a node
# holding 1 GiB of log: goal under 3 s").
#
#   bench/restart.sh [-d SECONDS] BIN
#
# Starts a name server and the three-node group of conf/ (ports 9876, 10911/10921/10931,
# 40911-40913; stores under /tmp/rocketraft, removed first and at the end) from BIN, fills
# it with `BIN bench produce -w 256 -d SECONDS` (1 KiB messages; 25 s gives about 1 GiB on
# the development VM), then SIGKILLs a follower and starts it again three ways, printing the
# time from spawn to "registered with name server" (the node's store is open, recovered and
# it is routed again): right after the load, with the page cache warm and idle, and with
# the page cache dropped (needs root; skipped otherwise). Stops every process it started,
# by PID. KEEP_LOGS=1 keeps the nodes' logs (the path is printed).
set -euo pipefail

seconds=25
while getopts "d:" opt; do
    case $opt in
        d) seconds=$OPTARG ;;
        *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { sed -n '2,14p' "$0"; exit 2; }
bin=$(realpath "$1")
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
pids=()
# conf/'s files read conf/cluster.secret: made for this run when absent, and removed after.
made_secret=""
if [ ! -e conf/cluster.secret ]; then
    (umask 077; head -c 32 /dev/urandom | base64 >conf/cluster.secret)
    made_secret=1
fi
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "$made_secret" ] && rm -f conf/cluster.secret
    rm -rf /tmp/rocketraft
    if [ -n "${KEEP_LOGS:-}" ]; then echo "logs kept in $logs"; else rm -rf "$logs"; fi
}
trap cleanup EXIT
rm -rf /tmp/rocketraft

"$bin" namesrv -c conf/namesrv.conf >"$logs/namesrv.log" 2>&1 &
pids+=($!)
declare -A node_pid
for i in 0 1 2; do
    "$bin" broker -c "conf/broker-n$i.conf" >"$logs/n$i.log" 2>&1 &
    node_pid[$i]=$!
    pids+=($!)
done
sleep 6
"$bin" bench produce -w 256 -d "$seconds" 2>&1 | grep -E '^produce:'
sleep 2
leader=$("$bin" admin cluster-list | sed -n 's/.*"0": "\([0-9.:]*\)".*/\1/p' | head -1)
follower=""
for i in 0 1 2; do
    port=$(grep '^listenPort' "conf/broker-n$i.conf" | cut -d= -f2)
    if [ "127.0.0.1:$port" != "$leader" ]; then follower=$i; break; fi
done
store=$(grep '^storePathRootDir' "conf/broker-n$follower.conf" | cut -d= -f2)
echo "follower n$follower: CommitLog $(du -sh --apparent-size "$store/commitlog" | cut -f1) (segment files), leader $leader"

# Starts the follower again; prints seconds from spawn to its registration.
restart() {
    local what=$1 log="$logs/restart-$1.log"
    kill -9 "${node_pid[$follower]}" 2>/dev/null || true
    wait "${node_pid[$follower]}" 2>/dev/null || true
    [ "$what" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" broker -c "conf/broker-n$follower.conf" >"$log" 2>&1 &
    node_pid[$follower]=$!
    pids+=($!)
    for _ in $(seq 1 1200); do
        grep -q "registered with name server" "$log" && break
        sleep 0.02
    done
    t1=$(date +%s.%N)
    printf '%-28s %.2f s\n' "restart ($what):" "$(echo "$t1 - $t0" | bc)"
}
restart after-load
sleep 3
restart warm
if [ -w /proc/sys/vm/drop_caches ]; then
    sleep 3
    restart cold
else
    echo "restart (cold): skipped (dropping the page cache needs root)"
fi
