#!/bin/bash
# A follower on a slow disk against openraft's bound on append-entries (one heartbeat):
# starts a name server and a three-node group, SYNC_FLUSH (a follower answers append-entries
# only after its msync), where n2's every CommitLog msync first waits DELAY_MS
# (`testCommitLogFlushDelayMs`, a test key) and n0 is the preferred leader. Runs
# `rocketraft bench produce` for SECONDS with all three up, then SIGKILLs the healthy
# follower n1 and runs it again, so every commit needs the slow n2; prints both runs and the
# leader elections during each, and stops every process it started, by PID.
#
#   bench/slow-follower.sh DIR DELAY_MS [SECONDS] [IN_FLIGHT]
#
# DIR is wiped first and removed at the end (kept with KEEP=1). ROCKETRAFT_BIN overrides
# target/release/rocketraft.
set -euo pipefail
DIR=$1; DELAY=$2; SECONDS_EACH=${3:-15}; IN_FLIGHT=${4:-64}
BIN=${ROCKETRAFT_BIN:-target/release/rocketraft}
NS=127.0.0.1:19986
PEERS="n0-127.0.0.1:41921;n1-127.0.0.1:41922;n2-127.0.0.1:41923"
rm -rf "$DIR"; mkdir -p "$DIR"
export TOKIO_WORKER_THREADS=1
(umask 077; head -c 32 /dev/urandom | base64 > "$DIR/cluster.secret")
"$BIN" namesrv --listen $NS --scan-interval-ms 1000 --cluster-secret-file "$DIR/cluster.secret" > "$DIR/namesrv.log" 2>&1 &
NS_PID=$!
declare -a PID
for i in 0 1 2; do
  cat > "$DIR/n$i.conf" <<CONF
brokerClusterName=SlowCluster
brokerName=broker-a
dLegerGroup=broker-a
brokerIP1=127.0.0.1
listenPort=2192$i
namesrvAddr=$NS
storePathRootDir=$DIR/n$i
enableDLegerCommitLog=true
dLegerPeers=$PEERS
clusterSecretFile=cluster.secret
dLegerSelfId=n$i
preferredLeaderId=n0
mappedFileSizeCommitLog=67108864
registerNameServerPeriod=2000
defaultTopicQueueNums=4
flushDiskType=SYNC_FLUSH
fileReservedTimeSeconds=30
deleteWhen=*
CONF
  if [ "$i" = 2 ]; then echo "testCommitLogFlushDelayMs=$DELAY" >> "$DIR/n$i.conf"; fi
  RUST_LOG=info,openraft=warn "$BIN" broker -c "$DIR/n$i.conf" >> "$DIR/n$i.log" 2>&1 &
  PID[$i]=$!
done
cleanup() {
  for pid in "${PID[@]}" $NS_PID; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  if [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT
sleep 6
elections() { sed 's/\x1b\[[0-9;]*m//g' "$DIR"/n*.log | grep "dledger::node: role changed" | grep -c "role=Leader" || true; }
leader() { sed 's/\x1b\[[0-9;]*m//g' "$DIR"/n0.log | grep "dledger::node: role changed" | tail -1 | grep -q "role=Leader"; }
leader || { echo "n0 does not lead; see $DIR/n*.log"; exit 1; }
produce() { "$BIN" bench produce -n $NS -w "$IN_FLIGHT" -d "$SECONDS_EACH" 2>&1 | grep -v "WARN\|INFO" | tail -2; }
echo "== n2's msyncs wait $DELAY ms; all three up (commits need n0 and n1 or n2)"
BEFORE=$(elections); produce; echo "leader elections: $(( $(elections) - BEFORE ))"
kill -9 "${PID[1]}"; sleep 1
echo "== n1 killed: every commit needs the slow n2"
BEFORE=$(elections); produce; echo "leader elections: $(( $(elections) - BEFORE ))"
echo "append-entries to n2 that timed out: $(sed 's/\x1b\[[0-9;]*m//g' "$DIR"/n0.log | grep -c -E 'timed out|[Tt]imeout after' || true)"
