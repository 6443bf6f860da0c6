# Sourced by the bench scripts that run their own `rocketraft dev` (queue-sweep.sh,
# backlog.sh): not a command.
#
#   start_dev BIN DATA_DIR LOG FLUSH [DEV_ARGS...]
#                                      starts `BIN dev` (conf/'s ports, metrics off, any
#                                      further `dev` arguments) in the background, sets
#                                      dev_pid, and waits up to 60 s for "ready for
#                                      clients" (else prints LOG and exits 1)
#   stop_dev                           SIGINT to that process, by PID, and waits for it

dev_pid=""

start_dev() {
    local bin=$1 dir=$2 log=$3 flush=$4
    shift 4
    "$bin" dev --clean --data-dir "$dir" --metrics-port 0 --flush-disk-type "$flush" "$@" \
        >"$log" 2>&1 &
    dev_pid=$!
    for _ in $(seq 1 600); do
        grep -qs "ready for clients" "$log" && return 0
        sleep 0.1
    done
    cat "$log"
    exit 1
}

stop_dev() {
    if [ -n "$dev_pid" ]; then
        kill -INT "$dev_pid" 2>/dev/null || true
        wait "$dev_pid" 2>/dev/null || true
        dev_pid=""
    fi
}
