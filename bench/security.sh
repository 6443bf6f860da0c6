#!/usr/bin/env bash
# The cost of RocketMQ's ACL and of TLS on the send path, as ratios to a plain run, in one
# sitting (issue 19). For each round it starts `rocketraft dev` three times, in turn:
#   plain  as shipped (cluster secret on, ACL off, TLS disabled);
#   acl    aclEnable=true, a non-admin account allowed to publish; the bench signs;
#   tls    tls.server.mode=enforcing on the name server and the brokers, brokers reach the
#          name server over TLS; the bench connects with --tls;
# and runs `rocketraft bench produce` (1 KiB, 256 in flight) against each. It prints a line
# per run and the mean msg/s of each mode with its ratio to plain.
#
#   bench/security.sh [-r ROUNDS] [-d SECONDS] [-f ASYNC_FLUSH|SYNC_FLUSH] [BIN]
#
# Needs openssl (for a throw-away certificate). Everything goes to a temporary directory,
# removed at the end; every process it starts is stopped by PID.
set -euo pipefail

rounds=3 seconds=10 flush=ASYNC_FLUSH
while getopts "r:d:f:" opt; do
    case $opt in
        r) rounds=$OPTARG ;;
        d) seconds=$OPTARG ;;
        f) flush=$OPTARG ;;
        *) echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-f FLUSH] [BIN]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
bin=${1:-target/release/rocketraft}
work=$(mktemp -d /tmp/rr-security.XXXXXX)
dev_pid=""
cleanup() {
    if [ -n "$dev_pid" ]; then kill "$dev_pid" 2>/dev/null || true; wait "$dev_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$work/server.key" -out "$work/server.pem" 2> /dev/null
cat > "$work/plain_acl.yml" <<'ACL'
accounts:
  - accessKey: benchwriter
    secretKey: bench-writer-secret
    defaultTopicPerm: PUB|SUB
    defaultGroupPerm: PUB|SUB
ACL

tls_keys=(tls.server.mode=enforcing "tls.server.certPath=$work/server.pem" "tls.server.keyPath=$work/server.key")

# Starts `rocketraft dev` for a mode; sets the bench's extra arguments in `client_args`.
start_mode() {
    local mode=$1
    local -a extra=()
    client_args=()
    case $mode in
        plain) ;;
        acl)
            extra=(--broker-conf aclEnable=true --broker-conf "aclFile=$work/plain_acl.yml")
            client_args=(--access-key benchwriter)
            export ROCKETRAFT_SECRET_KEY=bench-writer-secret
            ;;
        tls)
            for k in "${tls_keys[@]}"; do extra+=(--broker-conf "$k" --namesrv-conf "$k"); done
            extra+=(--broker-conf tls.enable=true)
            client_args=(--tls)
            ;;
    esac
    TOKIO_WORKER_THREADS=1 "$bin" dev --clean --data-dir "$work/dev" --flush-disk-type "$flush" \
        "${extra[@]}" > "$work/dev-$mode.log" 2>&1 &
    dev_pid=$!
    for _ in $(seq 1 30); do
        if timeout 10 "$bin" bench produce -t Warmup -c 1 -w 1 -d 5 --json "${client_args[@]}" > /dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    echo "$mode: the group never became ready (log: $work/dev-$mode.log)" >&2
    tail -20 "$work/dev-$mode.log" >&2
    exit 1
}

stop_mode() {
    kill "$dev_pid"
    wait "$dev_pid" 2>/dev/null || true
    dev_pid=""
    unset ROCKETRAFT_SECRET_KEY
}

declare -A total=([plain]=0 [acl]=0 [tls]=0)
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds ($flush, 256 in flight, 1 KiB, ${seconds}s)"
    for mode in plain acl tls; do
        start_mode "$mode"
        "$bin" bench produce -w 256 -s 1024 -d 3 -t Warm "${client_args[@]}" > /dev/null 2>&1
        # awk reads to the end: `grep -m1` closed the pipe after the first match, and the
        # bench's next line then failed with EPIPE (exit 101, which ended the script).
        line=$("$bin" bench produce -w 256 -s 1024 -d "$seconds" -t Bench "${client_args[@]}" 2> /dev/null \
            | awk '/^produce:/ && !seen { print; seen = 1 }')
        stop_mode
        rate=$(echo "$line" | grep -o '[0-9]* msg/s' | head -1 | grep -o '[0-9]*')
        total[$mode]=$(( ${total[$mode]} + rate ))
        echo "$mode: $line"
    done
done
plain=$(( ${total[plain]} / rounds ))
for mode in plain acl tls; do
    mean=$(( ${total[$mode]} / rounds ))
    awk -v m="$mode" -v x="$mean" -v p="$plain" 'BEGIN { printf "%-6s mean %d msg/s, %.2fx plain\n", m, x, x / p }'
done
