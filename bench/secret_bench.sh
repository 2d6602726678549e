#!/bin/bash
# SET/GET through a 3-node cluster (Release), without and with the cluster secret.
BIN=${SHOAL_BIN:-build/release/src/cli/shoal}
HERE=$(cd "$(dirname "$0")" && pwd)
openssl rand -hex 32 > /tmp/secbench.secret; chmod 600 /tmp/secbench.secret
run() {
  mode=$1; rm -rf /tmp/secbench; mkdir -p /tmp/secbench
  extra=""; [ "$mode" = secret ] && extra="--cluster-secret-file /tmp/secbench.secret"
  pids=""
  for i in 1 2 3; do
    j=""; [ $i -gt 1 ] && j="--join 127.0.0.1:7701"
    $BIN server --port 770$i --peer-port 1770$i --dir /tmp/secbench/n$i --durability none $j $extra > /tmp/secbench/n$i.log 2>&1 &
    pids="$pids $!"; sleep 1
  done
  for t in $(seq 1 60); do
    ok=0; for p in 7701 7702 7703; do i=$(redis-cli -p $p cluster info 2>/dev/null); echo "$i" | grep -q "cluster_state:ok" && [ "$(echo "$i" | grep shoal_shards: | tr -d '\r' | cut -d: -f2)" = "$(echo "$i" | grep shoal_shards_replicated: | tr -d '\r' | cut -d: -f2)" ] && ok=$((ok+1)); done
    [ $ok = 3 ] && break; sleep 1
  done
  sleep 3
  echo "== $mode (ready after ${t}s)"
  # ops/s from the nodes' command counters (bench/measured_rate.py), not
  # redis-benchmark's own cluster-mode figure, which its 250 ms timer rounds.
  for t in set get; do
    echo "${t^^}: $(python3 "$HERE/measured_rate.py" --requests 400000 --node 127.0.0.1:7701 --node 127.0.0.1:7702 \
      --node 127.0.0.1:7703 -- redis-benchmark --cluster -p 7701 -c 50 -P 16 -n 400000 -r 100000 -d 100 -t $t -q \
      2>&1 | awk '/^measured_rate/ {print $2}') requests per second"
  done
  redis-cli -p 7701 info raft | grep -E "cluster_secret|peer_connections_refused" | tr -d '\r'
  kill $pids; wait $pids 2>/dev/null
}
for round in 1 2; do run none; run secret; done
