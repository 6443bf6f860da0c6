#!/bin/bash
# Failover with other Raft timers: starts a name server and a three-node group (the same keys
# as `rocketraft bench failover`'s own cluster, plus the heartbeat and election timeout given
# here), runs `rocketraft bench failover` attached to it, then counts leader elections during
# a load run with no fault (spurious elections), and stops every process it started, by PID.
#
#   bench/failover-timeouts.sh DIR HEARTBEAT_MS ELECTION_MIN_MS ELECTION_MAX_MS [LOAD_SECONDS]
#
# DIR is wiped first; put it on a filesystem with room for the load (about 120 MB/s of
# CommitLog on the development VM). ROCKETRAFT_BIN overrides target/release/rocketraft.
# RETENTION_SECONDS=N keeps only the last N seconds of CommitLog (`fileReservedTimeSeconds`,
# `deleteWhen=*`), so a long load run fits on the disk.
set -euo pipefail
DIR=$1; HB=$2; MIN=$3; MAX=$4; LOAD_SECONDS=${5:-60}
BIN=${ROCKETRAFT_BIN:-target/release/rocketraft}
NS=127.0.0.1:19976
PEERS="n0-127.0.0.1:41911;n1-127.0.0.1:41912;n2-127.0.0.1:41913"
rm -rf "$DIR"; mkdir -p "$DIR"
export TOKIO_WORKER_THREADS=1
(umask 077; head -c 32 /dev/urandom | base64 > "$DIR/cluster.secret")
"$BIN" namesrv --listen $NS --scan-interval-ms 1000 --cluster-secret-file "$DIR/cluster.secret" > "$DIR/namesrv.log" 2>&1 &
NS_PID=$!
PIDS=""
for i in 0 1 2; do
  cat > "$DIR/broker-a-n$i.conf" <<CONF
brokerClusterName=ChaosCluster
brokerName=broker-a
dLegerGroup=broker-a
brokerIP1=127.0.0.1
listenPort=2191$i
namesrvAddr=$NS
storePathRootDir=$DIR/broker-a-n$i
enableDLegerCommitLog=true
dLegerPeers=$PEERS
clusterSecretFile=cluster.secret
dLegerSelfId=n$i
mappedFileSizeCommitLog=67108864
registerNameServerPeriod=2000
defaultTopicQueueNums=4
flushDiskType=ASYNC_FLUSH
pageCacheWindowCommitLog=1048576
dLegerHeartbeatIntervalMs=$HB
dLegerElectionTimeoutMinMs=$MIN
dLegerElectionTimeoutMaxMs=$MAX
CONF
  if [ -n "${RETENTION_SECONDS:-}" ]; then
    printf 'fileReservedTimeSeconds=%s\ndeleteWhen=*\n' "$RETENTION_SECONDS" >> "$DIR/broker-a-n$i.conf"
  fi
  RUST_LOG=info,openraft=warn "$BIN" broker -c "$DIR/broker-a-n$i.conf" >> "$DIR/broker-a-n$i.log" 2>&1 &
  PIDS="$PIDS,$!"
done
PIDS=${PIDS#,}
sleep 3
"$BIN" bench failover --attach-namesrv $NS --attach-pids "$PIDS" --kills 10 --settle-ms 1500 \
  --dir "$DIR" 2>&1 | grep -v "WARN\|INFO"
elections() { sed 's/\x1b\[[0-9;]*m//g' "$DIR"/broker-a-n*.log | grep "dledger::node: role changed" | grep -c "role=Leader" || true; }
BEFORE=$(elections)
"$BIN" bench produce -n $NS -w 256 -d "$LOAD_SECONDS" 2>&1 | grep -v "WARN\|INFO" | tail -2
echo "leader elections during ${LOAD_SECONDS} s of load with no fault: $(( $(elections) - BEFORE ))"
echo "store size at the end: $(du -sh "$DIR" | cut -f1)"
# Killed nodes were restarted by the bench with new PIDs: stop the ones running from DIR.
for pid in $(pgrep -f "$DIR/broker-a-n[0-2].conf") $NS_PID; do kill "$pid" 2>/dev/null || true; done
sleep 1
rm -rf "$DIR"
