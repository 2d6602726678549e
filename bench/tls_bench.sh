#!/bin/bash
# The cost of TLS, in the same run: one shoal node (Release, --durability
# none) and redis-server (no persistence), each on a plain port and a TLS
# port, SET and GET at -P 1 and -P 16 (redis-benchmark -c 50 -r 100000
# -d 100); then a 3-node shoal cluster without and with tls-cluster
# (redis-benchmark --cluster, cluster-aware, in TLS for the second).
# Prints ops/s and the TLS/plain ratio of each server.
set -u
BIN=${SHOAL_BIN:-build/release/src/cli/shoal}
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-200000}
D=/tmp/tlsbench
rm -rf $D; mkdir -p $D
cd $D || exit 1
openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -new -nodes -newkey rsa:2048 -keyout node.key -out node.csr -subj "/CN=node" 2>/dev/null
openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 2 2>/dev/null
cd - > /dev/null || exit 1
TLS_ARGS="--tls --cacert $D/ca.crt --cert $D/node.crt --key $D/node.key"

bench() {  # port extra-args... : "SET -P1 GET -P1 SET -P16 GET -P16" ops/s
  local port=$1; shift
  local out=""
  for p in 1 16; do
    local r
    r=$(redis-benchmark -p "$port" "$@" -c 50 -P $p -n "$N" -r 100000 -d 100 -t set,get -q 2>&1 | tr '\r' '\n' |
        grep "requests per second" | sed -E 's/^([A-Z]+): ([0-9.]+) requests.*/\1 \2/' | tr '\n' ' ')
    out="$out P$p: $r"
  done
  echo "$out"
}

wait_ping() {  # port [args]
  local port=$1; shift
  for _ in $(seq 1 100); do redis-cli -p "$port" "$@" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  return 1
}

echo "== one node: plain vs TLS (N=$N)"
$BIN server --port 7801 --peer-port 17801 --tls-port 7802 --dir $D/shoal --durability none \
  --tls-cert-file $D/node.crt --tls-key-file $D/node.key --tls-ca-cert-file $D/ca.crt > $D/shoal.log 2>&1 &
spid=$!
redis-server --port 7811 --tls-port 7812 --save "" --appendonly no --dir $D \
  --tls-cert-file $D/node.crt --tls-key-file $D/node.key --tls-ca-cert-file $D/ca.crt > $D/redis.log 2>&1 &
rpid=$!
wait_ping 7801; wait_ping 7811
for c in $(seq 1 60); do redis-cli -p 7801 cluster info | grep -q cluster_state:ok && break; sleep 0.5; done
echo "shoal plain: $(bench 7801)"
echo "shoal TLS:   $(bench 7802 $TLS_ARGS)"
echo "redis plain: $(bench 7811)"
echo "redis TLS:   $(bench 7812 $TLS_ARGS)"
kill $spid $rpid; wait $spid $rpid 2>/dev/null

echo "== 3 nodes: plain vs tls-cluster (SET/GET -P 16, cluster-aware)"
run_cluster() {
  local mode=$1
  rm -rf $D/c; mkdir -p $D/c
  local pids="" extra=""
  for i in 1 2 3; do
    local j=""
    if [ "$mode" = tls ]; then
      extra="--tls-port 790$i --tls-cert-file $D/node.crt --tls-key-file $D/node.key --tls-ca-cert-file $D/ca.crt --tls-cluster yes"
      [ $i -gt 1 ] && j="--join 127.0.0.1:7901"
    else
      [ $i -gt 1 ] && j="--join 127.0.0.1:7701"
    fi
    $BIN server --port 770$i --peer-port 1770$i --dir $D/c/n$i --durability none $j $extra > $D/c/n$i.log 2>&1 &
    pids="$pids $!"; sleep 1
  done
  for t in $(seq 1 60); do
    local ok=0
    for p in 7701 7702 7703; do
      local info
      info=$(redis-cli -p $p cluster info 2>/dev/null)
      echo "$info" | grep -q "cluster_state:ok" &&
        [ "$(echo "$info" | grep shoal_shards: | tr -d '\r' | cut -d: -f2)" = "$(echo "$info" | grep shoal_shards_replicated: | tr -d '\r' | cut -d: -f2)" ] &&
        ok=$((ok+1))
    done
    [ $ok = 3 ] && break; sleep 1
  done
  sleep 3
  # ops/s from the nodes' command counters, read on their plain ports
  # (bench/measured_rate.py), not redis-benchmark's own cluster-mode figure,
  # which its 250 ms timer rounds.
  local r="" t
  for t in set get; do
    local target=(-p 7701)
    [ "$mode" = tls ] && target=(-p 7901 $TLS_ARGS)
    r="$r ${t^^} $(python3 "$HERE/measured_rate.py" --requests "$N" --node 127.0.0.1:7701 --node 127.0.0.1:7702 \
      --node 127.0.0.1:7703 -- redis-benchmark --cluster "${target[@]}" -c 50 -P 16 -n "$N" -r 100000 -d 100 -t $t -q \
      2>&1 | awk '/^measured_rate/ {print $2}')"
  done
  echo "$mode:$r"
  kill $pids; wait $pids 2>/dev/null
}
for round in 1 2; do run_cluster plain; run_cluster tls; done
